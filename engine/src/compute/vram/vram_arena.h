// GPU-independent half of the CUDA backend's residency: how a VRAM budget is split between the
// fixed buffers, resident layers and the ring of streaming slots (VramPlan), the bump arena that
// hands out offsets inside the one device allocation (VramArena), the order in which streamed
// layers are copied into ring slots (LayerRing), and the same schedule run against a fake clock
// (simulate_stream) so tests can check overlap without a GPU. Plain C++: built with or without CUDA.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "flea/status.h"

namespace flea::vram {

constexpr uint64_t kAlign = 256;  // every reservation starts on a 256-byte boundary (cudaMalloc's)
constexpr uint64_t kMiB = 1024ull * 1024ull;

inline uint64_t align_up(uint64_t n, uint64_t a = kAlign) { return (n + a - 1) / a * a; }
inline double to_mb(uint64_t bytes) { return static_cast<double>(bytes) / static_cast<double>(kMiB); }
// Whole MiB, rounded up: what an error message tells the user to pass as --vram-budget-mb.
inline uint64_t ceil_mb(uint64_t bytes) { return (bytes + kMiB - 1) / kMiB; }

// VRAM for the K/V cache (F32, n_ctx rows of n_embd_kv per layer, K and V each a kAlign-rounded
// reservation): resident mode keeps every layer's pair, n_layer * 2 * align_up(n_ctx * n_embd_kv * 4);
// host mode (--kv host) keeps one working pair, 2 * align_up(n_ctx * n_embd_kv * 4), while the full
// cache lives in pinned host memory (kv_host_bytes) and is streamed per layer.
uint64_t kv_vram_bytes(int64_t n_layer, int64_t n_ctx, int64_t n_embd_kv, bool kv_host);
// Pinned host memory of the host-mode cache: n_layer * 2 * n_ctx * n_embd_kv * 4 (one allocation).
uint64_t kv_host_bytes(int64_t n_layer, int64_t n_ctx, int64_t n_embd_kv);

// Offsets inside one device allocation; never hands out more than `budget_bytes` (0 = unlimited).
// Allocations live as long as the session, so this is a bump allocator with a name per region.
class VramArena {
 public:
  struct Region {
    std::string what;
    uint64_t offset = 0;
    uint64_t bytes = 0;
  };

  explicit VramArena(uint64_t budget_bytes) : budget_bytes_(budget_bytes) {}

  // The offset of `bytes` (rounded up to kAlign) or RESOURCE_EXHAUSTED naming `what`, the request,
  // what is already reserved and the budget.
  StatusOr<uint64_t> reserve(const std::string& what, uint64_t bytes);

  uint64_t used_bytes() const { return used_bytes_; }
  uint64_t peak_bytes() const { return peak_bytes_; }
  uint64_t budget_bytes() const { return budget_bytes_; }
  const std::vector<Region>& regions() const { return regions_; }

 private:
  uint64_t budget_bytes_;
  uint64_t used_bytes_ = 0;
  uint64_t peak_bytes_ = 0;
  std::vector<Region> regions_;
};

// What the session needs in VRAM, in bytes (each already rounded to kAlign by the caller).
struct VramRequest {
  uint64_t global_bytes = 0;   // token_embd + output_norm + output
  uint64_t norm_bytes = 0;     // every layer's attn_norm + ffn_norm
  uint64_t kv_bytes = 0;       // K/V cache in VRAM: kv_vram_bytes(..., kv_host)
  bool kv_host = false;        // --kv host: kv_bytes is one layer's working pair (named in messages)
  uint64_t scratch_bytes = 0;  // activations for one micro-batch
  std::vector<uint64_t> layer_bytes;  // [n_layer]: the seven matrices of each layer
  // [n_layer]: may the layer stay in VRAM? (the host plan's resident layers; streamed and cached
  // layers in the host plan always stream through the ring)
  std::vector<bool> may_be_resident;
  bool require_all_resident = false;  // --residency full: every layer in VRAM or an error
  int prefetch = 1;                   // layers copied ahead of compute
  uint64_t budget_bytes = 0;          // 0 = unlimited
};

struct VramPlan {
  std::vector<bool> resident;     // [n_layer]: layer kept in VRAM for the session's life
  std::vector<int> streamed;      // layers copied into the ring on every visit, in forward order
  int ring_slots = 0;             // min(prefetch + 1, streamed.size())
  int lookahead = 0;              // copies issued ahead of compute: min(prefetch, ring_slots - 1)
  uint64_t slot_bytes = 0;        // largest streamed layer
  bool kv_host = false;           // the request's KV mode
  uint64_t kv_bytes = 0;          // K/V cache in VRAM (part of fixed_bytes)
  uint64_t fixed_bytes = 0;       // globals + norms + KV + scratch
  uint64_t resident_bytes = 0;    // resident layers
  uint64_t ring_bytes = 0;        // ring_slots * slot_bytes
  uint64_t total_bytes = 0;       // fixed + resident + ring: the arena size
  uint64_t minimum_bytes = 0;     // the smallest budget this request could run in
  uint64_t streamed_bytes_per_token = 0;  // H2D bytes per full forward pass

  std::string to_string() const;
};

// Keeps the allowed layers resident in order 0, 1, ... while fixed + resident + ring fits the
// budget; the rest stream through prefetch+1 slots of the largest streamed layer. An impossible
// budget is RESOURCE_EXHAUSTED stating the minimum in MB and what it is made of.
StatusOr<VramPlan> plan_vram(const VramRequest& req);

// Which ring slot each streamed-layer visit uses and when its copy is issued. Visits are numbered
// 0, 1, 2, ... across tokens (visit v is layer streamed[v % n_streamed]), so prefetch wraps from
// the last layer of one token to the first of the next. The driver loop, shared by the CUDA
// session and simulate_stream:
//   while (ring.next_issue() <= v) issue(ring.next_issue());              // only without lookahead
//   compute(v);                                                            // waits for copy v
//   while (ring.next_issue() <= v + ring.lookahead()) issue(ring.next_issue());
// and the copy of visit c waits until the compute of freeing_visit(c) (the slot's previous user)
// has finished.
class LayerRing {
 public:
  LayerRing(int n_slots, int lookahead);
  int n_slots() const { return n_slots_; }
  int lookahead() const { return lookahead_; }
  int slot(int64_t visit) const { return static_cast<int>(visit % n_slots_); }
  int64_t freeing_visit(int64_t visit) const { return visit - n_slots_; }  // < 0: slot never used
  int64_t next_issue() const { return next_issue_; }
  void mark_issued(int64_t visit);  // must be next_issue()

 private:
  int n_slots_;
  int lookahead_;
  int64_t next_issue_ = 0;
};

// The driver loop above against a fake clock: one copy engine (copies in issue order), one compute
// stream, and a host that waits for each copy to finish before releasing the host buffer (and, with
// lookahead 0, for the previous compute before loading: load-then-compute).
struct SimResult {
  int64_t total_ns = 0;
  std::vector<int64_t> copy_start_ns, copy_end_ns, compute_start_ns, compute_end_ns;
  std::vector<int64_t> issued_during_visit;  // [visit]: the visit being driven when its copy was issued
  int max_copies_ahead = 0;  // max over time of (issued copies) - (computes finished)
};
SimResult simulate_stream(const std::vector<int64_t>& copy_ns, const std::vector<int64_t>& compute_ns,
                          int n_slots, int lookahead);

}  // namespace flea::vram
