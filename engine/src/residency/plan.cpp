#include "residency/plan.h"

#include <algorithm>
#include <cmath>
#include <cinttypes>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "io/io_backend.h"
#include "residency/host_memory.h"

namespace flea {

namespace {
constexpr uint64_t kMiB = 1ull << 20;
// Tensors of one layer further apart than this are read with separate requests rather than
// reading the unrelated bytes between them.
constexpr uint64_t kMaxMergeGapBytes = 64 * 1024;

uint64_t ceil_mb(uint64_t bytes) { return (bytes + kMiB - 1) / kMiB; }
std::string mb(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f MiB", static_cast<double>(bytes) / kMiB);
  return buf;
}
}  // namespace

const char* placement_name(Placement p) {
  switch (p) {
    case Placement::kResident: return "resident";
    case Placement::kStreamed: return "streamed";
    case Placement::kCached: return "cached";
    case Placement::kElsewhere: return "elsewhere";
  }
  return "?";
}

std::vector<ReadSpan> plan_spans(std::vector<std::pair<uint64_t, uint64_t>> t) {
  std::sort(t.begin(), t.end());
  std::vector<ReadSpan> spans;
  for (const auto& [off, n] : t) {
    const uint64_t begin = io::align_down(off), end = io::align_up(off + n);
    if (!spans.empty()) {
      ReadSpan& last = spans.back();
      const uint64_t last_end = last.file_offset + last.length;
      if (begin <= last_end + kMaxMergeGapBytes) {
        last.length = std::max(last_end, end) - last.file_offset;
        continue;
      }
    }
    spans.push_back({begin, end - begin, 0});
  }
  uint64_t at = 0;
  for (ReadSpan& s : spans) {
    s.buffer_offset = at;
    at += s.length;
  }
  return spans;
}

namespace {
constexpr std::array<LayerTensor, 3> kExpertTensors = {LayerTensor::kFfnGateExps, LayerTensor::kFfnUpExps,
                                                       LayerTensor::kFfnDownExps};
bool is_expert_tensor(int t) {
  return std::find(kExpertTensors.begin(), kExpertTensors.end(), static_cast<LayerTensor>(t)) != kExpertTensors.end();
}

// `<arch>.expert_used_count`: the experts each token is routed to (llama_hparams validated it).
StatusOr<int> expert_used_count(const gguf::File& file) {
  FLEA_ASSIGN_OR_RETURN(std::string arch, file.get_string("general.architecture"));
  FLEA_ASSIGN_OR_RETURN(int64_t k, file.get_int(arch + ".expert_used_count"));
  if (k < 1) return invalid_argument(file.path + ": " + arch + ".expert_used_count is " + std::to_string(k) + ", expected >= 1");
  return static_cast<int>(k);
}

// The layer's read spans and tensor offsets in its buffer: every streamed tensor, or with
// `experts_apart` all but the expert tensors, which are then described per expert instead.
void set_layer_spans(const gguf::File& file, const ModelLayout& layout, LayerPlan* lp, bool experts_apart) {
  const auto& lt = layout.layers[static_cast<size_t>(lp->layer)];
  auto in_buffer = [&](int t) {
    return lt[t] != nullptr && !is_resident_vector(t) && !(experts_apart && is_expert_tensor(t));
  };
  std::vector<std::pair<uint64_t, uint64_t>> streamed;
  for (int t = 0; t < kLayerTensorCount; ++t)
    if (in_buffer(t)) streamed.emplace_back(lt[t]->file_offset, lt[t]->n_bytes);
  lp->spans = plan_spans(streamed);
  lp->buffer_bytes = lp->read_bytes = 0;
  for (const ReadSpan& s : lp->spans) {
    lp->buffer_bytes += s.length;
    lp->read_bytes += std::min(s.length, file.file_size - s.file_offset);  // last span may pass EOF
  }
  for (int t = 0; t < kLayerTensorCount; ++t) {
    lp->buffer_offset[t] = kNotInBuffer;
    if (!in_buffer(t)) continue;
    const uint64_t off = lt[t]->file_offset;
    for (const ReadSpan& s : lp->spans)
      if (off >= s.file_offset && off < s.file_offset + s.length) lp->buffer_offset[t] = s.buffer_offset + (off - s.file_offset);
  }
  lp->experts_streamed = experts_apart;
  if (!experts_apart) return;
  lp->n_expert = static_cast<int>(lt[static_cast<int>(LayerTensor::kFfnGateExps)]->ne[2]);
  for (size_t m = 0; m < kExpertTensors.size(); ++m) {
    const gguf::TensorInfo* ti = lt[static_cast<int>(kExpertTensors[m])];
    lp->expert_tensor_offset[m] = ti->file_offset;
    lp->expert_slab_bytes[m] = ti->n_bytes / static_cast<uint64_t>(lp->n_expert);
  }
  uint64_t total = 0;
  for (int e = 0; e < lp->n_expert; ++e) {
    const ExpertRead r = expert_read(*lp, e);
    for (const ReadSpan& s : r.spans) total += std::min(s.length, file.file_size - s.file_offset);
  }
  lp->expert_read_bytes = total / static_cast<uint64_t>(lp->n_expert);
}
}  // namespace

ExpertRead expert_read(const LayerPlan& lp, int expert) {
  ExpertRead r;
  for (size_t m = 0; m < r.spans.size(); ++m) {
    const uint64_t off = lp.expert_tensor_offset[m] + static_cast<uint64_t>(expert) * lp.expert_slab_bytes[m];
    const uint64_t begin = io::align_down(off), end = io::align_up(off + lp.expert_slab_bytes[m]);
    r.spans[m] = {begin, end - begin, r.buffer_bytes};
    r.data_offset[m] = r.buffer_bytes + (off - begin);
    r.buffer_bytes += end - begin;
  }
  return r;
}

StatusOr<Plan> plan_residency(const gguf::File& file, const ModelLayout& layout,
                              const ResidencyOptions& opts, const MeasuredBandwidth* bw) {
  FLEA_RETURN_IF_ERROR(validate_residency_options(opts));
  Plan p;
  p.residency = opts.residency;
  p.io = opts.io;
  p.prefetch = opts.prefetch;
  p.n_layer = static_cast<int>(layout.layers.size());
  p.vram_budget_bytes = static_cast<uint64_t>(opts.vram_budget_mb) * kMiB;
  p.ram_budget_bytes = static_cast<uint64_t>(opts.ram_budget_mb) * kMiB;

  const LayerSlice& slice = opts.slice;
  p.layer_begin = slice.begin;
  p.layer_end = slice.end_or(p.n_layer);
  if (p.layer_begin < 0 || p.layer_begin >= p.layer_end || p.layer_end > p.n_layer)
    return invalid_argument("layer slice [" + std::to_string(p.layer_begin) + ", " + std::to_string(p.layer_end) +
                            ") is not a non-empty range of the model's " + std::to_string(p.n_layer) + " layers");
  // token_embd: the embedding, and the output matrix of tied models; rope_freqs: every layer.
  const bool tied = layout.globals[static_cast<int>(GlobalTensor::kOutput)] == nullptr;
  p.global_used[static_cast<int>(GlobalTensor::kTokenEmbd)] = slice.embed || (slice.head && tied);
  p.global_used[static_cast<int>(GlobalTensor::kOutputNorm)] = slice.head;
  p.global_used[static_cast<int>(GlobalTensor::kOutput)] = slice.head;
  p.global_used[static_cast<int>(GlobalTensor::kRopeFreqs)] = true;
  for (int g = 0; g < kGlobalTensorCount; ++g)
    if (layout.globals[g] != nullptr && p.global_used[g]) p.global_bytes += layout.globals[g]->n_bytes;
  p.model_bytes = p.global_bytes;
  for (int il = 0; il < p.n_layer; ++il) {
    LayerPlan lp;
    lp.layer = il;
    if (!slice.owns(il, p.n_layer)) {  // another stage's: no bytes, no spans
      lp.placement = Placement::kElsewhere;
      for (uint64_t& off : lp.buffer_offset) off = kNotInBuffer;
      p.layers.push_back(std::move(lp));
      continue;
    }
    for (int t = 0; t < kLayerTensorCount; ++t) {
      const gguf::TensorInfo* ti = layout.layers[il][t];
      if (ti == nullptr && is_optional(static_cast<LayerTensor>(t))) continue;
      if (ti == nullptr)
        return invalid_argument("layer " + std::to_string(il) + " has no " +
                                layer_tensor_name(static_cast<LayerTensor>(t)) + " tensor");
      if (ti->file_offset + ti->n_bytes > file.file_size)
        return data_loss("tensor " + ti->name + " ends at " + std::to_string(ti->file_offset + ti->n_bytes) +
                         ", past the end of '" + file.path + "' (" + std::to_string(file.file_size) + " bytes)");
      lp.weight_bytes += ti->n_bytes;
      if (is_resident_vector(t)) lp.norm_bytes += ti->n_bytes;
    }
    lp.stream_bytes = lp.weight_bytes - lp.norm_bytes;
    set_layer_spans(file, layout, &lp, /*experts_apart=*/false);
    p.norm_bytes += lp.norm_bytes;
    p.model_bytes += lp.weight_bytes;
    p.layers.push_back(std::move(lp));
  }

  // ---- weight memory (--vram-budget-mb) ----
  const uint64_t fixed = p.global_bytes + p.norm_bytes;
  const std::string fixed_what = "the always-resident tensors (token_embd, output, output_norm and " +
                                 std::to_string(p.layer_end - p.layer_begin) + " layers' norms) need " + mb(fixed);
  bool has_experts = false;
  for (const auto& lt : layout.layers) has_experts |= lt[static_cast<int>(LayerTensor::kFfnGateExps)] != nullptr;
  if (has_experts) { FLEA_ASSIGN_OR_RETURN(p.n_expert_used, expert_used_count(file)); }

  // ---- the machine: what `auto` may take without a budget, and what any plan may take ----
  const bool machine = opts.host_memory.has_value();
  const uint64_t available = machine ? opts.host_memory->available_bytes() : 0;
  const uint64_t reserved = opts.kv_bytes + opts.scratch_bytes;
  p.host_available_bytes = available;
  p.host_reserved_bytes = machine ? reserved : 0;
  p.host_margin_bytes = machine ? host_memory_margin(available) : 0;
  // Host staging when layers k.. stream (the ring of their largest buffer, the expert buffers of
  // their MoE layers), or all of --ram-budget-mb, which bounds it.
  std::vector<uint64_t> stream_slot(p.layers.size()), expert_layer_slot(p.layers.size(), 0);
  for (LayerPlan& lp : p.layers) {
    stream_slot[static_cast<size_t>(lp.layer)] = lp.buffer_bytes;
    if (lp.placement == Placement::kElsewhere || opts.expert_residency != "expert" ||
        layout.layers[static_cast<size_t>(lp.layer)][static_cast<int>(LayerTensor::kFfnGateExps)] == nullptr)
      continue;
    LayerPlan split = lp;
    set_layer_spans(file, layout, &split, /*experts_apart=*/true);
    stream_slot[static_cast<size_t>(lp.layer)] = split.buffer_bytes;
    for (int e = 0; e < split.n_expert; ++e)
      expert_layer_slot[static_cast<size_t>(lp.layer)] =
          std::max(expert_layer_slot[static_cast<size_t>(lp.layer)], expert_read(split, e).buffer_bytes);
  }
  auto staging_from = [&](int k) -> uint64_t {
    if (k >= p.n_layer) return 0;
    if (p.ram_budget_bytes > 0) return p.ram_budget_bytes;
    uint64_t slot = 0, expert_slot = 0;
    int expert_layers = 0;
    for (int il = k; il < p.n_layer; ++il) {
      slot = std::max(slot, stream_slot[static_cast<size_t>(il)]);
      expert_slot = std::max(expert_slot, expert_layer_slot[static_cast<size_t>(il)]);
      expert_layers += expert_layer_slot[static_cast<size_t>(il)] > 0;
    }
    const uint64_t ring = static_cast<uint64_t>(std::min(opts.prefetch + 1, p.n_layer - k)) * slot;
    if (expert_layers == 0) return ring;
    const uint64_t cached = opts.expert_cache > 0 ? static_cast<uint64_t>(opts.expert_cache) * static_cast<uint64_t>(expert_layers) : 0;
    return ring + (static_cast<uint64_t>(p.n_expert_used) + cached) * expert_slot;
  };
  // The most leading layers resident such that fixed + those + staging fits available - KV -
  // scratch - margin; the budget is that room less the staging.
  struct AutoFit {
    uint64_t budget = 0, staging = 0;
    int n_resident = 0;
  };
  auto fit_machine = [&]() -> StatusOr<AutoFit> {
    const uint64_t margin = p.host_margin_bytes;
    const uint64_t room = available > reserved + margin ? available - reserved - margin : 0;
    uint64_t prefix = 0;
    std::vector<uint64_t> prefix_at(p.layers.size() + 1, 0);
    for (const LayerPlan& lp : p.layers) prefix_at[static_cast<size_t>(lp.layer) + 1] = prefix += lp.buffer_bytes;
    for (int k = p.n_layer; k >= 0; --k) {
      const uint64_t staging = staging_from(k);
      if (fixed + prefix_at[static_cast<size_t>(k)] + staging <= room) return AutoFit{room - staging, staging, k};
    }
    const uint64_t need = fixed + staging_from(0) + reserved + margin;
    return resource_exhausted(
        "--residency auto: the machine has " + opts.host_memory->describe() + ", too little even to stream every layer: " +
        fixed_what + ", staging (--prefetch " + std::to_string(opts.prefetch) + ") " + human_bytes(staging_from(0)) + ", KV cache " +
        human_bytes(opts.kv_bytes) + ", scratch " + human_bytes(opts.scratch_bytes) + ", margin " + human_bytes(margin) + " = " + human_bytes(need) +
        "; free memory, or lower the context, --prefetch or --ram-budget-mb");
  };
  if (opts.vram_budget_mb > 0) {
    p.vram_budget_source = "--vram-budget-mb " + std::to_string(opts.vram_budget_mb);
  } else if (opts.residency != "auto") {
    p.vram_budget_source = "unlimited (--residency " + opts.residency + " does not use it)";
  } else if (!machine) {
    p.vram_budget_source = "unlimited (no --vram-budget-mb and the machine's memory was not probed)";
  } else {
    FLEA_ASSIGN_OR_RETURN(AutoFit fit, fit_machine());
    p.vram_budget_bytes = fit.budget;
    p.vram_budget_source = opts.host_memory->describe() + " - KV " + human_bytes(opts.kv_bytes) + " - scratch " +
                           human_bytes(opts.scratch_bytes) + " - staging " + human_bytes(fit.staging) + " - margin " +
                           human_bytes(p.host_margin_bytes) + " = " + human_bytes(fit.budget);
  }
  uint64_t used = fixed;
  if (opts.residency == "full") {
    for (LayerPlan& lp : p.layers) used += lp.buffer_bytes;
    if (p.vram_budget_bytes > 0 && used > p.vram_budget_bytes)
      return resource_exhausted("--residency full needs " + mb(used) + " of weight memory but --vram-budget-mb is " +
                                std::to_string(opts.vram_budget_mb) + "; minimum --vram-budget-mb " +
                                std::to_string(ceil_mb(used)) + " (or use --residency auto|transient)");
  } else {
    if (p.vram_budget_bytes > 0 && fixed > p.vram_budget_bytes)
      return resource_exhausted("--vram-budget-mb " + std::to_string(opts.vram_budget_mb) + " is too small: " +
                                fixed_what + "; minimum --vram-budget-mb " + std::to_string(ceil_mb(fixed)));
    bool filling = opts.residency == "auto";
    for (LayerPlan& lp : p.layers) {
      if (lp.placement == Placement::kElsewhere) continue;
      const bool fits = p.vram_budget_bytes == 0 || used + lp.buffer_bytes <= p.vram_budget_bytes;
      if (filling && fits) {
        used += lp.buffer_bytes;
      } else {
        filling = false;  // whole layers in order: the first that does not fit ends the run
        lp.placement = Placement::kStreamed;
      }
    }
  }
  p.weight_memory_bytes = used;

  // ---- expert-granular residency: streamed MoE layers read their experts one by one ----
  p.expert_residency = opts.expert_residency;
  p.expert_policy = opts.expert_policy;
  if (has_experts) {
    for (LayerPlan& lp : p.layers) {
      if (lp.placement != Placement::kStreamed || opts.expert_residency != "expert" ||
          layout.layers[static_cast<size_t>(lp.layer)][static_cast<int>(LayerTensor::kFfnGateExps)] == nullptr)
        continue;
      set_layer_spans(file, layout, &lp, /*experts_apart=*/true);
      ++p.n_expert_layers;
      p.n_expert = std::max(p.n_expert, lp.n_expert);
      for (int e = 0; e < lp.n_expert; ++e) p.expert_slot_bytes = std::max(p.expert_slot_bytes, expert_read(lp, e).buffer_bytes);
    }
  }
  if (p.n_expert_layers > 0) {
    p.expert_scratch_slots = p.n_expert_used;
    if (opts.expert_cache >= 0) p.expert_cache_slots = std::min(opts.expert_cache, p.n_expert) * p.n_expert_layers;
  }
  auto expert_pool = [&] {
    return static_cast<uint64_t>(p.expert_cache_slots + p.expert_scratch_slots) * p.expert_slot_bytes;
  };

  // ---- staging ring + cache (--ram-budget-mb) ----
  // The dense part of a layer is read every token, a cached expert only when routed to (k/n of the
  // tokens under uniform routing), so whole dense parts are cached first and experts get the rest,
  // unless --expert-cache reserves the expert cache first.
  auto ring_for = [&](int n_streamed, uint64_t* slot_bytes) {
    *slot_bytes = 0;
    for (const LayerPlan& lp : p.layers)
      if (lp.placement == Placement::kStreamed) *slot_bytes = std::max(*slot_bytes, lp.buffer_bytes);
    return std::min(opts.prefetch + 1, n_streamed);
  };
  int n_streamed = 0;
  for (const LayerPlan& lp : p.layers) n_streamed += lp.placement == Placement::kStreamed;
  uint64_t slot = 0;
  int slots = ring_for(n_streamed, &slot);
  if (p.ram_budget_bytes > 0 && n_streamed > 0) {
    const uint64_t ring = static_cast<uint64_t>(slots) * slot;
    const uint64_t need = ring + expert_pool();
    if (need > p.ram_budget_bytes) {
      const std::string experts =
          p.expert_scratch_slots == 0 ? std::string()
          : " and " + std::to_string(p.expert_cache_slots + p.expert_scratch_slots) + " expert buffers of " +
                mb(p.expert_slot_bytes) + " (" + std::to_string(p.expert_scratch_slots) + " for the routed experts" +
                (p.expert_cache_slots > 0 ? ", " + std::to_string(p.expert_cache_slots) + " cached" : "") + ")";
      return resource_exhausted(
          "--ram-budget-mb " + std::to_string(opts.ram_budget_mb) + " is too small: --prefetch " +
          std::to_string(opts.prefetch) + " needs " + std::to_string(slots) + " staging buffers of " + mb(slot) +
          " (the largest streamed layer)" + experts + " = " + mb(need) + "; minimum --ram-budget-mb " +
          std::to_string(ceil_mb(need)) +
          (opts.prefetch > 0 ? " (or " + std::to_string(ceil_mb(need - ring + slot)) + " with --prefetch 0)" : std::string()));
    }
    uint64_t left = p.ram_budget_bytes - need;
    for (LayerPlan& lp : p.layers) {
      if (lp.placement != Placement::kStreamed || lp.buffer_bytes > left) continue;
      lp.placement = Placement::kCached;
      left -= lp.buffer_bytes;
      p.cache_bytes += lp.buffer_bytes;
    }
    n_streamed = 0;
    for (const LayerPlan& lp : p.layers) n_streamed += lp.placement == Placement::kStreamed;
    const uint64_t ring_before = ring;
    slots = ring_for(n_streamed, &slot);
    left += ring_before - static_cast<uint64_t>(slots) * slot;  // a ring that shrank gives its bytes back
    if (p.n_expert_layers > 0 && opts.expert_cache < 0) {
      p.expert_cache_slots = static_cast<int>(std::min<uint64_t>(
          left / p.expert_slot_bytes, static_cast<uint64_t>(p.n_expert) * static_cast<uint64_t>(p.n_expert_layers)));
    }
  }
  // Shared out evenly; the first layers take the remainder, one each.
  if (p.n_expert_layers > 0) {
    p.expert_cache_per_layer = p.expert_cache_slots / p.n_expert_layers;
    int extra = p.expert_cache_slots % p.n_expert_layers;
    for (LayerPlan& lp : p.layers) {
      if (!lp.experts_streamed) continue;
      lp.expert_cache = p.expert_cache_per_layer + (extra > 0 ? 1 : 0);
      extra -= extra > 0 ? 1 : 0;
    }
  }
  p.ring_slots = slots;
  p.slot_bytes = slots > 0 ? slot : 0;
  p.ring_bytes = static_cast<uint64_t>(p.ring_slots) * p.slot_bytes;
  p.expert_pool_bytes = expert_pool();
  p.host_staging_bytes = p.ring_bytes + p.cache_bytes + p.expert_pool_bytes;

  for (const LayerPlan& lp : p.layers) {
    switch (lp.placement) {
      case Placement::kResident:
        ++p.n_resident;
        p.resident_layer_bytes += lp.buffer_bytes;
        break;
      case Placement::kStreamed:
        ++p.n_streamed;
        p.dense_bytes_per_token += lp.read_bytes;
        break;
      case Placement::kCached:
        ++p.n_cached;
        p.first_token_bytes += lp.read_bytes;
        break;
      case Placement::kElsewhere:
        break;
    }
    if (lp.experts_streamed) p.expert_bytes_per_token += static_cast<uint64_t>(p.n_expert_used) * lp.expert_read_bytes;
  }
  // Each layer's routed experts (the same count per layer) hit with probability cache/n.
  if (p.n_expert_layers > 0)
    p.predicted_expert_hit_rate = static_cast<double>(p.expert_cache_slots) / (static_cast<double>(p.n_expert) * p.n_expert_layers);
  p.streamed_bytes_per_token = p.dense_bytes_per_token +
      static_cast<uint64_t>(std::llround((1.0 - p.predicted_expert_hit_rate) * static_cast<double>(p.expert_bytes_per_token)));
  p.first_token_bytes += p.dense_bytes_per_token + p.expert_bytes_per_token;

  // What one token's compute touches: every tensor, but only n_expert_used of each MoE layer's experts.
  uint64_t& active_bytes = p.active_bytes;
  active_bytes = p.global_bytes;
  for (const LayerPlan& lp : p.layers) {
    if (lp.placement == Placement::kElsewhere) continue;
    uint64_t expert_bytes = 0;
    for (LayerTensor t : kExpertTensors) {
      const gguf::TensorInfo* ti = layout.layers[static_cast<size_t>(lp.layer)][static_cast<int>(t)];
      if (ti != nullptr) expert_bytes += ti->n_bytes;
    }
    const int n_exp = expert_bytes > 0 ? static_cast<int>(layout.layers[static_cast<size_t>(lp.layer)][static_cast<int>(LayerTensor::kFfnGateExps)]->ne[2]) : 1;
    active_bytes += lp.weight_bytes - expert_bytes + expert_bytes / static_cast<uint64_t>(n_exp) * static_cast<uint64_t>(p.n_expert_used);
  }

  // ---- the machine: refuse a plan that needs more than it has ----
  const bool mapped = opts.io.find("mmap") != std::string::npos;
  const uint64_t demand = p.weight_memory_bytes + p.host_staging_bytes + reserved;
  if (machine && !mapped && demand > available) {
    std::string asked = "--residency " + opts.residency;
    if (opts.vram_budget_mb > 0 && opts.residency == "auto") asked += " --vram-budget-mb " + std::to_string(opts.vram_budget_mb);
    if (opts.ram_budget_mb > 0) asked += " --ram-budget-mb " + std::to_string(opts.ram_budget_mb);
    std::string instead;
    StatusOr<AutoFit> fit = fit_machine();
    if (opts.residency == "transient" || !fit.ok()) {
      instead = opts.ram_budget_mb > 0 ? "lower --ram-budget-mb (staging and cache)" : "lower --prefetch or the context";
    } else {
      const std::string keep = " (it keeps " + std::to_string(fit->n_resident) + " of " + std::to_string(p.n_layer) +
                               " layers resident)";
      instead = opts.residency == "full"
                    ? "use --residency auto without --vram-budget-mb" + keep
                    : "pass --vram-budget-mb " + std::to_string(fit->budget / kMiB) + " or leave it out" + keep;
    }
    return resource_exhausted(asked + " needs " + human_bytes(demand) + " of host memory (weights " + human_bytes(p.weight_memory_bytes) +
                              " + staging " + human_bytes(p.host_staging_bytes) + " + KV cache " + human_bytes(opts.kv_bytes) +
                              " + scratch " + human_bytes(opts.scratch_bytes) + ") but the machine has " + human_bytes(available) + " (" +
                              opts.host_memory->describe() + "); " + instead);
  }

  p.disk_gb_s = bw != nullptr && bw->disk_gb_s > 0 ? bw->disk_gb_s : kDefaultDiskGbS;
  p.mem_gb_s = bw != nullptr && bw->mem_gb_s > 0 ? bw->mem_gb_s : kDefaultMemGbS;
  p.bandwidth_source = bw != nullptr && !bw->source.empty() ? bw->source : "defaults (not measured)";
  // 1 GB/s moves 1 byte per ns.
  p.predicted_io_ms = static_cast<double>(p.streamed_bytes_per_token) / p.disk_gb_s / 1e6;
  p.predicted_compute_ms = static_cast<double>(active_bytes) / p.mem_gb_s / 1e6;
  p.predicted_ms_per_token = p.prefetch > 0 ? std::max(p.predicted_io_ms, p.predicted_compute_ms)
                                            : p.predicted_io_ms + p.predicted_compute_ms;
  return p;
}

std::string Plan::to_string() const {
  std::string s;
  char line[256];
  std::snprintf(line, sizeof(line), "residency plan: %s, io %s, prefetch %d, %d layers (%d resident, %d streamed, %d cached)\n",
                residency.c_str(), io.c_str(), prefetch, n_layer, n_resident, n_streamed, n_cached);
  s += line;
  if (layer_end - layer_begin != n_layer || !global_used[static_cast<int>(GlobalTensor::kOutputNorm)] ||
      !global_used[static_cast<int>(GlobalTensor::kTokenEmbd)]) {
    std::snprintf(line, sizeof(line), "  pipeline stage layers [%d, %d)%s%s; the other layers are read by other ranks\n",
                  layer_begin, layer_end, global_used[static_cast<int>(GlobalTensor::kTokenEmbd)] ? " + token_embd" : "",
                  global_used[static_cast<int>(GlobalTensor::kOutputNorm)] ? " + output head" : "");
    s += line;
  }
  s += "  weight memory  " + mb(weight_memory_bytes) + " (globals " + mb(global_bytes) + ", norms " + mb(norm_bytes) +
       ", resident layers " + mb(resident_layer_bytes) + ") of budget " +
       (vram_budget_bytes ? mb(vram_budget_bytes) : std::string("unlimited")) + "\n";
  s += "  budget from    " + vram_budget_source + "\n";
  std::snprintf(line, sizeof(line), "  host staging   %s (ring %d x %s, cache %s) of budget %s\n", mb(host_staging_bytes).c_str(),
                ring_slots, mb(slot_bytes).c_str(), mb(cache_bytes).c_str(),
                ram_budget_bytes ? mb(ram_budget_bytes).c_str() : "unlimited");
  s += line;
  std::snprintf(line, sizeof(line), "  per token      %" PRIu64 " bytes streamed (%s; first token %s)\n",
                streamed_bytes_per_token, mb(streamed_bytes_per_token).c_str(), mb(first_token_bytes).c_str());
  s += line;
  std::snprintf(line, sizeof(line), "  predicted      %.3f ms/token (io %.3f ms at %.2f GB/s, compute %.3f ms at %.2f GB/s; %s)\n",
                predicted_ms_per_token, predicted_io_ms, disk_gb_s, predicted_compute_ms, mem_gb_s, bandwidth_source.c_str());
  s += line;
  if (n_expert_layers > 0) {
    std::snprintf(line, sizeof(line),
                  "  experts        %d layers read %d of %d experts after routing; cache %d (%d+ per layer, %s), %d scratch, "
                  "%s of buffers of %s\n",
                  n_expert_layers, n_expert_used, n_expert, expert_cache_slots, expert_cache_per_layer, expert_policy.c_str(),
                  expert_scratch_slots, mb(expert_pool_bytes).c_str(), mb(expert_slot_bytes).c_str());
    s += line;
    std::snprintf(line, sizeof(line),
                  "  per token      dense %s + experts %s uncached; predicted hit rate %.3f (uniform routing)\n",
                  mb(dense_bytes_per_token).c_str(), mb(expert_bytes_per_token).c_str(), predicted_expert_hit_rate);
    s += line;
  }
  for (const LayerPlan& lp : layers) {
    std::snprintf(line, sizeof(line), "  layer %3d  %-8s  %12" PRIu64 " bytes  read %12" PRIu64 " in %zu span(s)%s\n", lp.layer,
                  placement_name(lp.placement), lp.weight_bytes, lp.read_bytes, lp.spans.size(),
                  lp.experts_streamed ? " + experts one by one" : "");
    s += line;
  }
  return s;
}

std::string Plan::to_json() const {
  nlohmann::json j;
  j["residency"] = residency;
  j["io"] = io;
  j["prefetch"] = prefetch;
  j["n_layer"] = n_layer;
  j["layer_begin"] = layer_begin;
  j["layer_end"] = layer_end;
  j["n_resident"] = n_resident;
  j["n_streamed"] = n_streamed;
  j["n_cached"] = n_cached;
  j["model_bytes"] = model_bytes;
  j["active_bytes"] = active_bytes;
  j["global_bytes"] = global_bytes;
  j["norm_bytes"] = norm_bytes;
  j["resident_layer_bytes"] = resident_layer_bytes;
  j["weight_memory_bytes"] = weight_memory_bytes;
  j["ring_slots"] = ring_slots;
  j["slot_bytes"] = slot_bytes;
  j["ring_bytes"] = ring_bytes;
  j["cache_bytes"] = cache_bytes;
  j["host_staging_bytes"] = host_staging_bytes;
  j["vram_budget_bytes"] = vram_budget_bytes;
  j["ram_budget_bytes"] = ram_budget_bytes;
  j["vram_budget_source"] = vram_budget_source;
  j["host_available_bytes"] = host_available_bytes;
  j["host_reserved_bytes"] = host_reserved_bytes;
  j["host_margin_bytes"] = host_margin_bytes;
  j["streamed_bytes_per_token"] = streamed_bytes_per_token;
  j["first_token_bytes"] = first_token_bytes;
  j["disk_gb_s"] = disk_gb_s;
  j["mem_gb_s"] = mem_gb_s;
  j["bandwidth_source"] = bandwidth_source;
  j["predicted_io_ms"] = predicted_io_ms;
  j["predicted_compute_ms"] = predicted_compute_ms;
  j["predicted_ms_per_token"] = predicted_ms_per_token;
  if (n_expert_used > 0) {
    j["experts"] = {{"residency", expert_residency},
                    {"policy", expert_policy},
                    {"n_expert", n_expert},
                    {"n_expert_used", n_expert_used},
                    {"layers", n_expert_layers},
                    {"slot_bytes", expert_slot_bytes},
                    {"cache_slots", expert_cache_slots},
                    {"cache_per_layer", n_expert_layers > 0 ? static_cast<double>(expert_cache_slots) / n_expert_layers : 0.0},
                    {"scratch_slots", expert_scratch_slots},
                    {"pool_bytes", expert_pool_bytes},
                    {"dense_bytes_per_token", dense_bytes_per_token},
                    {"expert_bytes_per_token", expert_bytes_per_token},
                    {"predicted_hit_rate", predicted_expert_hit_rate}};
  }
  nlohmann::json layers_j = nlohmann::json::array();
  for (const LayerPlan& lp : layers) {
    nlohmann::json spans = nlohmann::json::array();
    for (const ReadSpan& sp : lp.spans) spans.push_back({{"file_offset", sp.file_offset}, {"length", sp.length}});
    layers_j.push_back({{"layer", lp.layer}, {"placement", placement_name(lp.placement)},
                        {"weight_bytes", lp.weight_bytes}, {"buffer_bytes", lp.buffer_bytes}, {"read_bytes", lp.read_bytes}, {"spans", spans}});
    if (lp.experts_streamed) {
      layers_j.back()["experts_streamed"] = true;
      layers_j.back()["expert_cache"] = lp.expert_cache;
      layers_j.back()["expert_read_bytes"] = lp.expert_read_bytes;
    }
  }
  j["layers"] = layers_j;
  return j.dump();
}

}  // namespace flea
