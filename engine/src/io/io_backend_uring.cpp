// io_uring: one layer request is split into block_bytes chunks kept queue_depth deep in flight on
// one ring (like fio --ioengine=io_uring --iodepth=N --bs=B). O_DIRECT by default; staging buffers
// registered as fixed buffers when the kernel and RLIMIT_MEMLOCK allow it. Rings are pooled so
// several I/O threads can read at once without sharing a submission queue.
#include <fcntl.h>
#include <liburing.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "io/io_backend.h"

namespace flea::io {
namespace {

constexpr int kMaxRetriesPerChunk = 1000;

struct Ring {
  io_uring ring;
  int registered_generation = -1;  // buffers_generation_ when registration last succeeded
  bool fixed = false;
  std::vector<std::pair<uint8_t*, uint64_t>> registered;  // index = fixed-buffer index
};

class UringBackend final : public IoBackend {
 public:
  explicit UringBackend(const IoBackendOptions& o)
      : want_direct_(o.direct), queue_depth_(std::max(1, o.queue_depth)),
        block_bytes_(o.block_bytes == 0 ? (1u << 20) : std::max<uint64_t>(align_up(o.block_bytes), kIoAlignment)) {}
  ~UringBackend() override {
    for (auto& r : rings_) io_uring_queue_exit(&r->ring);
    if (fd_ >= 0) close(fd_);
  }
  std::string name() const override { return "io_uring"; }
  bool direct() const override { return direct_; }

  Status open(const std::string& path) override {
    path_ = path;
    int flags = O_RDONLY | O_CLOEXEC | (want_direct_ ? O_DIRECT : 0);
    fd_ = ::open(path.c_str(), flags);
    if (fd_ < 0 && want_direct_ && errno == EINVAL) {
      add_warning("io_uring: the filesystem of '" + path + "' refuses O_DIRECT; using buffered reads");
      fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    } else if (fd_ >= 0) {
      direct_ = want_direct_;
    }
    if (fd_ < 0) return not_found("cannot open '" + path + "': " + std::strerror(errno));
    FLEA_ASSIGN_OR_RETURN(opened_, stat_fd(fd_));
    return ok_status();
  }

  void register_buffers(const std::vector<std::pair<uint8_t*, uint64_t>>& buffers) override {
    std::lock_guard<std::mutex> lock(mu_);
    buffers_ = buffers;
    ++buffers_generation_;
  }

  StatusOr<uint64_t> read(const ReadRequest& req) override {
    Ring* r = nullptr;
    FLEA_ASSIGN_OR_RETURN(r, take_ring());
    StatusOr<uint64_t> result = read_on(r, req);
    give_ring(r);
    return result;
  }

  AttemptResult read_once(uint64_t offset, uint64_t length, uint8_t* dst) override {
    StatusOr<Ring*> r = take_ring();
    if (!r.ok()) return {0, EIO};
    io_uring_sqe* sqe = io_uring_get_sqe(&(*r)->ring);
    io_uring_prep_read(sqe, fd_, dst, static_cast<unsigned>(std::min(length, block_bytes_)), offset);
    io_uring_submit(&(*r)->ring);
    io_uring_cqe* cqe = nullptr;
    int rc;
    do {
      rc = io_uring_wait_cqe(&(*r)->ring, &cqe);
    } while (rc == -EINTR);
    AttemptResult out;
    if (rc < 0) {
      out.err = -rc;
    } else {
      if (cqe->res < 0) out.err = -cqe->res;
      else out.n = cqe->res;
      io_uring_cqe_seen(&(*r)->ring, cqe);
    }
    give_ring(*r);
    return out;
  }

 private:
  struct Chunk {
    uint64_t offset;
    uint64_t length;
    uint8_t* dst;
    int retries = 0;
  };

  StatusOr<Ring*> take_ring() {
    std::unique_lock<std::mutex> lock(mu_);
    Ring* r = nullptr;
    if (!free_.empty()) {
      r = free_.back();
      free_.pop_back();
    } else {
      auto owned = std::make_unique<Ring>();
      const int rc = io_uring_queue_init(static_cast<unsigned>(queue_depth_), &owned->ring, 0);
      if (rc < 0) return io_error("io_uring_queue_init(" + std::to_string(queue_depth_) + ") failed: " + std::strerror(-rc));
      r = owned.get();
      rings_.push_back(std::move(owned));
    }
    if (r->registered_generation != buffers_generation_ && !buffers_.empty() && !fixed_refused_) {
      if (r->fixed) io_uring_unregister_buffers(&r->ring);
      std::vector<iovec> iov;
      for (auto& b : buffers_) iov.push_back({b.first, static_cast<size_t>(b.second)});
      const int rc = io_uring_register_buffers(&r->ring, iov.data(), static_cast<unsigned>(iov.size()));
      r->fixed = rc == 0;
      r->registered = rc == 0 ? buffers_ : std::vector<std::pair<uint8_t*, uint64_t>>{};
      r->registered_generation = buffers_generation_;
      if (rc != 0) {
        fixed_refused_ = true;
        lock.unlock();
        add_warning(std::string("io_uring: registering staging buffers failed (") + std::strerror(-rc) +
                    "); using unregistered buffers");
        lock.lock();
      }
    }
    return r;
  }

