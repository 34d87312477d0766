// How much memory the machine can give this process: MemAvailable, and the headroom of the memory
// cgroups it runs in. `--residency auto` without a budget sizes itself by it, and the planner
// refuses budgets that ask for more (see plan.h).
#pragma once

#include <cstdint>
#include <string>

#include "flea/status.h"

namespace flea {

struct HostMemory {
  uint64_t mem_available_bytes = 0;  // /proc/meminfo MemAvailable
  // The tightest memory cgroup over the process's own and its ancestors (the kernel enforces every
  // level): its limit and what is charged to it, less its inactive file pages (page cache the
  // kernel reclaims before it OOM-kills). 0/0 = no limit applies.
  uint64_t cgroup_limit_bytes = 0;
  uint64_t cgroup_used_bytes = 0;
  std::string cgroup;  // "v1 /sys/fs/cgroup/memory/flea-lab/x" | "v2 /sys/fs/cgroup/x" | ""

  // min(MemAvailable, cgroup limit - used).
  uint64_t available_bytes() const;
  // "MemAvailable 21.30 GiB" or "cgroup v1 /sys/fs/...: limit 512.0 MiB - used 20.0 MiB = 492.0 MiB"
  // (whichever is smaller; the other in parentheses).
  std::string describe() const;
};

// Reads <root>/proc/meminfo, <root>/proc/self/cgroup, <root>/proc/self/mountinfo and the memory
// controller's files under <root><mount point>; root is "" for the real machine (tests give a fake
// tree). Without MemAvailable it is an error; cgroup files that cannot be read are skipped (no limit).
StatusOr<HostMemory> probe_host_memory(const std::string& root = "");

// The margin `auto` leaves free below what the machine has: 10% of it, at most 1 GiB (glibc arenas,
// thread stacks, the page cache of streamed reads, other processes growing).
uint64_t host_memory_margin(uint64_t available_bytes);

std::string human_bytes(uint64_t bytes);  // "21.30 GiB", or under 1 GiB "412.5 MiB"

}  // namespace flea
