// ResidencyPlanner: decides, before anything is read, which tensors stay resident and which layers
// stream through the staging ring, and predicts the bytes and time per token. Deterministic: the
// same file, layout and options always give the same plan, byte for byte.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "flea/status.h"
#include "gguf/gguf.h"
#include "model/weights.h"
#include "residency/options.h"

namespace flea {

// kElsewhere: another pipeline stage's layer (ResidencyOptions::slice); this process never reads it.
enum class Placement { kResident, kStreamed, kCached, kElsewhere };
const char* placement_name(Placement p);  // "resident" "streamed" "cached" "elsewhere"

// One read request: a 4096-aligned file range landing at `buffer_offset` in the layer's buffer.
struct ReadSpan {
  uint64_t file_offset = 0;
  uint64_t length = 0;
  uint64_t buffer_offset = 0;
};

constexpr uint64_t kNotInBuffer = UINT64_MAX;

struct LayerPlan {
  int layer = 0;
  Placement placement = Placement::kResident;
  uint64_t weight_bytes = 0;  // all nine tensors
  uint64_t norm_bytes = 0;    // attn_norm + ffn_norm: always resident
  uint64_t stream_bytes = 0;  // weight_bytes - norm_bytes: what has to come from the file
  std::vector<ReadSpan> spans;  // cover the non-norm tensors; usually one span per layer
  uint64_t buffer_bytes = 0;    // sum of span lengths (aligned): the layer's buffer size
  uint64_t read_bytes = 0;      // bytes one load reads: buffer_bytes less what lies past EOF
  // Where each tensor starts inside the layer buffer (kNotInBuffer for the norms, and for the
  // expert tensors of a layer whose experts stream one by one).
  std::array<uint64_t, kLayerTensorCount> buffer_offset{};

  // Expert-granular residency: a streamed MoE layer under --expert-residency expert. The spans
  // above then cover the dense part only (attention, router, shared expert) and each expert is read
  // on its own after routing (see expert_read()). weight_bytes/stream_bytes still count every expert.
  bool experts_streamed = false;
  int n_expert = 0;
  std::array<uint64_t, 3> expert_tensor_offset{};  // file offsets of ffn_{gate,up,down}_exps
  std::array<uint64_t, 3> expert_slab_bytes{};     // one expert's slab of each
  uint64_t expert_read_bytes = 0;                  // bytes one expert's read moves (mean over experts)
  int expert_cache = 0;                            // experts this layer keeps after use
};

// The reads of one expert of a layer with experts_streamed: the slabs of gate, up and down, each
// widened to 4096-byte boundaries, back to back in the expert's buffer.
struct ExpertRead {
  std::array<ReadSpan, 3> spans;
  std::array<uint64_t, 3> data_offset{};  // where each slab's first byte lands in the buffer
  uint64_t buffer_bytes = 0;
};
ExpertRead expert_read(const LayerPlan& lp, int expert);

// Bandwidths measured in the same run (fio, memcpy); 0 = unknown, the planner's defaults apply.
struct MeasuredBandwidth {
  double disk_gb_s = 0;
  double mem_gb_s = 0;
  std::string source;  // "fio odirect bs=1M qd=4", ...
};
constexpr double kDefaultDiskGbS = 2.0;   // a mid-range NVMe SSD
constexpr double kDefaultMemGbS = 10.0;   // what a CPU GEMV sustains on 2-4 cores

struct Plan {
  std::string residency, io;
  int prefetch = 0;
  int n_layer = 0;
  std::vector<LayerPlan> layers;
  // The pipeline stage planned (the whole model unless ResidencyOptions::slice says otherwise):
  // layers outside [layer_begin, layer_end) are kElsewhere, and the byte totals below count only
  // this stage's layers and the globals it uses (global_used).
  int layer_begin = 0, layer_end = 0;
  std::array<bool, kGlobalTensorCount> global_used{};

  uint64_t model_bytes = 0;           // every tensor the forward pass uses
  uint64_t active_bytes = 0;          // what one token's compute touches: model_bytes less the
                                      // experts it is not routed to (n_expert_used of each MoE layer's)
  uint64_t global_bytes = 0;          // token_embd + output_norm + output
  uint64_t norm_bytes = 0;            // all layers' norms
  uint64_t resident_layer_bytes = 0;  // buffer_bytes of resident layers
  uint64_t weight_memory_bytes = 0;   // global + norms + resident layers (the --vram-budget-mb side)
  int ring_slots = 0;                 // staging buffers for streamed layers
  uint64_t slot_bytes = 0;            // each = the largest streamed layer's buffer_bytes
  uint64_t ring_bytes = 0;            // ring_slots * slot_bytes
  uint64_t cache_bytes = 0;           // buffer_bytes of cached layers
  uint64_t host_staging_bytes = 0;    // ring + cache (the --ram-budget-mb side)
  uint64_t vram_budget_bytes = 0, ram_budget_bytes = 0;  // 0 = unlimited
  // Where vram_budget_bytes came from: "--vram-budget-mb 4096", "unlimited (...)", or for `auto`
  // without a budget the machine: "MemAvailable 21.30 GiB - KV 0.50 GiB - scratch 0.06 GiB -
  // staging 1.20 GiB - margin 1.00 GiB = 18.54 GiB".
  std::string vram_budget_source;
  uint64_t host_available_bytes = 0;  // HostMemory::available_bytes() (0 = the machine was not probed)
  uint64_t host_reserved_bytes = 0;   // KV cache + scratch the session holds beside the weights
  uint64_t host_margin_bytes = 0;     // what `auto` leaves free (host_memory_margin)
  int n_resident = 0, n_streamed = 0, n_cached = 0;

