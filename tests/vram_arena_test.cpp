// The GPU-independent half of the CUDA backend (compute/vram/): the VRAM arena never hands out
// more than its budget, the budget split picks the most resident layers that fit and states the
// minimum when nothing fits, the ring reuses slots in order across tokens, and the schedule
// overlaps copies with compute when prefetching (checked against a fake clock). The KV cache takes
// every layer's K/V in VRAM in resident mode and one layer's working pair with --kv host.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "compute/vram/vram_arena.h"

namespace flea::vram {
namespace {

TEST(VramArena, AlignsAndNeverExceedsTheBudget) {
  VramArena arena(10 * kMiB);
  auto a = arena.reserve("a", 100);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a, 0u);
  auto b = arena.reserve("b", 3 * kMiB);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, kAlign);  // 100 bytes round up to one 256-byte unit
  EXPECT_EQ(*b % kAlign, 0u);
  auto c = arena.reserve("the big one", 7 * kMiB);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(c.status().message().find("the big one"), std::string::npos) << c.status().message();
  EXPECT_NE(c.status().message().find("at least 11 MB"), std::string::npos) << c.status().message();
  EXPECT_LE(arena.used_bytes(), 10 * kMiB);
  EXPECT_EQ(arena.regions().size(), 2u);
  // Exactly filling the budget is allowed.
  auto d = arena.reserve("rest", 10 * kMiB - arena.used_bytes());
  EXPECT_TRUE(d.ok());
  EXPECT_EQ(arena.used_bytes(), 10 * kMiB);
  EXPECT_EQ(arena.peak_bytes(), 10 * kMiB);
}

TEST(VramArena, UnlimitedBudget) {
  VramArena arena(0);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(arena.reserve("x", 1ull << 40).ok());
  EXPECT_EQ(arena.used_bytes(), 10ull << 40);
}

// Independent reference for the budget split: the first k allowed layers resident.
uint64_t total_for(const VramRequest& r, size_t k) {
  uint64_t resident = 0, slot = 0;
  int n_streamed = 0;
  size_t taken = 0;
  for (size_t i = 0; i < r.layer_bytes.size(); ++i) {
    if (r.may_be_resident[i] && taken < k) {
      resident += r.layer_bytes[i];
      ++taken;
    } else {
      slot = std::max(slot, r.layer_bytes[i]);
      ++n_streamed;
    }
  }
  const uint64_t slots = n_streamed == 0 ? 0 : static_cast<uint64_t>(std::min(r.prefetch + 1, n_streamed));
  return r.global_bytes + r.norm_bytes + r.kv_bytes + r.scratch_bytes + resident + slots * slot;
}

