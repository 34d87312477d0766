#include "io/aligned_buffer.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
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

std::string thp_mode() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string line;
  if (!f || !std::getline(f, line)) return "unavailable";
  // "always [madvise] never": the bracketed word is the mode in force.
  const size_t open = line.find('['), close = line.find(']');
  if (open == std::string::npos || close == std::string::npos || close < open) return "unavailable";
  return line.substr(open + 1, close - open - 1);
}

uint64_t process_anon_huge_bytes() {
  std::ifstream f("/proc/self/smaps_rollup");
  std::string key;
  uint64_t kb = 0;
  while (f >> key) {
    if (key == "AnonHugePages:" && (f >> kb)) return kb * 1024;
    f.ignore(1 << 12, '\n');
  }
  return 0;
}

bool AlignedBuffer::try_allocate(size_t bytes, AlignedBuffer* out, size_t alignment, bool huge_pages) {
  out->reset();
  const bool huge = huge_pages && bytes >= kHugePageBytes;
  if (huge) alignment = std::max(alignment, kHugePageBytes);
  const HostAllocator& a = host_allocator();
  void* p = a.allocate(bytes, alignment);
  if (p == nullptr) return false;
  out->data_ = static_cast<uint8_t*>(p);
  out->size_ = bytes;
  out->free_ = a.free;
  // Advice only, and only where it can take effect: with THP "never" the kernel accepts the advice
  // and ignores it, and without THP it refuses it (EINVAL); either way the buffer works on 4 KiB pages.
  static const bool kThpHonoursAdvice = [] {
    const std::string m = thp_mode();
    return m == "always" || m == "madvise";
  }();
  if (huge && kThpHonoursAdvice) out->huge_advised_ = madvise(p, (bytes + 4095) / 4096 * 4096, MADV_HUGEPAGE) == 0;
  return true;
}

void AlignedBuffer::prefault() {
  volatile uint8_t* p = data_;
  for (size_t i = 0; i < size_; i += 4096) p[i] = 0;
  if (size_ > 0) p[size_ - 1] = 0;
}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& o) noexcept {
  if (this != &o) {
    reset();
    data_ = o.data_;
    size_ = o.size_;
    huge_advised_ = o.huge_advised_;
    free_ = std::move(o.free_);
    o.data_ = nullptr;
    o.size_ = 0;
    o.huge_advised_ = false;
    o.free_ = nullptr;
  }
  return *this;
}

void AlignedBuffer::reset() {
  if (data_ != nullptr) free_(data_, size_);
  data_ = nullptr;
  size_ = 0;
  huge_advised_ = false;
  free_ = nullptr;
}

}  // namespace flea::io
