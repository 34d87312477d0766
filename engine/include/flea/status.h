// Status / StatusOr<T>: the error channel for anything that can fail on input (files, flags,
// budgets, I/O). Programmer errors use FLEA_CHECK instead.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>

namespace flea {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,   // bad flag, bad scenario value
  kNotFound,          // missing file, tensor, key
  kDataLoss,          // corrupt or truncated file
  kOutOfRange,        // value outside the allowed range
  kResourceExhausted, // budget or allocation failure
  kIoError,           // read/write failed
  kUnimplemented,
  kInternal,
  kCancelled,         // SIGINT / SIGTERM
};

const char* status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok_status() { return Status(); }
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status ok_status() { return Status(); }
inline Status invalid_argument(std::string m) { return Status(StatusCode::kInvalidArgument, std::move(m)); }
inline Status not_found(std::string m) { return Status(StatusCode::kNotFound, std::move(m)); }
inline Status data_loss(std::string m) { return Status(StatusCode::kDataLoss, std::move(m)); }
inline Status out_of_range(std::string m) { return Status(StatusCode::kOutOfRange, std::move(m)); }
inline Status resource_exhausted(std::string m) { return Status(StatusCode::kResourceExhausted, std::move(m)); }
inline Status io_error(std::string m) { return Status(StatusCode::kIoError, std::move(m)); }
inline Status unimplemented(std::string m) { return Status(StatusCode::kUnimplemented, std::move(m)); }
inline Status internal_error(std::string m) { return Status(StatusCode::kInternal, std::move(m)); }
inline Status cancelled(std::string m) { return Status(StatusCode::kCancelled, std::move(m)); }

template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    if (status_.ok()) status_ = internal_error("StatusOr constructed from an OK status without a value");
  }
  StatusOr(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() { return *value_; }
  const T& operator*() const { return *value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

[[noreturn]] void check_failed(const char* file, int line, const char* expr, const std::string& msg);

}  // namespace flea

#define FLEA_CHECK(cond, msg)                                                \
  do {                                                                       \
    if (!(cond)) ::flea::check_failed(__FILE__, __LINE__, #cond, (msg));     \
  } while (0)

#define FLEA_RETURN_IF_ERROR(expr)        \
  do {                                    \
    ::flea::Status _st = (expr);          \
    if (!_st.ok()) return _st;            \
  } while (0)

#define FLEA_CONCAT_INNER(a, b) a##b
#define FLEA_CONCAT(a, b) FLEA_CONCAT_INNER(a, b)
#define FLEA_ASSIGN_OR_RETURN(lhs, expr)                                   \
  auto FLEA_CONCAT(_so_, __LINE__) = (expr);                               \
  if (!FLEA_CONCAT(_so_, __LINE__).ok()) return FLEA_CONCAT(_so_, __LINE__).status(); \
  lhs = std::move(FLEA_CONCAT(_so_, __LINE__)).value()