TEST(VramPlan, RandomBudgetsAreNeverExceededAndTheMinimumIsStated) {
  std::mt19937_64 rng(42);
  int fitted = 0, refused = 0;
  for (int iter = 0; iter < 2000; ++iter) {
    VramRequest r;
    const int n_layer = 1 + static_cast<int>(rng() % 40);
    r.global_bytes = align_up(rng() % (300 * kMiB));
    r.norm_bytes = align_up(static_cast<uint64_t>(n_layer) * 32768);
    r.kv_bytes = align_up(rng() % (200 * kMiB));
    r.scratch_bytes = align_up(rng() % (50 * kMiB));
    for (int i = 0; i < n_layer; ++i) {
      r.layer_bytes.push_back(align_up(50 * kMiB + rng() % (100 * kMiB)));
      r.may_be_resident.push_back(rng() % 4 != 0);
    }
    r.prefetch = static_cast<int>(rng() % 4);
    r.budget_bytes = rng() % 3 == 0 ? 0 : align_up(rng() % (4000 * kMiB));
    size_t n_allowed = static_cast<size_t>(std::count(r.may_be_resident.begin(), r.may_be_resident.end(), true));
    uint64_t minimum = UINT64_MAX;
    for (size_t k = 0; k <= n_allowed; ++k) minimum = std::min(minimum, total_for(r, k));

    auto p = plan_vram(r);
    if (!p.ok()) {
      ++refused;
      ASSERT_NE(r.budget_bytes, 0u);
      EXPECT_GT(minimum, r.budget_bytes);
      EXPECT_EQ(p.status().code(), StatusCode::kResourceExhausted);
      EXPECT_NE(p.status().message().find("at least " + std::to_string(ceil_mb(minimum)) + " MB"), std::string::npos)
          << p.status().message();
      continue;
    }
    ++fitted;
    if (r.budget_bytes != 0) {
      EXPECT_LE(p->total_bytes, r.budget_bytes);
    }
    EXPECT_EQ(p->minimum_bytes, minimum);
    EXPECT_EQ(p->total_bytes, p->fixed_bytes + p->resident_bytes + p->ring_bytes);
    const size_t k = static_cast<size_t>(std::count(p->resident.begin(), p->resident.end(), true));
    EXPECT_EQ(p->total_bytes, total_for(r, k));
    // The most resident layers that fit: one more would not.
    if (k < n_allowed && r.budget_bytes != 0) {
      for (size_t more = k + 1; more <= n_allowed; ++more) EXPECT_GT(total_for(r, more), r.budget_bytes);
    }
    if (r.budget_bytes == 0) {
      EXPECT_EQ(k, n_allowed);
    }
    // Resident layers are allowed ones, streamed are the rest, in order.
    for (size_t i = 0; i < p->resident.size(); ++i) {
      if (p->resident[i]) {
        EXPECT_TRUE(r.may_be_resident[i]);
      }
    }
    EXPECT_TRUE(std::is_sorted(p->streamed.begin(), p->streamed.end()));
    EXPECT_EQ(p->streamed.size() + k, r.layer_bytes.size());
    if (!p->streamed.empty()) {
      EXPECT_EQ(p->ring_slots, std::min<int>(r.prefetch + 1, static_cast<int>(p->streamed.size())));
      EXPECT_LE(p->lookahead, r.prefetch);
      EXPECT_LT(p->lookahead, p->ring_slots);
    }
  }
  EXPECT_GT(fitted, 100);
  EXPECT_GT(refused, 50);
}

TEST(VramPlan, FullResidencyThatDoesNotFitSaysSo) {
  VramRequest r;
  r.global_bytes = 100 * kMiB;
  r.layer_bytes.assign(8, 200 * kMiB);
  r.may_be_resident.assign(8, true);
  r.require_all_resident = true;
  r.budget_bytes = 1000 * kMiB;
  auto p = plan_vram(r);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("--residency full needs 1700 MB"), std::string::npos) << p.status().message();
  r.budget_bytes = 1700 * kMiB;
  p = plan_vram(r);
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  EXPECT_TRUE(p->streamed.empty());
  EXPECT_EQ(p->ring_slots, 0);
}

TEST(VramPlan, TransientStreamsEverythingThroughPrefetchPlusOneSlots) {
  VramRequest r;
  r.global_bytes = 10 * kMiB;
  r.layer_bytes = {100 * kMiB, 120 * kMiB, 110 * kMiB, 100 * kMiB};
  r.may_be_resident.assign(4, false);
  r.prefetch = 2;
  auto p = plan_vram(r);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->streamed, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(p->ring_slots, 3);
  EXPECT_EQ(p->lookahead, 2);
  EXPECT_EQ(p->slot_bytes, 120 * kMiB);
  EXPECT_EQ(p->streamed_bytes_per_token, 430 * kMiB);
  r.prefetch = 9;  // more than there are layers: capped
  p = plan_vram(r);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->ring_slots, 4);
  EXPECT_EQ(p->lookahead, 3);
}

