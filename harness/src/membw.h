// Host memory bandwidth ceilings, measured the way STREAM does: one pinned thread per CPU this
// process may run on, vector loads (AVX-512 where the CPU has it, else AVX2, chosen at run time),
// buffers several times the last-level cache, the best of N repetitions. The host-memory floor
// divides a token's weight bytes by these, and a floor the machine can beat is no floor: these must
// be the most this machine's DRAM delivers, not what one thread's memcpy happens to reach.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "scenario.h"

namespace flea::harness {

struct MemoryBandwidthOptions {
  int threads = 0;                    // 0: one per CPU in the affinity mask (the online CPUs, unless restricted)
  std::vector<int64_t> buffer_bytes;  // empty: memory_buffer_sizes(llc_bytes, MemAvailable)
  int64_t llc_bytes = -1;             // -1: last_level_cache_bytes()
  int reps = 5;                       // best of up to this many passes per buffer size
  int min_reps = 2;                   // run even past budget_s
  double budget_s = 1.5;              // no further repetition starts after this (allocation included)
  std::string isa = "auto";           // auto | avx512 | avx2 | scalar: tests force a path
  bool pin = true;                    // pin thread i to the i-th CPU of the affinity mask
};

// The read kernel's figures: samples_gb_s[i][r] is buffer_bytes[i], repetition r.
struct MemoryKernel {
  double gb_s = 0;              // the best sample
  int64_t best_buffer_bytes = 0;
  std::vector<std::vector<double>> samples_gb_s;
};

struct MemoryBandwidth {
  std::string isa;                    // the kernels that ran: avx512 | avx2 | scalar
  int threads = 0;
  int online_cpus = 0;
  std::vector<int> pinned_cpus;       // empty when pinning was off or failed
  int64_t llc_bytes = 0;              // 0: unknown
  std::vector<int64_t> buffer_bytes;  // each pass reads one whole buffer of this size
  bool above_llc = false;             // every buffer larger than the LLC (false when it is unknown)
  int reps = 0;                       // repetitions that ran (each buffer size)
  double first_touch_s = 0;           // mapping and faulting in the buffer: on a VM, most of elapsed_s
  double elapsed_s = 0;
  // Bytes read per second by all threads together (wall time of the pass): the ceiling for a
  // token's weight reads. STREAM's copy/triad are not measured: no floor divides by them.
  MemoryKernel read;
  std::string error;                  // set (and no figures) when the buffer could not be had
};

// The kernels this CPU can run, best first: "avx512" (AVX-512F), "avx2", "scalar".
std::string best_memory_isa();
// 1.25, 2 and 3 x the LLC (64 MiB when unknown), rounded up to 2 MiB and capped at a quarter of
// `avail_bytes` (MemAvailable; <= 0: no cap). The smallest is just past the cache: the floor counts
// any model larger than the LLC as DRAM-bound, so the ceiling must cover one barely larger (which
// may still find part of itself cached); the largest shows DRAM alone. STREAM's 4x is left out to
// keep the first touch of the buffer (the probe's main cost, ~0.7 s/GB on a VM) inside the budget.
std::vector<int64_t> memory_buffer_sizes(int64_t llc_bytes, int64_t avail_bytes);
MemoryBandwidth measure_memory_bandwidth(const MemoryBandwidthOptions& o = {});
// The ceilings.memory object (results/FORMAT.md): method, isa, threads, sizes, raw samples.
Json memory_bandwidth_json(const MemoryBandwidth& m);
// Measures and sets the ceilings' memory fields: memory_read_gb_s (read.gb_s), memory_bw_gb_s (the
// host-memory floor's divisor: the same read figure) and memory (the whole record, raw samples
// included); null figures when the probe could not run.
void add_memory_ceilings(Json* ceilings, const MemoryBandwidthOptions& o);

}  // namespace flea::harness
