#include "membw.h"

#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstring>
#include <fstream>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FLEA_MEMBW_X86 1
#endif

#include "env.h"

namespace flea::harness {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int64_t kMiB = 1 << 20;
constexpr int64_t kStep = 256;       // bytes per kernel iteration: four 64-byte lines
constexpr int64_t kChunkAlign = 4096;

// ---- kernels: each thread reads its own contiguous chunk ---------------------------------------
// Several independent accumulators keep enough loads in flight; the sum is returned so the
// compiler cannot drop the loads.

uint64_t read_scalar(const uint8_t* p, int64_t n) {
  const auto* q = reinterpret_cast<const uint64_t*>(p);
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  for (int64_t i = 0; i < n / 8; i += 4) {
    a0 += q[i];
    a1 += q[i + 1];
    a2 += q[i + 2];
    a3 += q[i + 3];
  }
  return a0 + a1 + a2 + a3;
}

#ifdef FLEA_MEMBW_X86
__attribute__((target("avx2"))) uint64_t read_avx2(const uint8_t* p, int64_t n) {
  __m256i a[8];
  for (auto& x : a) x = _mm256_setzero_si256();
  for (int64_t i = 0; i < n; i += kStep) {
    for (int k = 0; k < 8; ++k) a[k] = _mm256_add_epi64(a[k], _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32 * k)));
  }
  for (int k = 1; k < 8; ++k) a[0] = _mm256_add_epi64(a[0], a[k]);
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), a[0]);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

__attribute__((target("avx512f"))) uint64_t read_avx512(const uint8_t* p, int64_t n) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i < n; i += kStep) {
    a0 = _mm512_add_epi64(a0, _mm512_load_si512(p + i));
    a1 = _mm512_add_epi64(a1, _mm512_load_si512(p + i + 64));
    a2 = _mm512_add_epi64(a2, _mm512_load_si512(p + i + 128));
    a3 = _mm512_add_epi64(a3, _mm512_load_si512(p + i + 192));
  }
  a0 = _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3));
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, a0);
  uint64_t s = 0;
  for (uint64_t x : lanes) s += x;
  return s;
}

#endif

using ReadFn = uint64_t (*)(const uint8_t*, int64_t);

ReadFn read_kernel_for(const std::string& isa) {
#ifdef FLEA_MEMBW_X86
  if (isa == "avx512") return read_avx512;
  if (isa == "avx2") return read_avx2;
#else
  (void)isa;
#endif
  return read_scalar;
}

bool cpu_can_run(const std::string& isa) {
  if (isa == "scalar") return true;
#ifdef FLEA_MEMBW_X86
  __builtin_cpu_init();
  if (isa == "avx2") return __builtin_cpu_supports("avx2");
  if (isa == "avx512") return __builtin_cpu_supports("avx512f");
#endif
  return false;
}

std::vector<int> affinity_cpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int c = 0; c < CPU_SETSIZE; ++c) if (CPU_ISSET(c, &set)) cpus.push_back(c);
  }
  return cpus;
}

int64_t mem_available_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit) {
    if (key == "MemAvailable:") return kb * 1024;
  }
  return -1;
}

// Anonymous memory, unmapped on destruction. Not advised onto huge pages: with THP's default
// defrag setting that stalls the first touch on compaction (1.5-3.5 s for 1.4 GB on the development
// VM against 0.8-1.2 s on 4 KiB pages), and a sequential read gains little from fewer TLB misses.
class Mapping {
 public:
  explicit Mapping(int64_t bytes) : bytes_(bytes) {
    void* p = mmap(nullptr, static_cast<size_t>(bytes), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return;
    base_ = static_cast<uint8_t*>(p);
  }
  ~Mapping() {
    if (base_ != nullptr) munmap(base_, static_cast<size_t>(bytes_));
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  uint8_t* data() const { return base_; }

 private:
  uint8_t* base_ = nullptr;
  int64_t bytes_ = 0;
};

// Runs work(t) on `n` threads (pinned to cpus[t] when given) released together by a spin barrier;
// returns the wall seconds from the first thread's start to the last one's end (thread creation
// and wake-up are outside the window, as STREAM times only its parallel loop).
template <typename Work>
double run_team(int n, const std::vector<int>& cpus, bool* pinned_all, Work work) {
  std::atomic<int> arrived{0};
  std::vector<Clock::time_point> t0(n), t1(n);
  std::vector<std::thread> team;
  team.reserve(n);
  std::atomic<bool> all_pinned{true};
  for (int t = 0; t < n; ++t) {
    team.emplace_back([&, t] {
      if (!cpus.empty()) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpus[t], &set);
        if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0) all_pinned = false;
      }
      arrived.fetch_add(1);
      while (arrived.load(std::memory_order_acquire) < n) std::this_thread::yield();
      t0[t] = Clock::now();
      work(t);
      t1[t] = Clock::now();
    });
  }
  for (auto& th : team) th.join();
  if (pinned_all != nullptr) *pinned_all = !cpus.empty() && all_pinned.load();
  const auto start = *std::min_element(t0.begin(), t0.end());
  const auto end = *std::max_element(t1.begin(), t1.end());
  return std::chrono::duration<double>(end - start).count();
}

int64_t round_up(int64_t v, int64_t to) { return (v + to - 1) / to * to; }

}  // namespace

std::string best_memory_isa() {
  for (const char* isa : {"avx512", "avx2"}) {
    if (cpu_can_run(isa)) return isa;
  }
  return "scalar";
}

