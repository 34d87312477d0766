#include "compute/cpu/thread_pool.h"

#include <algorithm>

#include "flea/status.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FLEA_CPU_RELAX() _mm_pause()
#else
#define FLEA_CPU_RELAX() std::this_thread::yield()
#endif

namespace flea::cpu {
namespace {
// Pause iterations a worker spins before blocking (~0.2-1 ms): long enough to bridge the gap
// between consecutive matmuls of one forward pass, short enough not to steal an idle core.
constexpr int kSpinIterations = 1 << 14;
}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  FLEA_CHECK(n_threads >= 1, "thread pool needs at least one thread, got " + std::to_string(n_threads));
  workers_.reserve(static_cast<size_t>(n_threads - 1));
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true);
  }
  cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::run_chunks() {
  const auto& fn = *fn_;
  for (;;) {
    const int64_t begin = next_.fetch_add(grain_, std::memory_order_relaxed);
    if (begin >= n_) return;
    fn(begin, std::min(n_, begin + grain_));
    chunks_done_.fetch_add(1, std::memory_order_release);
  }
}

void ThreadPool::worker_loop() {
  uint64_t seen = 0;  // the last generation this worker looked at
  for (;;) {
    int spins = 0;
    uint64_t g;
    while ((g = generation_.load(std::memory_order_acquire)) == seen || !is_open(g)) {
      if (stop_.load(std::memory_order_relaxed)) return;
      seen = g;
      if (++spins < kSpinIterations) {
        FLEA_CPU_RELAX();
        continue;
      }
      std::unique_lock<std::mutex> lock(mutex_);
      sleeping_.fetch_add(1);
      cv_.wait(lock, [&] { return generation_.load() != seen || stop_.load(); });
      sleeping_.fetch_sub(1);
    }
    if (stop_.load()) return;
    seen = g;
    // Enter the job only if it is still open: either this increment is seen by the caller's wait
    // for refs_ == 0 after it closed the job, or this thread sees the close (both seq_cst).
    refs_.fetch_add(1);
    if (generation_.load() == g) run_chunks();
    refs_.fetch_sub(1, std::memory_order_release);
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  // About four chunks per thread: enough slack to absorb a descheduled or slower core.
  const int64_t chunks = static_cast<int64_t>(size()) * 4;
  parallel_for(n, std::max<int64_t>(1, (n + chunks - 1) / chunks), fn);
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  if (workers_.empty() || n <= grain) {
    fn(0, n);
    return;
  }
  fn_ = &fn;
  n_ = n;
  grain_ = grain;
  n_chunks_ = (n + grain - 1) / grain;
  next_.store(0, std::memory_order_relaxed);
  chunks_done_.store(0, std::memory_order_relaxed);
  generation_.fetch_add(1);  // open (odd); seq_cst: publishes the job before sleeping_ is read
  if (sleeping_.load() > 0) {
    { std::lock_guard<std::mutex> lock(mutex_); }
    cv_.notify_all();
  }
  run_chunks();
  // Chunks other threads claimed: they are running them (a claim is made by a running thread).
  for (int spins = 0; chunks_done_.load(std::memory_order_acquire) < n_chunks_; ++spins) {
    if (spins < kSpinIterations) {
      FLEA_CPU_RELAX();
    } else {
      std::this_thread::yield();
    }
  }
  generation_.fetch_add(1);  // close (even): late workers turn back without touching the job
  // Workers that entered before the close are past their last chunk; wait for them to leave so
  // the next job's fields can be written.
  for (int spins = 0; refs_.load() != 0; ++spins) {  // seq_cst: pairs with the worker's refs_ then generation_
    if (spins < kSpinIterations) {
      FLEA_CPU_RELAX();
    } else {
      std::this_thread::yield();
    }
  }
}

}  // namespace flea::cpu
