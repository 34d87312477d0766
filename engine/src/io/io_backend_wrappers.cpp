// throttled(inner, GB/s): a slower disk for overlap experiments; faulty(inner, plan): injected
// short reads, EINTR, EAGAIN, EIO and truncation for tests of the retry and error paths.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <thread>

#include "io/io_backend.h"

namespace flea::io {
namespace {

class WrapperBackend : public IoBackend {
 public:
  explicit WrapperBackend(std::unique_ptr<IoBackend> inner) : inner_(std::move(inner)) {}
  Status open(const std::string& path) override {
    FLEA_RETURN_IF_ERROR(inner_->open(path));
    path_ = inner_->path();
    opened_ = inner_->opened_stat();
    fd_ = inner_->fd();  // borrowed: the inner backend closes it
    return ok_status();
  }
  AttemptResult read_once(uint64_t offset, uint64_t length, uint8_t* dst) override {
    return inner_->read_once(offset, length, dst);
  }
  StatusOr<FileStat> stat() const override { return inner_->stat(); }
  bool direct() const override { return inner_->direct(); }
  void register_buffers(const std::vector<std::pair<uint8_t*, uint64_t>>& b) override {
    inner_->register_buffers(b);
  }
  std::vector<std::string> warnings() const override {
    std::vector<std::string> w = inner_->warnings();
    for (const std::string& s : IoBackend::warnings()) w.push_back(s);
    return w;
  }

 protected:
  std::unique_ptr<IoBackend> inner_;
};

class ThrottledBackend final : public WrapperBackend {
 public:
  ThrottledBackend(std::unique_ptr<IoBackend> inner, double gb_s)
      : WrapperBackend(std::move(inner)), bytes_per_ns_(gb_s) {}  // 1 GB/s == 1 byte/ns
  std::string name() const override {
    return "throttled(" + inner_->name() + "," + std::to_string(bytes_per_ns_) + "GB/s)";
  }
  StatusOr<uint64_t> read(const ReadRequest& req) override {
    // Reserve this request's slot on a shared timeline first, so concurrent readers queue behind
    // each other like on one device, then read, then sleep until the slot ends.
    using Clock = std::chrono::steady_clock;
    Clock::time_point done;
    {
      std::lock_guard<std::mutex> lock(mu_);
      const Clock::time_point now = Clock::now();
      if (next_free_ < now) next_free_ = now;
      next_free_ += std::chrono::nanoseconds(static_cast<int64_t>(req.length / bytes_per_ns_));
      done = next_free_;
    }
    StatusOr<uint64_t> r = inner_->read(req);
    std::this_thread::sleep_until(done);
    return r;
  }

 private:
  double bytes_per_ns_;
  std::mutex mu_;
  std::chrono::steady_clock::time_point next_free_{};
};

class FaultyBackend final : public WrapperBackend {
 public:
  FaultyBackend(std::unique_ptr<IoBackend> inner, FaultPlan plan)
      : WrapperBackend(std::move(inner)), plan_(std::move(plan)) {
    for (const Fault& f : plan_.faults) remaining_.push_back(f.times);
  }
  std::string name() const override { return "faulty(" + inner_->name() + ")"; }

  AttemptResult read_once(uint64_t offset, uint64_t length, uint8_t* dst) override {
    bool short_read = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t i = 0; i < plan_.faults.size(); ++i) {
        const Fault& f = plan_.faults[i];
        if (f.kind == FaultKind::kTruncate) {
          if (f.offset >= offset && f.offset < offset + length) truncated_at_ = std::min(truncated_at_, f.offset);
          continue;
        }
        if (remaining_[i] <= 0 || f.offset < offset || f.offset >= offset + length) continue;
        --remaining_[i];
        if (f.kind == FaultKind::kEintr) return {0, EINTR};
        if (f.kind == FaultKind::kEagain) return {0, EAGAIN};
        if (f.kind == FaultKind::kEio) return {0, EIO};
        short_read = true;
      }
      if (offset >= truncated_at_) return {0, 0};  // reads past the "new" end see EOF
      length = std::min(length, truncated_at_ - offset);
    }
    AttemptResult r = inner_->read_once(offset, length, dst);
    if (short_read && r.err == 0 && r.n > 1) r.n /= 2;
    return r;
  }
  StatusOr<uint64_t> read(const ReadRequest& req) override { return IoBackend::read(req); }
  StatusOr<FileStat> stat() const override {
    FLEA_ASSIGN_OR_RETURN(FileStat s, inner_->stat());
    std::lock_guard<std::mutex> lock(mu_);
    if (truncated_at_ < s.size) {
      s.size = truncated_at_;
      s.mtime_ns += 1;  // a truncation changes mtime on a real filesystem too
    }
    return s;
  }

 private:
  FaultPlan plan_;
  mutable std::mutex mu_;
  std::vector<int> remaining_;
  uint64_t truncated_at_ = UINT64_MAX;
};

}  // namespace

std::unique_ptr<IoBackend> make_throttled_backend(std::unique_ptr<IoBackend> inner, double gb_s) {
  return std::make_unique<ThrottledBackend>(std::move(inner), gb_s);
}
std::unique_ptr<IoBackend> make_faulty_backend(std::unique_ptr<IoBackend> inner, FaultPlan plan) {
  return std::make_unique<FaultyBackend>(std::move(inner), std::move(plan));
}

}  // namespace flea::io
