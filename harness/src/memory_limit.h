// The memory limit each run gets: the scenario's memory_limit_mb, or an emulated profile's RAM,
// enforced at run time by a memory cgroup (cgroup.h) around the engine and llama-bench alike.
//
// The rule, in two halves:
//  - In the sweep (machine-independent, so every shard of a sweep expands it the same way): a
//    point's limit is memory_limit_mb; in emulate mode the profile's RAM is its default and its cap
//    (min of the two, like the budgets). 0 = none.
//  - At run time: a limit below this machine's RAM must be enforced; a run that cannot get its
//    cgroup fails. A limit at or above it limits nothing this machine has (emulating a 256 GB
//    profile on a 24 GB machine): it is set when cgroups are writable (the peak is recorded) and
//    otherwise the run goes ahead unlimited, and its record says so.
#pragma once

#include <cstdint>
#include <vector>

#include "profile.h"
#include "sweep.h"

namespace flea::harness {

// Writes each run's effective memory_limit_mb into its point (absent when 0, so points without a
// limit keep the identity they had before the key existed). llama-bench baselines, whose points
// carry only the keys llama-bench has, take the limit of the runs they serve: one baseline per
// distinct limit. Points that become equal are run once; ids are renumbered in sweep order.
void apply_memory_limits(std::vector<RunSpec>* runs, const Profile* emulate);

// The point's limit in bytes (0 = none).
int64_t point_memory_limit_bytes(const Json& point);

// Whether a limit must be enforced on a machine with `machine_ram_bytes` (<= 0: unknown, so yes).
bool memory_limit_required(int64_t limit_bytes, int64_t machine_ram_bytes);

}  // namespace flea::harness
