#include "compute/vram/vram_arena.h"

#include <algorithm>
#include <cstdio>

namespace flea::vram {
namespace {

std::string mb(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f MB", to_mb(bytes));
  return buf;
}

}  // namespace

uint64_t kv_vram_bytes(int64_t n_layer, int64_t n_ctx, int64_t n_embd_kv, bool kv_host) {
  FLEA_CHECK(n_layer >= 0 && n_ctx >= 0 && n_embd_kv >= 0, "KV sizes must be non-negative");
  const uint64_t one = align_up(static_cast<uint64_t>(n_ctx) * static_cast<uint64_t>(n_embd_kv) * 4);  // K or V
  const uint64_t layers = kv_host ? (n_layer > 0 ? 1 : 0) : static_cast<uint64_t>(n_layer);
  return layers * 2 * one;
}

uint64_t kv_host_bytes(int64_t n_layer, int64_t n_ctx, int64_t n_embd_kv) {
  FLEA_CHECK(n_layer >= 0 && n_ctx >= 0 && n_embd_kv >= 0, "KV sizes must be non-negative");
  return static_cast<uint64_t>(n_layer) * 2 * static_cast<uint64_t>(n_ctx) * static_cast<uint64_t>(n_embd_kv) * 4;
}

StatusOr<uint64_t> VramArena::reserve(const std::string& what, uint64_t bytes) {
  const uint64_t size = align_up(bytes);
  if (budget_bytes_ != 0 && used_bytes_ + size > budget_bytes_) {
    return resource_exhausted("VRAM budget of " + mb(budget_bytes_) + " exceeded: " + what + " needs " + mb(size) +
                              " with " + mb(used_bytes_) + " already reserved (at least " +
                              std::to_string(ceil_mb(used_bytes_ + size)) + " MB needed)");
  }
  const uint64_t offset = used_bytes_;
  used_bytes_ += size;
  peak_bytes_ = std::max(peak_bytes_, used_bytes_);
  regions_.push_back(Region{what, offset, size});
  return offset;
}

std::string VramPlan::to_string() const {
  std::string s = "vram plan: " + std::to_string(std::count(resident.begin(), resident.end(), true)) +
                  " resident layers (" + mb(resident_bytes) + "), " + std::to_string(streamed.size()) +
                  " streamed through " + std::to_string(ring_slots) + " slots of " + mb(slot_bytes) +
                  " (lookahead " + std::to_string(lookahead) + "), fixed " + mb(fixed_bytes) + ", total " +
                  mb(total_bytes) + ", minimum " + mb(minimum_bytes) + ", H2D per token " +
                  mb(streamed_bytes_per_token) +
                  (kv_host ? ", KV host (one layer's working K/V in VRAM: " + mb(kv_bytes) + ")"
                           : ", KV resident (" + mb(kv_bytes) + " in VRAM)");
  return s;
}

StatusOr<VramPlan> plan_vram(const VramRequest& req) {
  const size_t n_layer = req.layer_bytes.size();
  FLEA_CHECK(req.may_be_resident.size() == n_layer, "may_be_resident has one entry per layer");
  FLEA_CHECK(req.prefetch >= 0, "prefetch must be >= 0");
  const uint64_t fixed = req.global_bytes + req.norm_bytes + req.kv_bytes + req.scratch_bytes;
  const auto within = [&](uint64_t total) { return req.budget_bytes == 0 || total <= req.budget_bytes; };

  // Layout with the first `k` allowed layers resident.
  auto layout = [&](size_t k) {
    VramPlan p;
    p.resident.assign(n_layer, false);
    size_t taken = 0;
    for (size_t il = 0; il < n_layer; ++il) {
      if (req.may_be_resident[il] && taken < k) {
        p.resident[il] = true;
        p.resident_bytes += req.layer_bytes[il];
        ++taken;
      } else {
        p.streamed.push_back(static_cast<int>(il));
        p.slot_bytes = std::max(p.slot_bytes, req.layer_bytes[il]);
        p.streamed_bytes_per_token += req.layer_bytes[il];
      }
    }
    p.ring_slots = p.streamed.empty() ? 0 : std::min<int>(req.prefetch + 1, static_cast<int>(p.streamed.size()));
    p.lookahead = p.ring_slots == 0 ? 0 : std::min(req.prefetch, p.ring_slots - 1);
    p.ring_bytes = static_cast<uint64_t>(p.ring_slots) * p.slot_bytes;
    p.kv_host = req.kv_host;
    p.kv_bytes = req.kv_bytes;
    p.fixed_bytes = fixed;
    p.total_bytes = fixed + p.resident_bytes + p.ring_bytes;
    return p;
  };

  const size_t n_allowed = static_cast<size_t>(std::count(req.may_be_resident.begin(), req.may_be_resident.end(), true));
  const VramPlan all_streamed = layout(0);
  const std::string parts = "globals " + mb(req.global_bytes) + ", norms " + mb(req.norm_bytes) + ", KV cache " +
                            (req.kv_host ? "(--kv host: one layer) " : "") + mb(req.kv_bytes) + ", scratch " +
                            mb(req.scratch_bytes);
  // Only worth suggesting when it would free something: more than one layer's cache in VRAM.
  const std::string kv_hint = !req.kv_host && n_layer > 1 && req.kv_bytes > 0
                                  ? "; --kv host keeps only one layer's KV cache in VRAM"
                                  : "";
  if (req.require_all_resident) {
    FLEA_CHECK(n_allowed == n_layer, "full residency needs every layer allowed in VRAM");
    VramPlan p = layout(n_layer);
    p.minimum_bytes = p.total_bytes;
    if (!within(p.total_bytes)) {
      return resource_exhausted("--residency full needs " + std::to_string(ceil_mb(p.total_bytes)) +
                                " MB of VRAM (" + parts + ", layers " + mb(p.resident_bytes) +
                                ") but --vram-budget-mb is " + std::to_string(ceil_mb(req.budget_bytes)) +
                                "; use --residency auto or transient to stream layers" + kv_hint);
    }
    return p;
  }
  // The ring is sized by the largest streamed layer, so fewer resident layers can need more VRAM:
  // the minimum is taken over every choice of k, and the largest k that fits wins.
  uint64_t minimum = UINT64_MAX;
  for (size_t k = 0; k <= n_allowed; ++k) minimum = std::min(minimum, layout(k).total_bytes);
  for (size_t k = n_allowed + 1; k-- > 0;) {
    VramPlan p = layout(k);
    if (within(p.total_bytes)) {
      p.minimum_bytes = minimum;
      return p;
    }
  }
  return resource_exhausted("--vram-budget-mb " + std::to_string(ceil_mb(req.budget_bytes)) +
                            " is too small: streaming every layer needs at least " +
                            std::to_string(ceil_mb(minimum)) + " MB (" + parts + ", ring " +
                            std::to_string(all_streamed.ring_slots) + " x " + mb(all_streamed.slot_bytes) +
                            " for prefetch " + std::to_string(req.prefetch) + ")" + kv_hint);
}

LayerRing::LayerRing(int n_slots, int lookahead) : n_slots_(n_slots), lookahead_(lookahead) {
  FLEA_CHECK(n_slots >= 1, "a ring needs at least one slot");
  FLEA_CHECK(lookahead >= 0 && lookahead < n_slots, "lookahead must leave the computing layer's slot alone");
}

void LayerRing::mark_issued(int64_t visit) {
  FLEA_CHECK(visit == next_issue_, "ring copies are issued in visit order");
  ++next_issue_;
}

SimResult simulate_stream(const std::vector<int64_t>& copy_ns, const std::vector<int64_t>& compute_ns,
                          int n_slots, int lookahead) {
  FLEA_CHECK(copy_ns.size() == compute_ns.size(), "one copy and one compute time per visit");
  const int64_t n = static_cast<int64_t>(copy_ns.size());
  LayerRing ring(n_slots, lookahead);
  SimResult r;
  r.copy_start_ns.assign(static_cast<size_t>(n), -1);
  r.copy_end_ns.assign(static_cast<size_t>(n), -1);
  r.compute_start_ns.assign(static_cast<size_t>(n), -1);
  r.compute_end_ns.assign(static_cast<size_t>(n), -1);
  r.issued_during_visit.assign(static_cast<size_t>(n), -1);
  int64_t host = 0, copy_free = 0, compute_free = 0;
  int64_t computed = 0;  // computes enqueued so far (they finish in order)

  auto issue = [&](int64_t c, int64_t driving) {
    if (c >= n) { ring.mark_issued(c); return; }  // past the end of the simulated run
    if (ring.lookahead() == 0 && c > 0) host = std::max(host, r.compute_end_ns[static_cast<size_t>(c - 1)]);
    int64_t start = std::max(host, copy_free);
    const int64_t prev = ring.freeing_visit(c);
    if (prev >= 0) {
      FLEA_CHECK(r.compute_end_ns[static_cast<size_t>(prev)] >= 0, "slot reused before its compute was enqueued");
      start = std::max(start, r.compute_end_ns[static_cast<size_t>(prev)]);
    }
    const size_t i = static_cast<size_t>(c);
    r.copy_start_ns[i] = start;
    r.copy_end_ns[i] = start + copy_ns[i];
    r.issued_during_visit[i] = driving;
    copy_free = r.copy_end_ns[i];
    host = r.copy_end_ns[i];  // the host waits for the copy before releasing the host buffer
    ring.mark_issued(c);
    // Copies issued whose computes have not finished by the time this copy starts.
    int64_t finished = 0;
    for (int64_t v = 0; v < computed; ++v) if (r.compute_end_ns[static_cast<size_t>(v)] <= start) ++finished;
    r.max_copies_ahead = std::max<int>(r.max_copies_ahead, static_cast<int>(c + 1 - finished));
  };
  for (int64_t v = 0; v < n; ++v) {
    while (ring.next_issue() <= v) issue(ring.next_issue(), v);
    const size_t i = static_cast<size_t>(v);
    r.compute_start_ns[i] = std::max(compute_free, r.copy_end_ns[i]);
    r.compute_end_ns[i] = r.compute_start_ns[i] + compute_ns[i];
    compute_free = r.compute_end_ns[i];
    ++computed;
    while (ring.next_issue() <= v + ring.lookahead()) issue(ring.next_issue(), v);
  }
  r.total_ns = std::max(compute_free, copy_free);
  return r;
}

}  // namespace flea::vram
