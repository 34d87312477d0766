// The planner's arithmetic, exactly: placement order, budgets and their minimum-MB errors, ring
// and cache sizing, bytes and predicted time per token.
#include <gtest/gtest.h>

#include "residency/plan.h"
#include "residency_test_model.h"

namespace flea {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kMatrix = kMiB, kNorm = 4096, kEmbd = 2 * kMiB, kOutput = 3 * kMiB;
constexpr uint64_t kLayerRead = 7 * kMatrix + 2 * kNorm;  // one contiguous, 4096-aligned span
constexpr uint64_t kGlobal = kEmbd + kOutput + kNorm;

class PlannerTest : public ::testing::Test {
 protected:
  void SetUp() override { m_ = test::make_fake_model("/nonexistent/fake.gguf", 4, kMatrix, kNorm, kEmbd, kOutput, false); }
  StatusOr<Plan> plan(const std::string& residency, int64_t vram_mb = 0, int64_t ram_mb = 0, int prefetch = 1,
                      const MeasuredBandwidth* bw = nullptr) {
    ResidencyOptions o;
    o.residency = residency;
    o.vram_budget_mb = vram_mb;
    o.ram_budget_mb = ram_mb;
    o.prefetch = prefetch;
    return plan_residency(m_->file, m_->layout, o, bw);
  }
  std::unique_ptr<test::TestModel> m_;
};

TEST_F(PlannerTest, LayerSpansAndBytes) {
  StatusOr<Plan> p = plan("transient");
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  ASSERT_EQ(p->layers.size(), 4u);
  EXPECT_EQ(p->global_bytes, kGlobal);
  EXPECT_EQ(p->norm_bytes, 4 * 2 * kNorm);
  for (const LayerPlan& lp : p->layers) {
    EXPECT_EQ(lp.weight_bytes, 7 * kMatrix + 2 * kNorm);
    EXPECT_EQ(lp.stream_bytes, 7 * kMatrix);
    ASSERT_EQ(lp.spans.size(), 1u);
    EXPECT_EQ(lp.read_bytes, kLayerRead);
    EXPECT_EQ(lp.buffer_bytes, kLayerRead);
    EXPECT_EQ(lp.spans[0].file_offset, m_->layout.layers[lp.layer][static_cast<int>(LayerTensor::kAttnK)]->file_offset);
    EXPECT_EQ(lp.spans[0].file_offset % 4096, 0u);
    // Tensors keep their relative position inside the staging buffer.
    for (int t = 0; t < kLayerTensorCount; ++t) {
      if (m_->layout.layers[lp.layer][t] == nullptr) continue;  // no biases in this model
      const bool norm = t == static_cast<int>(LayerTensor::kAttnNorm) || t == static_cast<int>(LayerTensor::kFfnNorm);
      if (norm) EXPECT_EQ(lp.buffer_offset[t], kNotInBuffer);
      else EXPECT_EQ(lp.buffer_offset[t], m_->layout.layers[lp.layer][t]->file_offset - lp.spans[0].file_offset);
    }
  }
}

TEST_F(PlannerTest, FullKeepsEverythingResident) {
  StatusOr<Plan> p = plan("full");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->n_resident, 4);
  EXPECT_EQ(p->n_streamed, 0);
  EXPECT_EQ(p->ring_slots, 0);
  EXPECT_EQ(p->streamed_bytes_per_token, 0u);
  EXPECT_EQ(p->weight_memory_bytes, kGlobal + 8 * kNorm + 4 * kLayerRead);
}

TEST_F(PlannerTest, FullOverBudgetStatesMinimum) {
  // 5 MiB + 4 KiB globals + 32 KiB norms + 4 x (7 MiB + 8 KiB) = 34672640 bytes -> 34 MiB.
  StatusOr<Plan> p = plan("full", 33);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(p.status().message().find("minimum --vram-budget-mb 34"), std::string::npos) << p.status().message();
  EXPECT_TRUE(plan("full", 34).ok());
}

TEST_F(PlannerTest, TransientStreamsEveryLayer) {
  StatusOr<Plan> p = plan("transient", 0, 0, 1);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->n_streamed, 4);
  EXPECT_EQ(p->ring_slots, 2);
  EXPECT_EQ(p->slot_bytes, kLayerRead);
  EXPECT_EQ(p->ring_bytes, 2 * kLayerRead);
  EXPECT_EQ(p->weight_memory_bytes, kGlobal + 8 * kNorm);
  EXPECT_EQ(p->streamed_bytes_per_token, 4 * kLayerRead);
  EXPECT_EQ(p->first_token_bytes, 4 * kLayerRead);
  EXPECT_EQ(plan("transient", 0, 0, 0)->ring_slots, 1);  // load then compute still needs one slot
  EXPECT_EQ(plan("transient", 0, 0, 2)->ring_slots, 3);
  EXPECT_EQ(plan("transient", 0, 0, 9)->ring_slots, 4);  // never more slots than streamed layers
}