  // Expert-granular residency (zeros without layers whose experts stream one by one). Memory:
  // expert_cache_slots cached experts shared out evenly over those layers (LayerPlan::expert_cache:
  // expert_cache_per_layer each, one more for the first layers when they do not divide evenly),
  // plus expert_scratch_slots buffers (one per routed expert) for experts in use that are not
  // cached; all of expert_slot_bytes.
  std::string expert_residency, expert_policy;
  int n_expert = 0, n_expert_used = 0;
  int n_expert_layers = 0;
  uint64_t expert_slot_bytes = 0;
  int expert_cache_slots = 0;
  int expert_cache_per_layer = 0;
  int expert_scratch_slots = 0;
  uint64_t expert_pool_bytes = 0;         // part of host_staging_bytes
  uint64_t dense_bytes_per_token = 0;     // streamed bytes that do not depend on routing
  uint64_t expert_bytes_per_token = 0;    // n_expert_used experts per expert layer, none cached
  // Hit rate of the expert cache under uniform, independent routing: the mean over expert layers of
  // cache / n_expert (a cache of c of a layer's n experts holds any given routed expert with
  // probability c/n under either policy).
  double predicted_expert_hit_rate = 0;

  uint64_t streamed_bytes_per_token = 0;  // steady state: streamed layers' read_bytes (expert layers:
                                          // dense part + the experts missed at the predicted hit rate)
  uint64_t first_token_bytes = 0;         // + cached layers, read once
  double disk_gb_s = 0, mem_gb_s = 0;
  std::string bandwidth_source;
  double predicted_io_ms = 0;         // streamed bytes / disk bandwidth
  double predicted_compute_ms = 0;    // bytes a token's compute touches (n_expert_used of each MoE
                                      // layer's experts) / memory bandwidth (GEMV is bandwidth-bound)
  double predicted_ms_per_token = 0;  // max(io, compute) with prefetch, their sum without

  std::string to_string() const;
  std::string to_json() const;
};

// Placement rules: token_embd, output, output_norm and every layer's norms are always resident;
// `full` keeps every layer resident, `transient` streams every layer, `auto` keeps whole layers
// resident in order 0, 1, ... while they fit --vram-budget-mb (unlimited = all) and streams the
// rest. Streamed layers go through prefetch+1 staging slots (capped at the number of streamed
// layers); a positive --ram-budget-mb bounds ring + cache, and streamed layers are cached (kept
// in RAM after their first read), in order, while they fit it. An impossible budget is an error
// that states the minimum.
// Streamed MoE layers under --expert-residency expert read their dense part through the ring and
// their experts after routing; the budget left after the ring and the scratch experts goes to the
// expert cache first (--expert-cache fixes its size instead), then to caching whole dense layers.
// The machine (opts.host_memory, when set): `auto` without --vram-budget-mb gets the budget
//   available - (KV + scratch) - staging - margin
// where available = min(MemAvailable, the tightest cgroup's limit - used), staging = the ring (and
// expert buffers) the layers that do not fit need, or all of --ram-budget-mb when given, and
// margin = 10% of available, at most 1 GiB; it keeps as many leading layers resident as that
// allows. Any plan whose weights + host staging + KV + scratch exceed `available` (no margin) is
// refused with the numbers and the flag to pass instead: a --vram-budget-mb or --ram-budget-mb
// above the machine, `full` of a model larger than the machine. Not with --io mmap, whose
// "resident" bytes are page cache the kernel reclaims instead of killing the process.
// With a slice (a pipeline stage), every rule above applies to the stage's own layers and globals.
StatusOr<Plan> plan_residency(const gguf::File& file, const ModelLayout& layout,
                              const ResidencyOptions& opts, const MeasuredBandwidth* bw);

// Spans that cover `tensors` (sorted by offset, 4096-aligned, merged when the gap is small).
std::vector<ReadSpan> plan_spans(std::vector<std::pair<uint64_t, uint64_t>> offset_and_bytes);

}  // namespace flea
