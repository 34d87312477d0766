// IoBackend: how layer bytes get from the model file into host memory. One interface, several
// implementations registered by name (pread, odirect, io_uring, mmap) plus two wrappers for
// experiments and tests (throttled: emulate a slower disk; faulty: inject errors per a plan).
//
// Contract: read() fills [offset, offset + length) of the file into `dst` or returns an error that
// names file, offset, length, layer and backend. Short reads are continued, EINTR/EAGAIN retried;
// a read that ends early at end-of-file returns the byte count obtained (the caller decides
// whether that is truncation). Backends are safe to call from several threads at once.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "flea/status.h"

namespace flea::io {

// O_DIRECT needs buffer address, file offset and length aligned to the logical block size; 4096
// covers every device we target and is also the page size, so one constant serves both.
constexpr uint64_t kIoAlignment = 4096;
inline uint64_t align_down(uint64_t v, uint64_t a = kIoAlignment) { return v / a * a; }
inline uint64_t align_up(uint64_t v, uint64_t a = kIoAlignment) { return (v + a - 1) / a * a; }

// What one fault does when it fires (faulty backend).
enum class FaultKind { kShortRead, kEintr, kEagain, kEio, kTruncate };
const char* fault_kind_name(FaultKind k);

struct Fault {
  FaultKind kind = FaultKind::kEio;
  // Fires on read attempts whose range [off, off+len) contains this file offset. kTruncate: from
  // the first such attempt on, the file looks `offset` bytes long (reads stop there, stat says so).
  uint64_t offset = 0;
  int times = 1;  // how many attempts it affects (kTruncate: ignored, it is permanent)
};

// Parsed from "eio@1234,short@0*3,eintr@4096*2,eagain@0,trunc@500000" (offsets in bytes).
struct FaultPlan {
  std::vector<Fault> faults;
  static StatusOr<FaultPlan> parse(const std::string& spec);
  std::string to_string() const;
};

struct IoBackendOptions {
  int queue_depth = 4;               // io_uring: reads kept in flight
  uint64_t block_bytes = 1u << 20;   // chunk size for odirect/io_uring; 0 = one request per read
  bool direct = true;                // io_uring: open with O_DIRECT (fall back when refused)
  double throttle_gb_s = 0;          // throttled wrapper
  FaultPlan faults;                  // faulty wrapper
};

// Identity of the file at open, compared before/after every layer read.
struct FileStat {
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  uint64_t inode = 0;
};

// One read attempt's outcome: n >= 0 bytes, or err = errno.
struct AttemptResult {
  ssize_t n = 0;
  int err = 0;
};

struct ReadRequest {
  uint64_t offset = 0;
  uint64_t length = 0;
  uint8_t* dst = nullptr;  // kIoAlignment-aligned for direct backends
  int layer = -1;          // for messages; -1 = global tensors
};

class IoBackend {
 public:
  virtual ~IoBackend() = default;
  virtual std::string name() const = 0;
  // Opens `path` read-only and records its size and mtime.
  virtual Status open(const std::string& path) = 0;
  // Reads the whole request (see the file comment); returns the bytes obtained.
  virtual StatusOr<uint64_t> read(const ReadRequest& req);
  // One attempt, no retries: what a single pread() would return.
  virtual AttemptResult read_once(uint64_t offset, uint64_t length, uint8_t* dst) = 0;
  // Current size/mtime of the open file.
  virtual StatusOr<FileStat> stat() const;
  // True when reads bypass the page cache and need aligned buffers/offsets/lengths.
  virtual bool direct() const { return false; }
  // mmap backend only: the whole file mapped read-only (zero-copy providers use it).
  virtual const uint8_t* mapping() const { return nullptr; }
  // Staging buffers the streamer will read into (io_uring registers them as fixed buffers).
  virtual void register_buffers(const std::vector<std::pair<uint8_t*, uint64_t>>& buffers) {}
  // Things the user should know (O_DIRECT refused, fixed buffers unavailable, ...).
  virtual std::vector<std::string> warnings() const;

  // Errors unless the file still has the size/mtime it had at open() and is at least
  // `needed_end` bytes long. Called by the streamer around every layer read.
  // The check is on the open fd, i.e. on the inode opened at open(): truncating or writing that
  // inode in place is an error (kDataLoss: "truncated"/"modified"), but a new file renamed over
  // the path (atomic replacement) is not seen at all — every backend, mmap included, keeps
  // reading the original inode, which the kernel keeps alive while we hold it, so the run stays
  // consistent with the header it parsed (tests/io_faulty_test.cpp ReplacedFileTest). A file
  // replaced or rewritten between reading the header and this open() is refused by the streamer,
  // which compares the header's inode and mtime with opened_stat() (HeaderThenOpen test).
  Status check_unchanged(uint64_t needed_end, int layer) const;
  const std::string& path() const { return path_; }
  const FileStat& opened_stat() const { return opened_; }
  int fd() const { return fd_; }

  // "read error: file 'x' offset 1 length 2 layer 3 backend odirect: <what>"
  std::string describe(const ReadRequest& req, const std::string& what) const;

 protected:
  void add_warning(const std::string& w);
  std::string path_;
  FileStat opened_;
  int fd_ = -1;  // owned by the concrete backend (closed in its destructor)

 private:
  mutable std::mutex warn_mu_;
  std::vector<std::string> warnings_;
};

StatusOr<FileStat> stat_fd(int fd);

// Registry. `name` is one of known_io_backends() or a composed spec:
//   "throttled:<inner>:<GB/s>"  e.g. throttled:pread:1.5
//   "faulty:<inner>:<plan>"     e.g. faulty:odirect:eintr@0*2,eio@65536
// Unknown names give an error that lists the known ones.
StatusOr<std::unique_ptr<IoBackend>> make_io_backend(const std::string& name,
                                                     const IoBackendOptions& opts = {});
std::vector<std::string> known_io_backends();  // pread odirect [io_uring] mmap throttled faulty
bool io_uring_available();                     // compiled in and the kernel allows it

// Individual factories (registry entries); wrappers take ownership of `inner`.
std::unique_ptr<IoBackend> make_pread_backend();
std::unique_ptr<IoBackend> make_odirect_backend(const IoBackendOptions& opts);
std::unique_ptr<IoBackend> make_mmap_backend();
#ifdef FLEA_HAVE_IO_URING
std::unique_ptr<IoBackend> make_io_uring_backend(const IoBackendOptions& opts);
bool io_uring_probe();
#endif
std::unique_ptr<IoBackend> make_throttled_backend(std::unique_ptr<IoBackend> inner, double gb_s);
std::unique_ptr<IoBackend> make_faulty_backend(std::unique_ptr<IoBackend> inner, FaultPlan plan);

// mmap backend helpers (no-ops returning OK for other backends' callers are not provided: use
// mapping() != nullptr to know the backend is mmap).
Status mmap_prefault(IoBackend* b, uint64_t offset, uint64_t length, int layer);
void mmap_advise_willneed(IoBackend* b, uint64_t offset, uint64_t length);
void mmap_advise_dontneed(IoBackend* b, uint64_t offset, uint64_t length);

}  // namespace flea::io
