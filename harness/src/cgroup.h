// A memory cgroup around one child process, so that a run sees a smaller machine honestly: the
// limit covers everything the kernel charges to the child, anonymous memory and the page cache it
// faults in (mmap and read() alike), which --ram-budget-mb alone cannot. cgroup v1 (the memory
// controller's hierarchy) and v2 (unified, memory.max) are both handled; one cgroup per run, made
// fresh and removed after the child exits.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "flea/status.h"

namespace flea::harness {

// Where run cgroups are made: the memory controller's version and the directory they go under
// ($FLEA_CGROUP_PARENT when set, else <memory controller mount>/flea-lab).
struct CgroupRoot {
  std::string version;  // "v1" | "v2"
  std::string parent;
};
// Errors say which file, the errno and what the user can do.
StatusOr<CgroupRoot> find_memory_cgroup_root();

// What the cgroup saw, read after the child exited. -1 = the kernel does not provide the figure.
struct CgroupUsage {
  std::string version;
  std::string path;
  int64_t limit_bytes = 0;
  bool swap_limited = false;      // v1 memory.memsw / v2 memory.swap.max: no swap beyond the limit
  int64_t peak_bytes = -1;        // v1 memory.max_usage_in_bytes, v2 memory.peak (kernel 5.19+)
  int64_t page_cache_bytes = -1;  // file pages still charged at exit (memory.stat cache / file)
  int64_t failcnt = -1;           // v1 memory.failcnt (+ memsw.failcnt), v2 memory.events max: times a
                                  // charge hit the limit (some kernels leave it 0: compare peak_bytes)
  int64_t oom_kills = -1;         // v1 memory.oom_control oom_kill, v2 memory.events oom_kill
};

class MemoryCgroup {
 public:
  // A fresh cgroup <root.parent>/<name> limited to `limit_bytes` (swap too, where accounted).
  static StatusOr<std::unique_ptr<MemoryCgroup>> create(const std::string& name, int64_t limit_bytes);
  ~MemoryCgroup();
  MemoryCgroup(const MemoryCgroup&) = delete;
  MemoryCgroup& operator=(const MemoryCgroup&) = delete;

  // cgroup.procs, open for writing: a forked child writes "0" to it (itself) before exec, so
  // nothing it runs is ever outside the limit.
  int procs_fd() const { return procs_fd_; }
  const std::string& path() const { return path_; }
  const std::string& version() const { return version_; }
  int64_t limit_bytes() const { return limit_bytes_; }

  CgroupUsage usage() const;
  // Reclaims what is still charged (the run's page cache) and removes the directory; idempotent.
  Status remove();

 private:
  MemoryCgroup() = default;
  std::string version_, path_;
  int64_t limit_bytes_ = 0;
  bool swap_limited_ = false;
  int procs_fd_ = -1;
  bool removed_ = false;
};

// "killed by the memory cgroup at its 64 MiB limit (peak 64.0 MiB, page cache included; 1 OOM
// kill)", or "" when the cgroup killed nothing.
std::string oom_kill_message(const CgroupUsage& u);

}  // namespace flea::harness