TEST(KvBytes, ExactCountsForBothModes) {
  // 22 layers, 4096 positions of 256 floats: 4 MiB per K or V of a layer, already aligned.
  EXPECT_EQ(kv_vram_bytes(22, 4096, 256, false), 22ull * 2 * 4 * kMiB);
  EXPECT_EQ(kv_vram_bytes(22, 4096, 256, true), 2ull * 4 * kMiB);
  EXPECT_EQ(kv_host_bytes(22, 4096, 256), 22ull * 2 * 4 * kMiB);
  // 5 positions of 24 floats = 480 bytes, rounded to one 512-byte reservation each in VRAM only.
  EXPECT_EQ(kv_vram_bytes(3, 5, 24, false), 3ull * 2 * 512);
  EXPECT_EQ(kv_vram_bytes(3, 5, 24, true), 2ull * 512);
  EXPECT_EQ(kv_host_bytes(3, 5, 24), 3ull * 2 * 480);
  // One layer: both modes hold the same pair; no layers: nothing.
  EXPECT_EQ(kv_vram_bytes(1, 100, 64, true), kv_vram_bytes(1, 100, 64, false));
  EXPECT_EQ(kv_vram_bytes(0, 100, 64, true), 0u);
  EXPECT_EQ(kv_vram_bytes(0, 100, 64, false), 0u);
  // Host mode saves exactly (n_layer - 1) / n_layer of the resident cache.
  for (int64_t n_layer : {1, 2, 7, 32, 80}) {
    for (int64_t n_ctx : {1, 33, 512, 8192}) {
      for (int64_t kv : {32, 96, 1024}) {
        const uint64_t resident = kv_vram_bytes(n_layer, n_ctx, kv, false);
        const uint64_t host = kv_vram_bytes(n_layer, n_ctx, kv, true);
        EXPECT_EQ(resident - host, resident / static_cast<uint64_t>(n_layer) * static_cast<uint64_t>(n_layer - 1))
            << n_layer << " " << n_ctx << " " << kv;
        EXPECT_EQ(resident % static_cast<uint64_t>(n_layer), 0u);
      }
    }
  }
}

// The "at least N MB" a refusal states.
uint64_t stated_minimum_mb(const std::string& message) {
  const size_t at = message.find("at least ");
  if (at == std::string::npos) return 0;
  return std::stoull(message.substr(at + 9));
}

// A small-GPU request: 22 layers of 40 MiB, 4096 positions of 256 floats (176 MiB of KV resident,
// 8 MiB in host mode).
VramRequest long_context_request(bool kv_host, bool may_be_resident) {
  VramRequest r;
  r.global_bytes = 50 * kMiB;
  r.norm_bytes = align_up(22 * 2 * 2048 * 4);
  r.kv_bytes = kv_vram_bytes(22, 4096, 256, kv_host);
  r.kv_host = kv_host;
  r.scratch_bytes = 10 * kMiB;
  r.layer_bytes.assign(22, 40 * kMiB);
  r.may_be_resident.assign(22, may_be_resident);
  r.prefetch = 1;
  return r;
}

