#include "residency/plan.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "io/io_backend.h"

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

  for (const gguf::TensorInfo* g : layout.globals)
    if (g != nullptr) p.global_bytes += g->n_bytes;
  p.model_bytes = p.global_bytes;
  for (int il = 0; il < p.n_layer; ++il) {
    LayerPlan lp;
    lp.layer = il;
    std::vector<std::pair<uint64_t, uint64_t>> streamed;
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
      else streamed.emplace_back(ti->file_offset, ti->n_bytes);
    }
    lp.stream_bytes = lp.weight_bytes - lp.norm_bytes;
    lp.spans = plan_spans(streamed);
    for (const ReadSpan& s : lp.spans) {
      lp.buffer_bytes += s.length;
      lp.read_bytes += std::min(s.length, file.file_size - s.file_offset);  // last span may pass EOF
    }
    for (int t = 0; t < kLayerTensorCount; ++t) {
      lp.buffer_offset[t] = kNotInBuffer;
      if (is_resident_vector(t) || layout.layers[il][t] == nullptr) continue;
      const uint64_t off = layout.layers[il][t]->file_offset;
      for (const ReadSpan& s : lp.spans)
        if (off >= s.file_offset && off < s.file_offset + s.length)
          lp.buffer_offset[t] = s.buffer_offset + (off - s.file_offset);
    }
    p.norm_bytes += lp.norm_bytes;
    p.model_bytes += lp.weight_bytes;
    p.layers.push_back(std::move(lp));
  }

  // ---- weight memory (--vram-budget-mb) ----
  const uint64_t fixed = p.global_bytes + p.norm_bytes;
  const std::string fixed_what = "the always-resident tensors (token_embd, output, output_norm and " +
                                 std::to_string(p.n_layer) + " layers' norms) need " + mb(fixed);
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

  // ---- staging ring + cache (--ram-budget-mb) ----
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
    if (ring > p.ram_budget_bytes) {
      return resource_exhausted(
          "--ram-budget-mb " + std::to_string(opts.ram_budget_mb) + " is too small: --prefetch " +
          std::to_string(opts.prefetch) + " needs " + std::to_string(slots) + " staging buffers of " + mb(slot) +
          " (the largest streamed layer) = " + mb(ring) + "; minimum --ram-budget-mb " + std::to_string(ceil_mb(ring)) +
          (opts.prefetch > 0 ? " (or " + std::to_string(ceil_mb(slot)) + " with --prefetch 0)" : std::string()));
    }
    uint64_t left = p.ram_budget_bytes - ring;
    for (LayerPlan& lp : p.layers) {
      if (lp.placement != Placement::kStreamed || lp.buffer_bytes > left) continue;
      lp.placement = Placement::kCached;
      left -= lp.buffer_bytes;
      p.cache_bytes += lp.buffer_bytes;
    }
    n_streamed = 0;
    for (const LayerPlan& lp : p.layers) n_streamed += lp.placement == Placement::kStreamed;
    slots = ring_for(n_streamed, &slot);
  }
  p.ring_slots = slots;
  p.slot_bytes = slots > 0 ? slot : 0;
  p.ring_bytes = static_cast<uint64_t>(p.ring_slots) * p.slot_bytes;
  p.host_staging_bytes = p.ring_bytes + p.cache_bytes;

  for (const LayerPlan& lp : p.layers) {
    switch (lp.placement) {
      case Placement::kResident:
        ++p.n_resident;
        p.resident_layer_bytes += lp.buffer_bytes;
        break;
      case Placement::kStreamed:
        ++p.n_streamed;
        p.streamed_bytes_per_token += lp.read_bytes;
        break;
      case Placement::kCached:
        ++p.n_cached;
        p.first_token_bytes += lp.read_bytes;
        break;
    }
  }
  p.first_token_bytes += p.streamed_bytes_per_token;

  p.disk_gb_s = bw != nullptr && bw->disk_gb_s > 0 ? bw->disk_gb_s : kDefaultDiskGbS;
  p.mem_gb_s = bw != nullptr && bw->mem_gb_s > 0 ? bw->mem_gb_s : kDefaultMemGbS;
  p.bandwidth_source = bw != nullptr && !bw->source.empty() ? bw->source : "defaults (not measured)";
  // 1 GB/s moves 1 byte per ns.
  p.predicted_io_ms = static_cast<double>(p.streamed_bytes_per_token) / p.disk_gb_s / 1e6;
  p.predicted_compute_ms = static_cast<double>(p.model_bytes) / p.mem_gb_s / 1e6;
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
  s += "  weight memory  " + mb(weight_memory_bytes) + " (globals " + mb(global_bytes) + ", norms " + mb(norm_bytes) +
       ", resident layers " + mb(resident_layer_bytes) + ") of budget " +
       (vram_budget_bytes ? mb(vram_budget_bytes) : std::string("unlimited")) + "\n";
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
  for (const LayerPlan& lp : layers) {
    std::snprintf(line, sizeof(line), "  layer %3d  %-8s  %12" PRIu64 " bytes  read %12" PRIu64 " in %zu span(s)\n", lp.layer,
                  placement_name(lp.placement), lp.weight_bytes, lp.read_bytes, lp.spans.size());
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
  j["n_resident"] = n_resident;
  j["n_streamed"] = n_streamed;
  j["n_cached"] = n_cached;
  j["model_bytes"] = model_bytes;
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
  j["streamed_bytes_per_token"] = streamed_bytes_per_token;
  j["first_token_bytes"] = first_token_bytes;
  j["disk_gb_s"] = disk_gb_s;
  j["mem_gb_s"] = mem_gb_s;
  j["bandwidth_source"] = bandwidth_source;
  j["predicted_io_ms"] = predicted_io_ms;
  j["predicted_compute_ms"] = predicted_compute_ms;
  j["predicted_ms_per_token"] = predicted_ms_per_token;
  nlohmann::json layers_j = nlohmann::json::array();
  for (const LayerPlan& lp : layers) {
    nlohmann::json spans = nlohmann::json::array();
    for (const ReadSpan& sp : lp.spans) spans.push_back({{"file_offset", sp.file_offset}, {"length", sp.length}});
    layers_j.push_back({{"layer", lp.layer}, {"placement", placement_name(lp.placement)},
                        {"weight_bytes", lp.weight_bytes}, {"buffer_bytes", lp.buffer_bytes}, {"read_bytes", lp.read_bytes}, {"spans", spans}});
  }
  j["layers"] = layers_j;
  return j.dump();
}

}  // namespace flea