TEST_F(PlannerTest, TransientBudgetBelowResidentSetStatesMinimum) {
  // Globals + norms = 5279744 bytes -> 6 MiB.
  StatusOr<Plan> p = plan("transient", 5);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("minimum --vram-budget-mb 6"), std::string::npos) << p.status().message();
  EXPECT_TRUE(plan("transient", 6).ok());
}

TEST_F(PlannerTest, AutoFillsWholeLayersInOrder) {
  // 5279744 + 2 x 7348224 = 19976192 <= 20 MiB < 5279744 + 3 x 7348224.
  StatusOr<Plan> p = plan("auto", 20);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->layers[0].placement, Placement::kResident);
  EXPECT_EQ(p->layers[1].placement, Placement::kResident);
  EXPECT_EQ(p->layers[2].placement, Placement::kStreamed);
  EXPECT_EQ(p->layers[3].placement, Placement::kStreamed);
  EXPECT_EQ(p->weight_memory_bytes, 19976192u);
  EXPECT_EQ(p->streamed_bytes_per_token, 2 * kLayerRead);
  EXPECT_EQ(plan("auto", 0)->n_resident, 4);  // unlimited budget: everything fits
  EXPECT_EQ(plan("auto", 6)->n_resident, 0);
}

TEST_F(PlannerTest, RamBudgetBoundsRingAndStatesMinimum) {
  // Ring of 2 x 7348224 = 14696448 bytes -> 15 MiB; one slot -> 8 MiB.
  StatusOr<Plan> p = plan("transient", 0, 10, 1);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("minimum --ram-budget-mb 15 (or 8 with --prefetch 0)"), std::string::npos)
      << p.status().message();
  EXPECT_TRUE(plan("transient", 0, 8, 0).ok());
  EXPECT_FALSE(plan("transient", 0, 7, 0).ok());
}

TEST_F(PlannerTest, RamBudgetCachesLayersInOrder) {
  // 30 MiB - 14696448 ring = 16760832 left: two layers cached (14696448), the rest streams.
  StatusOr<Plan> p = plan("transient", 0, 30, 1);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->layers[0].placement, Placement::kCached);
  EXPECT_EQ(p->layers[1].placement, Placement::kCached);
  EXPECT_EQ(p->layers[2].placement, Placement::kStreamed);
  EXPECT_EQ(p->layers[3].placement, Placement::kStreamed);
  EXPECT_EQ(p->cache_bytes, 2 * kLayerRead);
  EXPECT_EQ(p->ring_slots, 2);
  EXPECT_EQ(p->streamed_bytes_per_token, 2 * kLayerRead);
  EXPECT_EQ(p->first_token_bytes, 4 * kLayerRead);
  EXPECT_LE(p->host_staging_bytes, 30 * kMiB);
}

TEST_F(PlannerTest, PredictionFromBandwidths) {
  MeasuredBandwidth bw{1.0, 10.0, "test"};
  StatusOr<Plan> p = plan("transient", 0, 0, 1, &bw);
  ASSERT_TRUE(p.ok());
  EXPECT_DOUBLE_EQ(p->predicted_io_ms, 4.0 * kLayerRead / 1e6);
  EXPECT_DOUBLE_EQ(p->predicted_compute_ms, static_cast<double>(p->model_bytes) / 10.0 / 1e6);
  EXPECT_DOUBLE_EQ(p->predicted_ms_per_token, std::max(p->predicted_io_ms, p->predicted_compute_ms));
  StatusOr<Plan> p0 = plan("transient", 0, 0, 0, &bw);
  EXPECT_DOUBLE_EQ(p0->predicted_ms_per_token, p0->predicted_io_ms + p0->predicted_compute_ms);
  EXPECT_EQ(plan("transient")->bandwidth_source, "defaults (not measured)");
  EXPECT_DOUBLE_EQ(plan("transient")->disk_gb_s, kDefaultDiskGbS);
}

