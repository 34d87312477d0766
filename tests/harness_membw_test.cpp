// The memory ceiling's structure, never its speed: buffer sizes past the LLC, one thread per CPU
// this process may use (pinned), every kernel path this CPU runs, best of N over the raw samples
// that are kept, and the ceilings fields the floors read. Small explicit buffers keep it fast.
#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>

#include "env.h"
#include "membw.h"

namespace fh = flea::harness;

namespace {

constexpr int64_t kMiB = 1 << 20;

std::vector<int> affinity_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int c = 0; c < CPU_SETSIZE; ++c) if (CPU_ISSET(c, &set)) cpus.push_back(c);
  }
  return cpus;
}

fh::MemoryBandwidthOptions small(int reps) {
  fh::MemoryBandwidthOptions o;
  o.buffer_bytes = {4 * kMiB, 8 * kMiB};
  o.llc_bytes = 2 * kMiB;
  o.reps = reps;
  o.budget_s = 1e9;
  return o;
}

}  // namespace

TEST(MemoryBandwidth, DefaultSizesAreAboveTheLlcAscendingAndCappedByAvailableMemory) {
  const int64_t llc = 480 * kMiB;
  const auto sizes = fh::memory_buffer_sizes(llc, 0);
  ASSERT_EQ(sizes.size(), 3u);
  EXPECT_EQ(sizes[0], 600 * kMiB);   // 1.25x: just past the cache
  EXPECT_EQ(sizes[1], 960 * kMiB);   // 2x
  EXPECT_EQ(sizes[2], 1440 * kMiB);  // 3x
  for (int64_t s : sizes) {
    EXPECT_GT(s, llc);
    EXPECT_EQ(s % (2 * kMiB), 0);
  }
  // An unknown LLC is taken as 64 MiB.
  EXPECT_EQ(fh::memory_buffer_sizes(0, 0), (std::vector<int64_t>{80 * kMiB, 128 * kMiB, 192 * kMiB}));
  // A quarter of MemAvailable caps every size; equal sizes collapse into one.
  const auto capped = fh::memory_buffer_sizes(llc, 2048 * kMiB);
  EXPECT_EQ(capped, (std::vector<int64_t>{512 * kMiB}));
  // On this machine: every default size exceeds the LLC sysfs reports.
  const int64_t here = fh::last_level_cache_bytes();
  if (here > 0) {
    for (int64_t s : fh::memory_buffer_sizes(here, 0)) EXPECT_GT(s, here);
  }
}

TEST(MemoryBandwidth, OneThreadPerCpuOfTheAffinityMaskPinned) {
  const fh::MemoryBandwidth m = fh::measure_memory_bandwidth(small(2));
  ASSERT_TRUE(m.error.empty()) << m.error;
  const std::vector<int> cpus = affinity_cpus();
  EXPECT_EQ(m.threads, static_cast<int>(cpus.size()));
  EXPECT_EQ(m.online_cpus, static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN)));
  // Unrestricted (no taskset or cpuset): one thread per online CPU.
  if (static_cast<int>(cpus.size()) == m.online_cpus) {
    EXPECT_EQ(m.threads, m.online_cpus);
  }
  EXPECT_EQ(m.pinned_cpus, cpus);
}

TEST(MemoryBandwidth, SamplesAreKeptPerSizeAndRepetitionAndTheBestIsTheirMaximum) {
  const fh::MemoryBandwidth m = fh::measure_memory_bandwidth(small(4));
  ASSERT_TRUE(m.error.empty()) << m.error;
  EXPECT_EQ(m.reps, 4);
  EXPECT_EQ(m.buffer_bytes, (std::vector<int64_t>{4 * kMiB, 8 * kMiB}));
  EXPECT_TRUE(m.above_llc);
  ASSERT_EQ(m.read.samples_gb_s.size(), 2u);
  double best = 0;
  int64_t best_size = 0;
  for (size_t i = 0; i < 2; ++i) {
    ASSERT_EQ(m.read.samples_gb_s[i].size(), 4u);
    for (double v : m.read.samples_gb_s[i]) {
      EXPECT_GT(v, 0);
      if (v > best) {
        best = v;
        best_size = m.buffer_bytes[i];
      }
    }
  }
  EXPECT_EQ(m.read.gb_s, best);
  EXPECT_EQ(m.read.best_buffer_bytes, best_size);

  const fh::Json j = fh::memory_bandwidth_json(m);
  EXPECT_EQ(j["read_gb_s"].get<double>(), best);
  EXPECT_EQ(j["samples_gb_s"].size(), 2u);
  EXPECT_EQ(j["samples_gb_s"][1].size(), 4u);
  EXPECT_EQ(j["threads"], m.threads);
  EXPECT_EQ(j["isa"], m.isa);
  EXPECT_TRUE(j["error"].is_null());
}

TEST(MemoryBandwidth, BudgetStopsAfterTheMinimumRepetitions) {
  fh::MemoryBandwidthOptions o = small(50);
  o.budget_s = 0;
  const fh::MemoryBandwidth m = fh::measure_memory_bandwidth(o);
  EXPECT_EQ(m.reps, o.min_reps);
  EXPECT_EQ(m.read.samples_gb_s[0].size(), static_cast<size_t>(o.min_reps));
}

TEST(MemoryBandwidth, AutoPicksTheWidestVectorsAndEveryPathThisCpuHasRuns) {
  __builtin_cpu_init();
  const std::string want = __builtin_cpu_supports("avx512f") ? "avx512" : __builtin_cpu_supports("avx2") ? "avx2" : "scalar";
  EXPECT_EQ(fh::best_memory_isa(), want);
  EXPECT_EQ(fh::measure_memory_bandwidth(small(1)).isa, want);
  for (const char* isa : {"avx512", "avx2", "scalar"}) {
    fh::MemoryBandwidthOptions o = small(1);
    o.isa = isa;
    const fh::MemoryBandwidth m = fh::measure_memory_bandwidth(o);
    const bool can = std::string(isa) == "scalar" || (std::string(isa) == "avx2" ? __builtin_cpu_supports("avx2")
                                                                                  : __builtin_cpu_supports("avx512f"));
    if (!can) {
      EXPECT_FALSE(m.error.empty()) << isa;  // refused, never run into SIGILL
      EXPECT_EQ(m.read.gb_s, 0) << isa;
      continue;
    }
    EXPECT_TRUE(m.error.empty()) << isa << ": " << m.error;
    EXPECT_EQ(m.isa, isa);
    EXPECT_GT(m.read.gb_s, 0) << isa;
  }
}

TEST(MemoryBandwidth, CeilingsFieldsAreTheReadFigureAndTheWholeRecord) {
  fh::Json c = {{"fio", fh::Json::array()}, {"h2d", nullptr}, {"memory_bw_gb_s", nullptr}};
  fh::add_memory_ceilings(&c, small(2));
  ASSERT_TRUE(c["memory_read_gb_s"].is_number());
  EXPECT_EQ(c["memory_bw_gb_s"], c["memory_read_gb_s"]);
  EXPECT_EQ(c["memory"]["read_gb_s"], c["memory_read_gb_s"]);
  EXPECT_EQ(c["memory"]["buffer_bytes"], (fh::Json{4 * kMiB, 8 * kMiB}));
  EXPECT_EQ(c["memory"]["reps"], 2);
}
