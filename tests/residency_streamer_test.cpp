// The streamer returns exactly the file's bytes for every backend, prefetch depth and placement,
// in the forward pass's cyclic order and out of order; telemetry and io-only byte counts are exact.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include <cstring>
#include <tuple>

#include "io/io_backend.h"
#include "residency/provider.h"
#include "residency_test_model.h"

namespace flea {
namespace {

std::vector<std::string> backends() {
  std::vector<std::string> b = {"pread", "odirect", "mmap", "faulty:pread:short@0*2,eintr@0*2"};
  if (io::io_uring_available()) b.push_back("io_uring");
  return b;
}

void expect_layer_bytes(const test::TestModel& m, const std::vector<uint8_t>& ref, int il, const LayerWeights& w) {
  for (int t = 0; t < kLayerTensorCount; ++t) {
    const gguf::TensorInfo* ti = m.layout.layers[il][t];
    if (ti == nullptr) continue;  // optional tensor (bias) this model lacks
    ASSERT_NE(w.data[t], nullptr);
    ASSERT_EQ(std::memcmp(w.data[t], ref.data() + ti->file_offset, ti->n_bytes), 0)
        << "layer " << il << " tensor " << ti->name;
  }
}

void expect_globals(const test::TestModel& m, const std::vector<uint8_t>& ref, WeightProvider* p) {
  for (int g = 0; g < kGlobalTensorCount; ++g) {
    const gguf::TensorInfo* ti = m.layout.globals[g];
    if (ti == nullptr) continue;
    ASSERT_EQ(std::memcmp(p->global(static_cast<GlobalTensor>(g)), ref.data() + ti->file_offset, ti->n_bytes), 0);
  }
}

class StreamerTest : public ::testing::TestWithParam<std::tuple<std::string, int>> {};

TEST_P(StreamerTest, TransientMatchesFileBytesWithWrapAround) {
  const auto [io, prefetch] = GetParam();
  auto m = test::open_reference_model();
  ASSERT_NE(m, nullptr);
  const std::vector<uint8_t> ref = test::read_bytes(test::reference_model_path());
  ResidencyOptions o;
  o.residency = "transient";
  o.io = io.substr(0, io.find(':')) == "faulty" ? "pread" : io;
  if (io.rfind("faulty", 0) == 0) o.fault_plan = io.substr(io.rfind(':') + 1);
  o.prefetch = prefetch;
  o.io_block_kb = 64;
  StatusOr<Plan> plan = plan_residency(m->file, m->layout, o, nullptr);
  ASSERT_TRUE(plan.ok());
  Telemetry tel;
  StatusOr<std::unique_ptr<WeightProvider>> p =
      make_provider(test::reference_model_path(), m->file, m->layout, *plan, o, &tel);
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  expect_globals(*m, ref, p->get());
  constexpr int kTokens = 3;
  for (int tok = 0; tok < kTokens; ++tok) {
    for (int il = 0; il < 2; ++il) {
      StatusOr<LayerWeights> w = (*p)->acquire(il);
      ASSERT_TRUE(w.ok()) << w.status().to_string();
      expect_layer_bytes(*m, ref, il, *w);
      (*p)->release(il);
    }
  }
  p->reset();  // joins the I/O threads: every read is accounted for
  // Prefetch wraps around: the next token's first layers may have been read too.
  const uint64_t per_token = plan->streamed_bytes_per_token;
  uint64_t streamed = 0;  // layer reads only (globals and norms are read at start-up as layer -1)
  for (const LayerStats& ls : tel.layers()) streamed += ls.bytes;
  EXPECT_GE(streamed, kTokens * per_token);
  EXPECT_LE(streamed, (kTokens + 1) * per_token);
  if (prefetch == 0) {
    EXPECT_EQ(tel.prefetch_hits(), 0);
    EXPECT_EQ(tel.prefetch_misses(), 2 * kTokens);
    EXPECT_EQ(streamed, kTokens * per_token);  // load then compute: nothing read ahead
  } else {
    EXPECT_EQ(tel.prefetch_misses(), 0);
    EXPECT_EQ(tel.prefetch_hits(), 2 * kTokens);
  }
  // Reads follow the forward pass's order and wrap around: 0 1 0 1 0 1 (then maybe 0 1 ahead).
  std::vector<int> load_order;
  for (const Transition& t : tel.transitions())
    if (t.state == LayerState::kLoading) load_order.push_back(t.layer);
  ASSERT_GE(load_order.size(), 2u * kTokens);
  ASSERT_LE(load_order.size(), 2u * (kTokens + 1));
  for (size_t i = 0; i < load_order.size(); ++i) EXPECT_EQ(load_order[i], static_cast<int>(i % 2)) << i;
  // Per layer, states cycle loading -> staged -> active -> evicted.
  for (int il = 0; il < 2; ++il) {
    std::vector<LayerState> seq;
    for (const Transition& t : tel.transitions())
      if (t.layer == il) seq.push_back(t.state);
    const LayerState cycle[] = {LayerState::kLoading, LayerState::kStaged, LayerState::kActive, LayerState::kEvicted};
    ASSERT_GE(seq.size(), 4u * kTokens);
    for (size_t i = 0; i < seq.size(); ++i) EXPECT_EQ(seq[i], cycle[i % 4]) << "layer " << il << " step " << i;
  }
  // Transition timestamps never go backwards per layer.
  std::vector<int64_t> last(2, -1);
  for (const Transition& t : tel.transitions()) {
    if (t.layer < 0) continue;
    EXPECT_GE(t.t_ns, last[t.layer]);
    last[t.layer] = t.t_ns;
  }
}

INSTANTIATE_TEST_SUITE_P(BackendsByPrefetch, StreamerTest,
                         ::testing::Combine(::testing::ValuesIn(backends()), ::testing::Values(0, 1, 2, 3)),
                         [](const ::testing::TestParamInfo<std::tuple<std::string, int>>& i) {
                           return std::get<0>(i.param).substr(0, std::get<0>(i.param).find(':')) + "_prefetch" +
                                  std::to_string(std::get<1>(i.param));
                         });

class FakeModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.file("fake.gguf");
    // 8 layers of 7 x 96 KiB + 2 x 1 KiB norms: tensors straddle 4096 boundaries.
    m_ = test::make_fake_model(path_, 8, 96 * 1024 + 64, 1024, 300000, 200000);
    ref_ = test::read_bytes(path_);
  }
  std::unique_ptr<WeightProvider> provider(const ResidencyOptions& o, Telemetry* tel, Plan* plan_out = nullptr) {
    StatusOr<Plan> plan = plan_residency(m_->file, m_->layout, o, nullptr);
    EXPECT_TRUE(plan.ok()) << plan.status().to_string();
    if (plan_out != nullptr) *plan_out = *plan;
    StatusOr<std::unique_ptr<WeightProvider>> p = make_provider(path_, m_->file, m_->layout, *plan, o, tel);
    EXPECT_TRUE(p.ok()) << p.status().to_string();
    return p.ok() ? std::move(*p) : nullptr;
  }
  test::TempDir dir_;
  std::string path_;
  std::unique_ptr<test::TestModel> m_;
  std::vector<uint8_t> ref_;
};