TEST_F(PlannerTest, Deterministic) {
  EXPECT_EQ(plan("auto", 20, 30)->to_json(), plan("auto", 20, 30)->to_json());
  EXPECT_EQ(plan("auto", 20, 30)->to_string(), plan("auto", 20, 30)->to_string());
  EXPECT_NE(plan("auto", 20)->to_string().find("layer   2  streamed"), std::string::npos) << plan("auto", 20)->to_string();
}

// The machine the plan must fit, injected: MemAvailable only (no cgroup), and a KV cache of 1 MiB.
ResidencyOptions on_machine(const std::string& residency, uint64_t available_bytes, int64_t vram_mb = 0, int64_t ram_mb = 0) {
  ResidencyOptions o;
  o.residency = residency;
  o.vram_budget_mb = vram_mb;
  o.ram_budget_mb = ram_mb;
  o.host_memory = HostMemory{};
  o.host_memory->mem_available_bytes = available_bytes;
  o.kv_bytes = kMiB;
  return o;
}

// Issue 23: `auto` without a budget kept every layer resident on a model larger than the machine.
TEST_F(PlannerTest, AutoWithoutBudgetStreamsWhatDoesNotFitTheMachine) {
  // 36 MiB available, margin 10% = 3774873, KV 1 MiB: room 32925287. Every layer resident needs
  // 5279744 + 4 x 7348224 = 34672640; three or two resident need as much with the ring (one, two
  // slots); one resident: 5279744 + 7348224 + ring 2 x 7348224 = 27324416 fits.
  StatusOr<Plan> p = plan_residency(m_->file, m_->layout, on_machine("auto", 36 * kMiB), nullptr);
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  EXPECT_EQ(p->n_resident, 1);
  EXPECT_EQ(p->n_streamed, 3);
  EXPECT_EQ(p->vram_budget_bytes, 32925287u - 2 * kLayerRead);
  EXPECT_EQ(p->weight_memory_bytes, 5279744u + kLayerRead);
  EXPECT_EQ(p->ring_bytes, 2 * kLayerRead);
  EXPECT_LE(p->weight_memory_bytes + p->host_staging_bytes + kMiB, 36 * kMiB - p->host_margin_bytes);
  EXPECT_EQ(p->host_available_bytes, 36 * kMiB);
  EXPECT_EQ(p->host_reserved_bytes, kMiB);
  EXPECT_EQ(p->host_margin_bytes, 3774873u);
  EXPECT_EQ(p->vram_budget_source,
            "MemAvailable 36.0 MiB - KV 1.0 MiB - scratch 0.0 MiB - staging 14.0 MiB - margin 3.6 MiB = 17.4 MiB");
  EXPECT_NE(p->to_string().find("  budget from    MemAvailable 36.0 MiB - KV 1.0 MiB"), std::string::npos) << p->to_string();
  EXPECT_NE(p->to_json().find("\"vram_budget_source\":\"MemAvailable 36.0 MiB"), std::string::npos) << p->to_json();
  // A machine with room for everything keeps everything, without a ring.
  StatusOr<Plan> big = plan_residency(m_->file, m_->layout, on_machine("auto", 64 * kMiB), nullptr);
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(big->n_resident, 4);
  EXPECT_EQ(big->ring_slots, 0);
  // Not probed: unlimited, as before, and said so.
  EXPECT_EQ(plan("auto")->vram_budget_source, "unlimited (no --vram-budget-mb and the machine's memory was not probed)");
  EXPECT_EQ(plan("auto", 20)->vram_budget_source, "--vram-budget-mb 20");
}

TEST_F(PlannerTest, AutoOnAMachineTooSmallToStreamSaysWhatItNeeds) {
  StatusOr<Plan> p = plan_residency(m_->file, m_->layout, on_machine("auto", 16 * kMiB), nullptr);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(p.status().message().find("--residency auto: the machine has MemAvailable 16.0 MiB, too little even to stream every layer"),
            std::string::npos) << p.status().message();
}

