// Page-aligned host buffers for staging reads (O_DIRECT needs the alignment). The allocator is a
// hook so the CUDA backend can substitute pinned memory (cudaHostAlloc) without touching the
// streamer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
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

class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  // FLEA_CHECKs that allocation succeeded; use try_allocate for budget-driven sizes.
  explicit AlignedBuffer(size_t bytes, size_t alignment = 4096);
  static bool try_allocate(size_t bytes, AlignedBuffer* out, size_t alignment = 4096);
  ~AlignedBuffer() { reset(); }
  AlignedBuffer(AlignedBuffer&& o) noexcept { *this = std::move(o); }
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  void reset();

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::function<void(void*, size_t)> free_;  // from the allocator that made data_
};

}  // namespace flea::io
