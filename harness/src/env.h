// The context block (machine, build, git) and the ceilings measured in the same invocation:
// fio sequential read per model file and I/O path (page cache dropped first), pinned H2D when a GPU exists.
#pragma once

#include <string>
#include <vector>

#include "scenario.h"

namespace flea::harness {

Json host_info(const std::string& model_path_for_device);
Json build_info(std::vector<std::string>* warnings);
Json gpu_info();  // null without a GPU
std::string cpu_governor();
std::string storage_device_of(const std::string& path);
int64_t last_level_cache_bytes();
std::string read_file_text(const std::string& path);
// The current UTC time in a strftime format, e.g. "%Y%m%dT%H%M%SZ" for run ids.
std::string utc_now(const char* strftime_format);
std::string utc_now_rfc3339();
std::string source_dir();  // the repository the harness was built from

// Drops `path` from the page cache (posix_fadvise DONTNEED) and reports whether it worked,
// checked with mincore: *resident_fraction is what is still cached afterwards.
bool drop_page_cache(const std::string& path, double* resident_fraction, std::string* why);

struct FioOptions {
  int samples = 3;
  double runtime_s = 3;
  int64_t block_bytes = 1 << 20;
  int iodepth = 4;
  // fio's I/O buffers. "malloc": fio's default (4 KiB pages), the comparison of "the same block
  // size, direct I/O and queue depth". "hugetlb": --mem=mmaphuge from the hugetlb pool (as root the
  // harness reserves the few pages it needs and gives them back). "both": malloc, plus hugetlb
  // when the pool can be had, recorded under "hugetlb"; ceiling_gb_s is the better of the two.
  // On a host-cached virtual disk fio's small, reused buffer stays in the CPU cache and a huge-page
  // one reads 2-4x faster than a streaming engine can land bytes in DRAM (see README, "The I/O
  // path against fio"), so the floors use the best figure: a floor must never be beatable.
  std::string mem = "both";
};

// Huge pages of the hugetlb pool, for fio --mem=mmaphuge: ensures `bytes` worth are free,
// raising /proc/sys/vm/nr_hugepages when we may (root), and gives the pages it added back on
// destruction. Holds an flock on /tmp/flea-hugetlb.lock meanwhile, so concurrent harness runs
// (and bench/io_vs_fio.py) take turns instead of freeing each other's pages.
class HugetlbReservation {
 public:
  explicit HugetlbReservation(uint64_t bytes);
  ~HugetlbReservation();
  HugetlbReservation(const HugetlbReservation&) = delete;
  HugetlbReservation& operator=(const HugetlbReservation&) = delete;
  bool ok() const { return ok_; }
  const std::string& why() const { return why_; }  // when !ok(): what stood in the way
  int64_t added_pages() const { return added_; }   // pages this object added to the pool

 private:
  bool ok_ = false;
  std::string why_;
  int64_t added_ = 0;
  int lock_fd_ = -1;
};
std::string find_in_path(const std::string& exe);
// One ceilings.fio entry; "error" set (and read_gb_s null) when fio failed.
Json fio_ceiling(const std::string& fio, const std::string& path, const std::string& io, const FioOptions& o);

// Memory bandwidth ceilings: membw.h.
Json h2d_ceiling();  // null without a CUDA build and a GPU

}  // namespace flea::harness
