// pread (buffered, through the page cache) and odirect (O_DIRECT: aligned, bypasses the cache).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "io/io_backend.h"

namespace flea::io {
namespace {

class PosixBackend final : public IoBackend {
 public:
  PosixBackend(bool want_direct, uint64_t block_bytes)
      : want_direct_(want_direct), block_bytes_(block_bytes) {}
  ~PosixBackend() override {
    if (fd_ >= 0) close(fd_);
  }
  std::string name() const override { return want_direct_ ? "odirect" : "pread"; }
  bool direct() const override { return direct_; }

  Status open(const std::string& path) override {
    path_ = path;
    int flags = O_RDONLY | O_CLOEXEC;
    if (want_direct_) flags |= O_DIRECT;
    fd_ = ::open(path.c_str(), flags);
    if (fd_ < 0 && want_direct_ && errno == EINVAL) {
      // tmpfs and some FUSE filesystems refuse O_DIRECT: keep working, buffered, and say so.
      add_warning("odirect: the filesystem of '" + path + "' refuses O_DIRECT; falling back to buffered reads");
      fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    } else if (fd_ >= 0 && want_direct_) {
      direct_ = true;
    }
    if (fd_ < 0) return not_found("cannot open '" + path + "': " + std::strerror(errno));
    FLEA_ASSIGN_OR_RETURN(opened_, stat_fd(fd_));
    if (!direct_) posix_fadvise(fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
    return ok_status();
  }

  AttemptResult read_once(uint64_t offset, uint64_t length, uint8_t* dst) override {
    // odirect reads in block_bytes chunks so its request size matches what fio is given; a
    // shorter return is continued by the caller's loop like any short read.
    uint64_t n = length;
    if (direct_ && block_bytes_ > 0) n = std::min(n, block_bytes_);
    n = std::min<uint64_t>(n, 1ull << 30);  // Linux caps one read at ~2 GiB anyway
    ssize_t r = ::pread(fd_, dst, n, static_cast<off_t>(offset));
    if (r < 0) return {0, errno};
    return {r, 0};
  }

 private:
  bool want_direct_;
  bool direct_ = false;
  uint64_t block_bytes_;
};

}  // namespace

std::unique_ptr<IoBackend> make_pread_backend() { return std::make_unique<PosixBackend>(false, 0); }
std::unique_ptr<IoBackend> make_odirect_backend(const IoBackendOptions& opts) {
  return std::make_unique<PosixBackend>(true, opts.block_bytes);
}

}  // namespace flea::io