TEST(VramPlan, HostKvRunsInABudgetThatRefusesResidentKv) {
  for (bool may_be_resident : {false, true}) {
    SCOPED_TRACE(may_be_resident ? "auto" : "transient");
    // Unlimited budget: the minimum of each mode, 168 MiB apart.
    auto res_free = plan_vram(long_context_request(false, may_be_resident));
    auto host_free = plan_vram(long_context_request(true, may_be_resident));
    ASSERT_TRUE(res_free.ok() && host_free.ok());
    const uint64_t res_min = res_free->minimum_bytes, host_min = host_free->minimum_bytes;
    EXPECT_EQ(res_min - host_min, 21ull * 2 * 4 * kMiB);
    EXPECT_EQ(host_free->kv_bytes, 8 * kMiB);
    EXPECT_TRUE(host_free->kv_host);
    EXPECT_FALSE(res_free->kv_host);
    EXPECT_NE(host_free->to_string().find("KV host"), std::string::npos) << host_free->to_string();
    EXPECT_NE(res_free->to_string().find("KV resident (176.0 MB"), std::string::npos) << res_free->to_string();

    // A budget between the two: resident refused (stating its minimum, suggesting --kv host), host fits.
    VramRequest r = long_context_request(false, may_be_resident);
    r.budget_bytes = ceil_mb(host_min) * kMiB;
    ASSERT_LT(r.budget_bytes, res_min);
    auto refused = plan_vram(r);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted);
    EXPECT_EQ(stated_minimum_mb(refused.status().message()), ceil_mb(res_min)) << refused.status().message();
    EXPECT_NE(refused.status().message().find("--kv host keeps"), std::string::npos) << refused.status().message();
    VramRequest h = long_context_request(true, may_be_resident);
    h.budget_bytes = r.budget_bytes;
    auto fits = plan_vram(h);
    ASSERT_TRUE(fits.ok()) << fits.status().to_string();
    EXPECT_LE(fits->total_bytes, h.budget_bytes);
    EXPECT_EQ(fits->minimum_bytes, host_min);
    EXPECT_EQ(fits->kv_bytes, 8 * kMiB);

    // The minimum each mode states is exactly what fits: that many MB runs, one MB less is refused
    // (stating the same minimum), and so does the exact byte count.
    for (bool kv_host : {false, true}) {
      VramRequest q = long_context_request(kv_host, may_be_resident);
      const uint64_t min_bytes = kv_host ? host_min : res_min;
      q.budget_bytes = (ceil_mb(min_bytes) - 1) * kMiB;
      auto no = plan_vram(q);
      ASSERT_FALSE(no.ok());
      const uint64_t stated = stated_minimum_mb(no.status().message());
      EXPECT_EQ(stated, ceil_mb(min_bytes)) << no.status().message();
      EXPECT_EQ(no.status().message().find("--kv host keeps") != std::string::npos, !kv_host) << no.status().message();
      q.budget_bytes = stated * kMiB;
      auto yes = plan_vram(q);
      ASSERT_TRUE(yes.ok()) << yes.status().to_string();
      EXPECT_LE(yes->total_bytes, q.budget_bytes);
      q.budget_bytes = min_bytes;
      yes = plan_vram(q);
      ASSERT_TRUE(yes.ok()) << yes.status().to_string();
      EXPECT_EQ(yes->total_bytes, min_bytes);
      q.budget_bytes = min_bytes - 1;
      EXPECT_FALSE(plan_vram(q).ok());
    }
  }
}

TEST(VramPlan, FullResidencyWithHostKvNeedsOneLayerOfCache) {
  VramRequest r = long_context_request(false, true);
  r.require_all_resident = true;
  VramRequest h = long_context_request(true, true);
  h.require_all_resident = true;
  auto pr = plan_vram(r), ph = plan_vram(h);
  ASSERT_TRUE(pr.ok() && ph.ok());
  EXPECT_EQ(pr->total_bytes - ph->total_bytes, 21ull * 2 * 4 * kMiB);
  r.budget_bytes = ph->total_bytes;
  auto no = plan_vram(r);
  ASSERT_FALSE(no.ok());
  EXPECT_NE(no.status().message().find("--residency full needs " + std::to_string(ceil_mb(pr->total_bytes)) + " MB"),
            std::string::npos) << no.status().message();
  EXPECT_NE(no.status().message().find("--kv host keeps"), std::string::npos) << no.status().message();
  h.budget_bytes = ph->total_bytes;
  EXPECT_TRUE(plan_vram(h).ok());
}

TEST(LayerRing, SlotsWrapInVisitOrder) {
  LayerRing ring(3, 2);
  std::vector<int> slots;
  for (int64_t v = 0; v < 8; ++v) slots.push_back(ring.slot(v));
  EXPECT_EQ(slots, (std::vector<int>{0, 1, 2, 0, 1, 2, 0, 1}));
  EXPECT_LT(ring.freeing_visit(2), 0);
  EXPECT_EQ(ring.freeing_visit(3), 0);
  EXPECT_EQ(ring.freeing_visit(7), 4);
  for (int64_t v = 0; v < 5; ++v) ring.mark_issued(v);
  EXPECT_EQ(ring.next_issue(), 5);
}

// Visits of three tokens through a 4-layer model: 12 visits.
std::vector<int64_t> constant(int n, int64_t v) { return std::vector<int64_t>(static_cast<size_t>(n), v); }