TEST_F(FakeModelTest, EveryPlacementAndBackendGivesTheSameBytes) {
  for (const std::string io : {"pread", "odirect", "mmap", "io_uring"}) {
    if (io == "io_uring" && !io::io_uring_available()) continue;
    for (const char* residency : {"full", "transient", "auto"}) {
      for (int64_t ram_mb : {0, 2}) {
        ResidencyOptions o;
        o.io = io;
        o.residency = residency;
        o.vram_budget_mb = 2;  // auto: a couple of layers resident
        if (std::string(residency) == "full") o.vram_budget_mb = 0;
        o.ram_budget_mb = ram_mb;  // 2 MiB: ring of 2 + a few cached layers
        o.prefetch = 1;
        o.io_threads = 2;
        Telemetry tel;
        Plan plan;
        auto p = provider(o, &tel, &plan);
        ASSERT_NE(p, nullptr) << io << " " << residency;
        expect_globals(*m_, ref_, p.get());
        for (int tok = 0; tok < 3; ++tok)
          for (int il = 0; il < 8; ++il) {
            StatusOr<LayerWeights> w = p->acquire(il);
            ASSERT_TRUE(w.ok()) << w.status().to_string();
            expect_layer_bytes(*m_, ref_, il, *w);
            p->release(il);
          }
      }
    }
  }
}

TEST_F(FakeModelTest, OutOfOrderAccessStillCorrect) {
  ResidencyOptions o;
  o.residency = "transient";
  o.prefetch = 2;
  Telemetry tel;
  auto p = provider(o, &tel);
  ASSERT_NE(p, nullptr);
  for (int il : {5, 0, 7, 7, 3, 4, 5, 1, 0, 6, 2}) {
    StatusOr<LayerWeights> w = p->acquire(il);
    ASSERT_TRUE(w.ok()) << w.status().to_string();
    expect_layer_bytes(*m_, ref_, il, *w);
    p->release(il);
  }
  EXPECT_GT(tel.prefetch_misses(), 0);
}

TEST_F(FakeModelTest, HoldingMoreLayersThanSlotsIsAnError) {
  ResidencyOptions o;
  o.residency = "transient";
  o.prefetch = 0;  // one slot
  auto p = provider(o, nullptr);
  ASSERT_NE(p, nullptr);
  ASSERT_TRUE(p->acquire(0).ok());
  StatusOr<LayerWeights> w = p->acquire(1);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), StatusCode::kResourceExhausted);
  p->release(0);
  EXPECT_TRUE(p->acquire(1).ok());
  p->release(1);
}

