// membw_roof: the host's DRAM read bandwidth, measured by the same STREAM-style probe
// run_lab_harness uses for its ceilings (harness/src/membw.h), on a chosen number of threads, as one
// JSON object (results/FORMAT.md's ceilings.memory, raw samples included). The CPU comparison
// (bench/compare_llama_bench.py --roof) divides read_gb_s by a token's weight bytes: the most tokens
// per second a generation that reads every weight once per token could reach on these threads.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "membw.h"

int main(int argc, char** argv) {
  CLI::App app("Measure the host memory read bandwidth (STREAM-style read kernel, buffers above the last-level "
               "cache, best of reps) and print one JSON object.", "membw_roof");
  flea::harness::MemoryBandwidthOptions o;
  std::vector<int64_t> buffer_mb;
  bool no_pin = false;
  app.add_option("--threads,-t", o.threads, "reading threads (0 = one per CPU this process may run on)")
      ->check(CLI::Range(0, 4096))->capture_default_str();
  app.add_option("--reps", o.reps, "most passes over each buffer size (the best counts)")
      ->check(CLI::Range(1, 1000))->capture_default_str();
  app.add_option("--min-reps", o.min_reps, "passes that run even past --budget-s")
      ->check(CLI::Range(1, 1000))->capture_default_str();
  app.add_option("--budget-s", o.budget_s, "no further pass starts after this many seconds")
      ->check(CLI::Range(0.0, 3600.0))->capture_default_str();
  app.add_option("--buffer-mb", buffer_mb, "buffer sizes in MiB (default: 1.25, 2 and 3 x the last-level cache)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  app.add_option("--isa", o.isa, "read kernel")->check(CLI::IsMember({"auto", "avx512", "avx2", "scalar"}))->capture_default_str();
  app.add_flag("--no-pin", no_pin, "do not pin reading thread i to the i-th CPU of the affinity mask");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  o.pin = !no_pin;
  for (int64_t mb : buffer_mb) o.buffer_bytes.push_back(mb << 20);
  const flea::harness::MemoryBandwidth m = flea::harness::measure_memory_bandwidth(o);
  std::printf("%s\n", flea::harness::memory_bandwidth_json(m).dump().c_str());
  if (!m.error.empty()) {
    std::fprintf(stderr, "membw_roof: %s\n", m.error.c_str());
    return 1;
  }
  return 0;
}