  void give_ring(Ring* r) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(r);
  }

  int fixed_index(const Ring* r, const uint8_t* dst, uint64_t len) const {
    if (!r->fixed) return -1;
    for (size_t i = 0; i < r->registered.size(); ++i) {
      const auto& b = r->registered[i];
      if (dst >= b.first && dst + len <= b.first + b.second) return static_cast<int>(i);
    }
    return -1;
  }

  void prep(Ring* r, const Chunk& c, size_t index) {
    io_uring_sqe* sqe = io_uring_get_sqe(&r->ring);
    const int fi = fixed_index(r, c.dst, c.length);
    if (fi >= 0) {
      io_uring_prep_read_fixed(sqe, fd_, c.dst, static_cast<unsigned>(c.length), c.offset, fi);
    } else {
      io_uring_prep_read(sqe, fd_, c.dst, static_cast<unsigned>(c.length), c.offset);
    }
    io_uring_sqe_set_data64(sqe, index);
  }

  StatusOr<uint64_t> read_on(Ring* r, const ReadRequest& req) {
    std::vector<Chunk> chunks;
    for (uint64_t p = 0; p < req.length; p += block_bytes_)
      chunks.push_back({req.offset + p, std::min(block_bytes_, req.length - p), req.dst + p});
    uint64_t eof_at = UINT64_MAX;
    size_t next = 0, in_flight = 0;
    Status error = ok_status();
    while (next < chunks.size() || in_flight > 0) {
      // Keep queue_depth reads outstanding; stop issuing new ones after an error or EOF.
      while (in_flight < static_cast<size_t>(queue_depth_) && next < chunks.size() && error.ok() &&
             chunks[next].offset < eof_at) {
        prep(r, chunks[next], next);
        ++next;
        ++in_flight;
      }
      int rc = io_uring_submit(&r->ring);
      if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY)
        return io_error(describe(req, std::string("io_uring_submit: ") + std::strerror(-rc)));
      if (in_flight == 0) break;
      io_uring_cqe* cqe = nullptr;
      rc = io_uring_wait_cqe(&r->ring, &cqe);
      if (rc == -EINTR) continue;
      if (rc < 0) return io_error(describe(req, std::string("io_uring_wait_cqe: ") + std::strerror(-rc)));
      const size_t i = static_cast<size_t>(io_uring_cqe_get_data64(cqe));
      const int res = cqe->res;
      io_uring_cqe_seen(&r->ring, cqe);
      --in_flight;
      Chunk& c = chunks[i];
      if (res == -EINTR || res == -EAGAIN) {
        if (++c.retries > kMaxRetriesPerChunk) {
          error = io_error(describe(req, "EINTR/EAGAIN persisted at file offset " + std::to_string(c.offset)));
        } else if (error.ok()) {
          prep(r, c, i);
          ++in_flight;
        }
        continue;
      }
      if (res < 0) {
        if (error.ok())
          error = io_error(describe(req, std::string(std::strerror(-res)) + " (errno " + std::to_string(-res) +
                                             ") at file offset " + std::to_string(c.offset)));
        continue;
      }
      uint64_t got = static_cast<uint64_t>(res);
      if (got == 0) {
        eof_at = std::min(eof_at, c.offset);
        continue;
      }
      if (got < c.length) {
        if (direct_ && got % kIoAlignment != 0) {
          if (c.offset + got >= opened_.size) {  // EOF inside this chunk
            eof_at = std::min(eof_at, c.offset + got);
            continue;
          }
          got = align_down(got);
        }
        c.offset += got;
        c.dst += got;
        c.length -= got;
        if (++c.retries > kMaxRetriesPerChunk) {
          error = io_error(describe(req, "short reads make no progress at file offset " + std::to_string(c.offset)));
        } else if (error.ok()) {
          prep(r, c, i);
          ++in_flight;
        }
      }
    }
    if (!error.ok()) return error;
    return eof_at == UINT64_MAX ? req.length : std::min(req.length, eof_at - req.offset);
  }

  bool want_direct_;
  bool direct_ = false;
  int queue_depth_;
  uint64_t block_bytes_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Ring>> rings_;
  std::vector<Ring*> free_;
  std::vector<std::pair<uint8_t*, uint64_t>> buffers_;
  int buffers_generation_ = 0;
  bool fixed_refused_ = false;
};

}  // namespace

bool io_uring_probe() {
  static const bool ok = [] {
    io_uring ring;
    if (io_uring_queue_init(2, &ring, 0) != 0) return false;
    io_uring_queue_exit(&ring);
    return true;
  }();
  return ok;
}

std::unique_ptr<IoBackend> make_io_uring_backend(const IoBackendOptions& opts) {
  return std::make_unique<UringBackend>(opts);
}

}  // namespace flea::io