TEST_F(FakeModelTest, IoOnlyReadsExactlyThePlan) {
  for (const std::string io : {"pread", "odirect", "mmap"}) {
    for (int prefetch : {0, 1, 3}) {
      for (int64_t ram_mb : {0, 4}) {
        ResidencyOptions o;
        o.residency = "transient";
        o.io = io;
        o.prefetch = prefetch;
        o.ram_budget_mb = ram_mb;
        StatusOr<Plan> plan = plan_residency(m_->file, m_->layout, o, nullptr);
        ASSERT_TRUE(plan.ok());
        Telemetry tel;
        StatusOr<IoOnlyResult> r = run_io_only(path_, m_->file, m_->layout, *plan, o, 4, &tel);
        ASSERT_TRUE(r.ok()) << r.status().to_string();
        EXPECT_EQ(r->read_bytes, plan->first_token_bytes + 3 * plan->streamed_bytes_per_token)
            << io << " prefetch " << prefetch << " ram " << ram_mb;
        EXPECT_GT(r->elapsed_ns, 0);
        EXPECT_GT(r->read_gb_s, 0);
        if (ram_mb > 0) {
          EXPECT_GT(plan->n_cached, 0);
        }
      }
    }
  }
}

TEST_F(FakeModelTest, TelemetryJsonAndTrace) {
  ResidencyOptions o;
  o.residency = "transient";
  Telemetry tel;
  {
    auto p = provider(o, &tel);
    ASSERT_NE(p, nullptr);
    for (int il = 0; il < 8; ++il) {
      ASSERT_TRUE(p->acquire(il).ok());
      p->release(il);
    }
  }
  const std::string j = tel.to_json();
  for (const char* k : {"\"read_bytes\"", "\"stall_ns\"", "\"prefetch_hits\"", "\"prefetch_misses\"", "\"layers\"",
                        "\"load_ns\"", "\"compute_ns\"", "\"bytes\"", "\"peak_rss_bytes\""})
    EXPECT_NE(j.find(k), std::string::npos) << k;
  ASSERT_EQ(tel.layers().size(), 8u);
  for (const LayerStats& ls : tel.layers()) {
    EXPECT_EQ(ls.visits, 1);
    EXPECT_GE(ls.loads, 1);
  }
  const std::string trace = tel.chrome_trace();
  EXPECT_NE(trace.find("\"traceEvents\""), std::string::npos);
  EXPECT_NE(trace.find("\"ph\":\"X\""), std::string::npos);
  EXPECT_NE(trace.find("\"cat\":\"io\""), std::string::npos);
  EXPECT_NE(trace.find("\"cat\":\"compute\""), std::string::npos);
  EXPECT_GT(tel.peak_rss_bytes(), 0u);
  EXPECT_TRUE(tel.write_chrome_trace(dir_.file("t.json")).ok());
}

}  // namespace
}  // namespace flea

namespace flea {
namespace {

// Measurement boundaries: after wait_idle() the read-ahead a pass started is counted, every time.
// The disk is throttled so that read-ahead is still in flight when the pass ends; without
// wait_idle() the count would miss it (that race made bench's bytes per token vary run to run).
TEST_F(FakeModelTest, WaitIdleCountsTheReadAheadInFlight) {
  for (int prefetch : {1, 2}) {
    ResidencyOptions o;
    o.residency = "transient";
    o.io = "pread";
    o.prefetch = prefetch;
    o.throttle_gb_s = 0.02;  // a 672 KiB layer takes ~35 ms
    Telemetry tel;
    Plan plan;
    std::unique_ptr<WeightProvider> p = provider(o, &tel, &plan);
    ASSERT_NE(p, nullptr);
    const int n_layer = static_cast<int>(m_->layout.layers.size());
    for (int il = 0; il < n_layer; ++il) {
      ASSERT_TRUE(p->acquire(il).ok());
      p->release(il);
    }
    p->wait_idle();
    const uint64_t at_boundary = tel.read_bytes();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // ~8 more layer reads' worth
    EXPECT_EQ(tel.read_bytes(), at_boundary) << "prefetch " << prefetch << ": a read finished after wait_idle()";
    // Between two boundaries: exactly one pass's reads.
    for (int il = 0; il < n_layer; ++il) {
      ASSERT_TRUE(p->acquire(il).ok());
      p->release(il);
    }
    p->wait_idle();
    EXPECT_EQ(tel.read_bytes() - at_boundary, plan.streamed_bytes_per_token) << "prefetch " << prefetch;
  }
}

}  // namespace
}  // namespace flea
