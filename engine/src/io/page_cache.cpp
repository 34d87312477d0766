#include "io/page_cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vector>

namespace flea::io {

namespace {
constexpr double kColdFraction = 0.05;
}

double page_cache_resident_fraction(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  struct stat st;
  double frac = -1;
  if (fstat(fd, &st) == 0 && st.st_size > 0) {
    const size_t bytes = static_cast<size_t>(st.st_size);
    void* map = mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
    if (map != MAP_FAILED) {
      const long page = sysconf(_SC_PAGESIZE);
      const size_t pages = (bytes + page - 1) / page;
      std::vector<unsigned char> vec(pages);
      if (mincore(map, bytes, vec.data()) == 0) {
        size_t resident = 0;
        for (unsigned char v : vec) resident += v & 1;
        frac = static_cast<double>(resident) / static_cast<double>(pages);
      }
      munmap(map, bytes);
    }
  } else if (fstat(fd, &st) == 0) {
    frac = 0;
  }
  close(fd);
  return frac;
}

bool drop_page_cache(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  fdatasync(fd);  // dirty pages cannot be dropped
  const bool advised = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0;
  close(fd);
  if (!advised) return false;
  const double frac = page_cache_resident_fraction(path);
  return frac >= 0 && frac <= kColdFraction;
}

}  // namespace flea::io