std::vector<int64_t> memory_buffer_sizes(int64_t llc_bytes, int64_t avail_bytes) {
  const int64_t llc = llc_bytes > 0 ? llc_bytes : 64 * kMiB;
  std::vector<int64_t> sizes;
  int64_t cap = avail_bytes > 0 ? std::max<int64_t>(16 * kMiB, avail_bytes / 4 / (2 * kMiB) * (2 * kMiB)) : INT64_MAX;
  for (int64_t quarters : {5, 8, 12}) {
    const int64_t b = std::min(cap, round_up(llc * quarters / 4, 2 * kMiB));
    if (sizes.empty() || b > sizes.back()) sizes.push_back(b);
  }
  return sizes;
}

MemoryBandwidth measure_memory_bandwidth(const MemoryBandwidthOptions& o) {
  const auto start = Clock::now();
  MemoryBandwidth m;
  m.online_cpus = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  m.isa = o.isa == "auto" ? best_memory_isa() : o.isa;
  if (!cpu_can_run(m.isa)) {
    m.error = "this CPU cannot run the " + m.isa + " kernels";
    return m;
  }
  const ReadFn read = read_kernel_for(m.isa);
  std::vector<int> cpus = affinity_cpus();
  m.threads = o.threads > 0 ? o.threads : (cpus.empty() ? std::max(1, m.online_cpus) : static_cast<int>(cpus.size()));
  // Pinning needs one distinct CPU per thread; more threads than CPUs run unpinned.
  if (!o.pin || static_cast<int>(cpus.size()) < m.threads) cpus.clear();
  else cpus.resize(m.threads);
  m.llc_bytes = o.llc_bytes >= 0 ? o.llc_bytes : std::max<int64_t>(0, last_level_cache_bytes());
  m.buffer_bytes = o.buffer_bytes.empty() ? memory_buffer_sizes(m.llc_bytes, mem_available_bytes()) : o.buffer_bytes;
  m.above_llc = m.llc_bytes > 0;
  for (int64_t b : m.buffer_bytes) m.above_llc = m.above_llc && b > m.llc_bytes;

  const int64_t max_bytes = *std::max_element(m.buffer_bytes.begin(), m.buffer_bytes.end());
  Mapping buf(max_bytes);
  if (buf.data() == nullptr) {
    m.error = "cannot map " + std::to_string(max_bytes >> 20) + " MiB for the memory bandwidth probe";
    return m;
  }
  const int n = m.threads;
  // A thread's chunk of a pass over `bytes`, page-aligned.
  auto chunk = [n](int64_t bytes) { return bytes / n / kChunkAlign * kChunkAlign; };
  // First touch by the pinned threads that will read each chunk (local NUMA pages, no page faults
  // inside a timed pass).
  bool pinned = false;
  run_team(n, cpus, &pinned, [&](int t) {
    const int64_t c = max_bytes / n;
    std::memset(buf.data() + t * c, 1 + t, static_cast<size_t>(t == n - 1 ? max_bytes - t * c : c));
  });
  if (pinned) m.pinned_cpus = cpus;
  m.first_touch_s = std::chrono::duration<double>(Clock::now() - start).count();

  std::atomic<uint64_t> sink{0};
  m.read.samples_gb_s.assign(m.buffer_bytes.size(), {});
  auto record = [](MemoryKernel* kern, size_t i, int64_t size, double gb_s) {
    kern->samples_gb_s[i].push_back(gb_s);
    if (gb_s > kern->gb_s) {
      kern->gb_s = gb_s;
      kern->best_buffer_bytes = size;
    }
  };
  for (int rep = 0; rep < std::max(1, o.reps); ++rep) {
    for (size_t i = 0; i < m.buffer_bytes.size(); ++i) {
      const int64_t size = m.buffer_bytes[i];
      const int64_t c = chunk(size);
      if (c < kStep) continue;
      const double s = run_team(n, cpus, nullptr, [&](int t) { sink += read(buf.data() + t * c, c); });
      record(&m.read, i, size, s > 0 ? static_cast<double>(c) * n / s / 1e9 : 0);
    }
    m.reps = rep + 1;
    if (m.reps >= o.min_reps && std::chrono::duration<double>(Clock::now() - start).count() > o.budget_s) break;
  }
  m.elapsed_s = std::chrono::duration<double>(Clock::now() - start).count();
  return m;
}

Json memory_bandwidth_json(const MemoryBandwidth& m) {
  Json j = {{"method", "STREAM-style: one thread per CPU, vector loads, buffers above the LLC, best of reps"},
            {"isa", m.isa},
            {"threads", m.threads},
            {"online_cpus", m.online_cpus},
            {"pinned_cpus", m.pinned_cpus},
            {"llc_bytes", m.llc_bytes > 0 ? Json(m.llc_bytes) : Json(nullptr)},
            {"buffer_bytes", m.buffer_bytes},
            {"above_llc", m.above_llc},
            {"reps", m.reps},
            {"first_touch_s", m.first_touch_s},
            {"elapsed_s", m.elapsed_s},
            {"read_gb_s", m.read.gb_s > 0 ? Json(m.read.gb_s) : Json(nullptr)},
            {"best_buffer_bytes", m.read.best_buffer_bytes > 0 ? Json(m.read.best_buffer_bytes) : Json(nullptr)},
            {"samples_gb_s", m.read.samples_gb_s},
            {"error", m.error.empty() ? Json(nullptr) : Json(m.error)}};
  return j;
}

void add_memory_ceilings(Json* ceilings, const MemoryBandwidthOptions& o) {
  const MemoryBandwidth m = measure_memory_bandwidth(o);
  auto fig = [](double v) { return v > 0 ? Json(v) : Json(nullptr); };
  (*ceilings)["memory_bw_gb_s"] = fig(m.read.gb_s);
  (*ceilings)["memory_read_gb_s"] = fig(m.read.gb_s);
  (*ceilings)["memory"] = memory_bandwidth_json(m);
}

}  // namespace flea::harness
