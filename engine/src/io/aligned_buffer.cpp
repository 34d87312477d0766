#include "io/aligned_buffer.h"

#include <cstdlib>
#include <string>

#include "flea/status.h"

namespace flea::io {

const HostAllocator& default_host_allocator() {
  static const HostAllocator kDefault{
      [](size_t bytes, size_t alignment) -> void* {
        void* p = nullptr;
        if (posix_memalign(&p, alignment, bytes == 0 ? alignment : bytes) != 0) return nullptr;
        return p;
      },
      [](void* p, size_t) { std::free(p); }, "aligned"};
  return kDefault;
}

namespace {
HostAllocator& current_allocator() {
  static HostAllocator a = default_host_allocator();
  return a;
}
}  // namespace

const HostAllocator& host_allocator() { return current_allocator(); }
void set_host_allocator(const HostAllocator& a) { current_allocator() = a; }

AlignedBuffer::AlignedBuffer(size_t bytes, size_t alignment) {
  FLEA_CHECK(try_allocate(bytes, this, alignment),
             "failed to allocate " + std::to_string(bytes) + " aligned bytes");
}

bool AlignedBuffer::try_allocate(size_t bytes, AlignedBuffer* out, size_t alignment) {
  out->reset();
  const HostAllocator& a = host_allocator();
  void* p = a.allocate(bytes, alignment);
  if (p == nullptr) return false;
  out->data_ = static_cast<uint8_t*>(p);
  out->size_ = bytes;
  out->free_ = a.free;
  return true;
}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& o) noexcept {
  if (this != &o) {
    reset();
    data_ = o.data_;
    size_ = o.size_;
    free_ = std::move(o.free_);
    o.data_ = nullptr;
    o.size_ = 0;
    o.free_ = nullptr;
  }
  return *this;
}

void AlignedBuffer::reset() {
  if (data_ != nullptr) free_(data_, size_);
  data_ = nullptr;
  size_ = 0;
  free_ = nullptr;
}

}  // namespace flea::io