TEST_F(PlannerTest, BudgetAboveTheMachineIsRefusedWithWhatToPass) {
  // 32 MiB: every layer resident (34672640) + KV 1 MiB does not fit; auto's own budget is
  // 33554432 - 1 MiB - margin 3355443 - ring 14696448 = 14453965 -> 13 MiB.
  StatusOr<Plan> p = plan_residency(m_->file, m_->layout, on_machine("auto", 32 * kMiB, 100), nullptr);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(p.status().message(),
            "--residency auto --vram-budget-mb 100 needs 34.1 MiB of host memory (weights 33.1 MiB + staging 0.0 MiB + "
            "KV cache 1.0 MiB + scratch 0.0 MiB) but the machine has 32.0 MiB (MemAvailable 32.0 MiB); pass "
            "--vram-budget-mb 13 or leave it out (it keeps 1 of 4 layers resident)");
  EXPECT_TRUE(plan_residency(m_->file, m_->layout, on_machine("auto", 32 * kMiB, 13), nullptr).ok());
  // A budget above the machine on a model that fits it is harmless: the plan takes what it needs.
  EXPECT_EQ(plan_residency(m_->file, m_->layout, on_machine("auto", 64 * kMiB, 1000), nullptr)->n_resident, 4);
  // --ram-budget-mb: a cache larger than the machine.
  StatusOr<Plan> t = plan_residency(m_->file, m_->layout, on_machine("transient", 32 * kMiB, 0, 100), nullptr);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("--residency transient --ram-budget-mb 100 needs 34.1 MiB"), std::string::npos)
      << t.status().message();
  EXPECT_NE(t.status().message().find("; lower --ram-budget-mb (staging and cache)"), std::string::npos) << t.status().message();
  EXPECT_TRUE(plan_residency(m_->file, m_->layout, on_machine("transient", 32 * kMiB, 0, 15), nullptr).ok());
}

TEST_F(PlannerTest, FullFitsOrPointsToAuto) {
  StatusOr<Plan> fits = plan_residency(m_->file, m_->layout, on_machine("full", 64 * kMiB), nullptr);
  ASSERT_TRUE(fits.ok());
  EXPECT_EQ(fits->n_resident, 4);
  EXPECT_EQ(fits->vram_budget_source, "unlimited (--residency full does not use it)");
  StatusOr<Plan> p = plan_residency(m_->file, m_->layout, on_machine("full", 32 * kMiB), nullptr);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("--residency full needs 34.1 MiB of host memory"), std::string::npos) << p.status().message();
  EXPECT_NE(p.status().message().find("; use --residency auto without --vram-budget-mb (it keeps 1 of 4 layers resident)"),
            std::string::npos) << p.status().message();
  // --io mmap: "resident" layers are page cache, which the kernel reclaims; nothing to refuse.
  ResidencyOptions mapped = on_machine("full", 32 * kMiB);
  mapped.io = "mmap";
  EXPECT_TRUE(plan_residency(m_->file, m_->layout, mapped, nullptr).ok());
}

TEST_F(PlannerTest, BadOptions) {
  ResidencyOptions o;
  o.residency = "sometimes";
  EXPECT_EQ(plan_residency(m_->file, m_->layout, o, nullptr).status().code(), StatusCode::kInvalidArgument);
  o = ResidencyOptions();
  o.prefetch = -1;
  EXPECT_FALSE(plan_residency(m_->file, m_->layout, o, nullptr).ok());
}

TEST(PlanSpans, MergesCloseTensorsAndAligns) {
  std::vector<ReadSpan> s = plan_spans({{200, 100}, {5000, 100}});
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].file_offset, 0u);
  EXPECT_EQ(s[0].length, 8192u);
  s = plan_spans({{1 << 20, 10}, {0, 100}});  // far apart: two requests, packed in the buffer
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].file_offset, 0u);
  EXPECT_EQ(s[0].length, 4096u);
  EXPECT_EQ(s[1].file_offset, 1u << 20);
  EXPECT_EQ(s[1].buffer_offset, 4096u);
}

TEST(PlanReference, Q4KMLayersAreOneSpanEach) {
  auto m = test::open_reference_model();
  ASSERT_NE(m, nullptr);
  ResidencyOptions o;
  o.residency = "transient";
  StatusOr<Plan> p = plan_residency(m->file, m->layout, o, nullptr);
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  ASSERT_EQ(p->n_layer, 2);
  for (const LayerPlan& lp : p->layers) {
    ASSERT_EQ(lp.spans.size(), 1u);
    uint64_t lo = UINT64_MAX, hi = 0;
    for (const gguf::TensorInfo* t : m->layout.layers[lp.layer]) {
      if (t == nullptr) continue;  // no biases in this model
      lo = std::min(lo, t->file_offset);
      hi = std::max(hi, t->file_offset + t->n_bytes);
    }
    EXPECT_EQ(lp.buffer_bytes, io::align_up(hi) - io::align_down(lo));
    EXPECT_EQ(lp.read_bytes, std::min(io::align_up(hi), m->file.file_size) - io::align_down(lo));
  }
}

}  // namespace
}  // namespace flea