void check_schedule_invariants(const SimResult& r, int n_slots, int lookahead) {
  const size_t n = r.copy_start_ns.size();
  for (size_t v = 0; v < n; ++v) {
    EXPECT_GE(r.compute_start_ns[v], r.copy_end_ns[v]) << "compute before its copy, visit " << v;
    if (v > 0) {
      EXPECT_GE(r.copy_start_ns[v], r.copy_end_ns[v - 1]) << "one copy engine";
      EXPECT_GE(r.compute_start_ns[v], r.compute_end_ns[v - 1]) << "one compute stream";
    }
    if (v >= static_cast<size_t>(n_slots)) {
      EXPECT_GE(r.copy_start_ns[v], r.compute_end_ns[v - static_cast<size_t>(n_slots)])
          << "slot overwritten while in use, visit " << v;
    }
    // Prefetch depth: the copy of visit v is issued while driving visit v - lookahead at the earliest.
    EXPECT_GE(r.issued_during_visit[v], static_cast<int64_t>(v) - lookahead);
    EXPECT_LE(r.issued_during_visit[v], static_cast<int64_t>(v));
  }
  EXPECT_LE(r.max_copies_ahead, n_slots);
}

TEST(SimulateStream, PrefetchOverlapsCopyWithCompute) {
  const int n = 32;
  for (int prefetch : {1, 2, 3}) {
    // I/O bound: 10 ms copies, 4 ms compute -> about 10 ms per layer.
    SimResult io = simulate_stream(constant(n, 10), constant(n, 4), prefetch + 1, prefetch);
    check_schedule_invariants(io, prefetch + 1, prefetch);
    EXPECT_EQ(io.total_ns, n * 10 + 4) << "prefetch " << prefetch;
    // Compute bound: 4 ms copies, 10 ms compute -> about 10 ms per layer.
    SimResult cb = simulate_stream(constant(n, 4), constant(n, 10), prefetch + 1, prefetch);
    check_schedule_invariants(cb, prefetch + 1, prefetch);
    EXPECT_EQ(cb.total_ns, 4 + n * 10) << "prefetch " << prefetch;
  }
  // Prefetch 0 is load-then-compute: the sum.
  SimResult serial = simulate_stream(constant(n, 10), constant(n, 4), 1, 0);
  check_schedule_invariants(serial, 1, 0);
  EXPECT_EQ(serial.total_ns, n * 14);
  for (int v = 1; v < n; ++v) {
    EXPECT_GE(serial.copy_start_ns[static_cast<size_t>(v)], serial.compute_end_ns[static_cast<size_t>(v - 1)]);
  }
}

TEST(SimulateStream, IrregularTimesKeepTheInvariants) {
  std::mt19937_64 rng(7);
  for (int iter = 0; iter < 200; ++iter) {
    const int n = 1 + static_cast<int>(rng() % 50);
    std::vector<int64_t> copy, compute;
    for (int i = 0; i < n; ++i) {
      copy.push_back(1 + static_cast<int64_t>(rng() % 100));
      compute.push_back(1 + static_cast<int64_t>(rng() % 100));
    }
    const int slots = 1 + static_cast<int>(rng() % 4);
    const int lookahead = static_cast<int>(rng() % static_cast<uint64_t>(slots));
    SimResult r = simulate_stream(copy, compute, slots, lookahead);
    check_schedule_invariants(r, slots, lookahead);
    int64_t sum_copy = 0, sum_compute = 0;
    for (int i = 0; i < n; ++i) { sum_copy += copy[static_cast<size_t>(i)]; sum_compute += compute[static_cast<size_t>(i)]; }
    EXPECT_GE(r.total_ns, std::max(sum_copy, sum_compute));
    EXPECT_LE(r.total_ns, sum_copy + sum_compute);
    if (lookahead == 0) {
      EXPECT_EQ(r.total_ns, sum_copy + sum_compute);
    }
  }
}

}  // namespace
}  // namespace flea::vram
