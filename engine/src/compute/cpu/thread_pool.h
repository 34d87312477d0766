// A persistent fork-join pool for the CPU matmuls: workers spin briefly between jobs (token
// generation issues ~7 matmuls per layer back to back) and then block so an idle engine costs
// no CPU. A job is done when its chunks are, not when every worker has checked in: on a machine
// with more runnable threads than cores a descheduled worker would otherwise stall every matmul
// for a scheduler time slice (measured here: 2 threads 20x slower than 1 under load). Workers
// that arrive late find the job closed and go back to waiting.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace flea::cpu {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);  // n_threads total, the calling thread included (>= 1)
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end) on disjoint chunks covering [0, n), handed out dynamically to the
  // caller and the workers; returns when all are done. One caller at a time; fn must not call
  // parallel_for on the same pool.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn);
  // Same with chunks of `grain` indices (the last may be shorter).
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void worker_loop();
  void run_chunks();
  static bool is_open(uint64_t generation) { return (generation & 1) != 0; }

  std::vector<std::thread> workers_;
  // The current job; written by the caller while generation_ is even (closed), read by workers
  // only between taking a reference (refs_) and seeing generation_ still odd (open) and unchanged.
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  int64_t grain_ = 1;
  int64_t n_chunks_ = 0;
  alignas(64) std::atomic<int64_t> next_{0};         // next unclaimed index
  alignas(64) std::atomic<int64_t> chunks_done_{0};  // chunks of the current job finished
  alignas(64) std::atomic<uint64_t> generation_{0};  // odd while a job is open, +1 to open, +1 to close
  alignas(64) std::atomic<int> refs_{0};             // workers inside the open job
  std::atomic<int> sleeping_{0};
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable cv_;
};

}  // namespace flea::cpu
