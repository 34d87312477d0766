// Page-aligned host buffers for staging reads (O_DIRECT needs the alignment). The allocator is a
// hook so the CUDA backend can substitute pinned memory (cudaHostAlloc) without touching the
// streamer.
//
// Large buffers can ask for transparent huge pages: O_DIRECT and io_uring pin the destination
// pages of every request (get_user_pages), and on a 4 KiB-page buffer that is 256 pages per MiB.
// Measured on the development VM: 1 MiB O_DIRECT reads into a 360 MiB ring ran at 1.1-1.7 GB/s
// with 4 KiB pages and 2.9-3.5 GB/s with THP (see README, "Huge pages").
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>

namespace flea::io {

struct HostAllocator {
  // Returns memory aligned to at least `alignment`, or nullptr.
  std::function<void*(size_t bytes, size_t alignment)> allocate;
  std::function<void(void*, size_t bytes)> free;
  const char* name = "aligned";
};

// posix_memalign / free.
const HostAllocator& default_host_allocator();
// The allocator new staging buffers use; defaults to default_host_allocator(). Not thread-safe:
// set it once at start-up, before any provider exists.
const HostAllocator& host_allocator();
void set_host_allocator(const HostAllocator& a);

constexpr size_t kHugePageBytes = size_t{2} << 20;  // x86-64 / arm64 PMD-sized THP

// /sys/kernel/mm/transparent_hugepage/enabled's selected mode: "always", "madvise", "never", or
// "unavailable" when the file is missing (no THP in this kernel).
std::string thp_mode();
// AnonHugePages of this process (/proc/self/smaps_rollup), in bytes: how much anonymous memory the
// kernel actually backs with huge pages right now; 0 when unknown.
uint64_t process_anon_huge_bytes();

class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  // FLEA_CHECKs that allocation succeeded; use try_allocate for budget-driven sizes.
  explicit AlignedBuffer(size_t bytes, size_t alignment = 4096);
  // huge_pages: a buffer of at least kHugePageBytes is aligned to kHugePageBytes and, when
  // thp_mode() is "always" or "madvise", advised MADV_HUGEPAGE (smaller ones are unaffected);
  // huge_advised() says whether that advice was given and accepted. The kernel may still back it
  // with 4 KiB pages when no huge page is free (process_anon_huge_bytes() tells).
  static bool try_allocate(size_t bytes, AlignedBuffer* out, size_t alignment = 4096, bool huge_pages = false);
  ~AlignedBuffer() { reset(); }
  AlignedBuffer(AlignedBuffer&& o) noexcept { *this = std::move(o); }
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool huge_advised() const { return huge_advised_; }
  // Faults every page in now (one write per 4 KiB), so the first read into the buffer does not
  // pay for page faults, zeroing and, with huge pages, compaction (measured: ~5 ms per 2 MiB page
  // on the development VM with a full page cache) inside a timed window.
  void prefault();
  void reset();

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool huge_advised_ = false;
  std::function<void(void*, size_t)> free_;  // from the allocator that made data_
};

}  // namespace flea::io
