// What the streamer did, for `flea bench`, results files and Chrome traces: every layer state
// transition with a timestamp, bytes read, stall time (compute waiting for I/O), prefetch hits and
// misses, peak RSS. Thread-safe: the I/O threads and the compute thread record concurrently.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "flea/status.h"

namespace flea {

// transient -> loading -> staged -> active -> evicted | cached (resident layers: active <-> resident)
enum class LayerState { kTransient, kLoading, kStaged, kActive, kEvicted, kCached, kResident };
const char* layer_state_name(LayerState s);

struct Transition {
  int layer;
  LayerState state;
  int64_t t_ns;    // since the Telemetry was created (or reset)
  uint64_t bytes;  // bytes read, on the transition to kStaged
};

struct LayerStats {
  int layer = 0;
  int64_t load_ns = 0;     // time its reads took (I/O thread)
  int64_t compute_ns = 0;  // acquire() returned -> release()
  int64_t stall_ns = 0;    // acquire() blocked waiting for its read
  uint64_t bytes = 0;      // bytes read for it
  int64_t loads = 0, visits = 0;
  // Expert-granular residency (MoE layers): experts asked for after routing that were already in
  // memory (hits) or had to be read (misses), and the bytes those reads moved (also in `bytes`).
  int64_t expert_hits = 0, expert_misses = 0;
  uint64_t expert_bytes = 0;
};

struct Span {  // for the Chrome trace
  const char* cat;  // "io", "compute", "stall"
  int layer;
  int tid;          // 0 = compute thread, 1.. = I/O threads
  int64_t start_ns, end_ns;
  uint64_t bytes;
};

class Telemetry {
 public:
  // Transitions and spans beyond this are counted but not kept (long runs on big models).
  static constexpr size_t kMaxEvents = 1u << 20;

  Telemetry();
  int64_t now_ns() const;  // monotonic, since creation / reset()
  void reset();            // forget everything (e.g. after warm-up); the clock keeps running

  void record(int layer, LayerState s, uint64_t bytes = 0);
  void add_io(int layer, int tid, int64_t start_ns, int64_t end_ns, uint64_t bytes);
  void add_compute(int layer, int64_t start_ns, int64_t end_ns);
  void add_stall(int layer, int64_t start_ns, int64_t end_ns);
  void count_prefetch(bool hit);
  void count_expert(int layer, bool hit);
  void add_expert_bytes(int layer, uint64_t bytes);  // after add_io() for the same read
  void sample_rss();  // updates peak RSS from /proc/self/status

  uint64_t read_bytes() const;
  int64_t stall_ns() const;
  int64_t prefetch_hits() const;
  int64_t prefetch_misses() const;
  int64_t expert_hits() const;
  int64_t expert_misses() const;
  uint64_t peak_rss_bytes() const;
  std::vector<Transition> transitions() const;
  std::vector<LayerStats> layers() const;
  std::vector<Span> spans() const;

  // {"read_bytes","stall_ns","prefetch_hits","prefetch_misses","peak_rss_bytes","io_ns",
  //  "expert_hits","expert_misses",
  //  "layers":[{"layer","load_ns","compute_ns","stall_ns","bytes","loads","visits",
  //             "expert_hits","expert_misses","expert_bytes"}]}
  std::string to_json() const;
  // Chrome trace event format: {"traceEvents":[{"name","cat":"io|compute|stall","ph":"X","ts","dur","pid","tid","args"}]}
  std::string chrome_trace() const;
  Status write_chrome_trace(const std::string& path) const;

 private:
  LayerStats& layer_locked(int layer);
  mutable std::mutex mu_;
  std::atomic<int64_t> t0_ns_;  // read without mu_ by now_ns()
  std::vector<Transition> transitions_;
  std::vector<Span> spans_;
  std::vector<LayerStats> layers_;
  uint64_t read_bytes_ = 0;
  int64_t stall_ns_ = 0, io_ns_ = 0;
  int64_t hits_ = 0, misses_ = 0;
  int64_t expert_hits_ = 0, expert_misses_ = 0;
  uint64_t peak_rss_ = 0;
  uint64_t dropped_events_ = 0;
};

// VmRSS / VmHWM of this process in bytes (0 when /proc is unavailable).
uint64_t current_rss_bytes();
uint64_t peak_rss_hwm_bytes();

}  // namespace flea
