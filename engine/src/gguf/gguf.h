// GGUF v2/v3 header reader: metadata key/values and the tensor table, fully validated, without
// reading tensor data. Every count, length and offset is checked against the file size before it is
// used; errors name the field, the value, what was allowed and the byte offset.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "flea/status.h"
#include "quant/types.h"

namespace flea::gguf {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint64_t kMaxStringBytes = 1u << 24;     // 16 MiB: no sane key or value is longer
constexpr uint64_t kMaxTensorNameBytes = 64;       // GGML_MAX_NAME
constexpr uint32_t kMaxDims = 4;

enum class ValueType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* value_type_name(ValueType t);
// Bytes of a fixed-size scalar type, 0 for STRING/ARRAY/unknown.
size_t value_type_size(ValueType t);

// One metadata value. Scalars use the first matching member; arrays keep their elements decoded
// (numbers widened to int64/uint64/double, strings as std::string).
struct Value {
  ValueType type = ValueType::UINT8;
  ValueType array_type = ValueType::UINT8;  // element type when type == ARRAY
  int64_t i = 0;         // signed integers and BOOL
  uint64_t u = 0;        // unsigned integers
  double f = 0.0;        // FLOAT32/FLOAT64
  std::string s;         // STRING
  std::vector<int64_t> arr_int;      // integer and bool arrays (UINT64 stored bit-cast)
  std::vector<double> arr_float;     // FLOAT32/FLOAT64 arrays
  std::vector<std::string> arr_str;  // STRING arrays
  uint64_t array_size() const;
  bool is_integer() const;
  // Integer value of any integer type; false when not an integer or out of int64 range.
  bool as_int(int64_t* out) const;
  bool as_float(double* out) const;  // integers and floats
  std::string to_display_string(size_t max_elems = 8) const;
};

struct KeyValue {
  std::string key;
  Value value;
  uint64_t file_offset;  // where the key's record starts
};

struct TensorInfo {
  std::string name;
  GgmlType type;
  uint32_t n_dims = 0;
  std::array<int64_t, kMaxDims> ne{1, 1, 1, 1};  // ne[0] is the contiguous (row) dimension
  uint64_t offset = 0;      // relative to the data section
  uint64_t file_offset = 0; // absolute: data_offset + offset
  uint64_t n_bytes = 0;
  int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  int64_t n_rows() const { return ne[1] * ne[2] * ne[3]; }
  size_t row_bytes() const { return static_cast<size_t>(n_bytes / static_cast<uint64_t>(n_rows())); }
};

struct File {
  std::string path;
  uint32_t version = 0;
  uint64_t file_size = 0;
  // Identity of the file the header was read from (read_file; 0 = unknown, e.g. read_memory):
  // streaming refuses a path that names another file, or a modified one, by the time it opens it.
  uint64_t inode = 0;
  int64_t mtime_ns = 0;
  uint64_t alignment = kDefaultAlignment;
  uint64_t data_offset = 0;  // absolute offset of the tensor data section
  std::vector<KeyValue> kv;
  std::vector<TensorInfo> tensors;

  const Value* find(const std::string& key) const;
  const TensorInfo* find_tensor(const std::string& name) const;
  // Typed accessors: NotFound when missing, InvalidArgument naming the key when the type is wrong.
  StatusOr<int64_t> get_int(const std::string& key) const;
  StatusOr<double> get_float(const std::string& key) const;
  StatusOr<std::string> get_string(const std::string& key) const;

  std::map<std::string, size_t> kv_index;      // key -> index in kv
  std::map<std::string, size_t> tensor_index;  // name -> index in tensors
};

// Reads and validates the header of `path`; never reads tensor data.
StatusOr<File> read_file(const std::string& path);
// Same, from bytes in memory (tests, fuzzing). `path` is only used in messages.
StatusOr<File> read_memory(const uint8_t* data, size_t size, const std::string& path = "<memory>");

}  // namespace flea::gguf
