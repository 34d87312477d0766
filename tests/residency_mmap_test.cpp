// The larger-than-RAM property at small scale: streaming a 64 MB file keeps this process's RSS
// bounded by the plan's window (mmap: faulted in ahead, dropped behind; staging backends: the ring),
// while mapping it fully resident does not (the control that shows the measurement can fail).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "residency/provider.h"
#include "residency_test_model.h"

namespace flea {
namespace {

constexpr uint64_t kMiB = 1 << 20;

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;  // shadow memory inflates RSS out of proportion
#else
constexpr bool kSanitized = false;
#endif

class RssTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    path_ = dir_.file("big.gguf");
    // 16 layers x (7 x 512 KiB + 2 x 4 KiB) + 4 MiB globals ~= 60 MiB.
    m_ = test::make_fake_model(path_, 16, 512 * 1024, 4096, 2 * kMiB, 2 * kMiB);
  }
  uint64_t stream_peak_growth(const std::string& residency, int prefetch) {
    return stream_peak_growth(*m_, path_, 16, residency, prefetch, 0);
  }
  // Peak RSS growth (bytes) over streaming two tokens through `m` (n_layer layers).
  uint64_t stream_peak_growth(const test::TestModel& m, const std::string& path, int n_layer,
                              const std::string& residency, int prefetch, int64_t ram_budget_mb) {
    ResidencyOptions o;
    o.residency = residency;
    o.io = GetParam();
    o.prefetch = prefetch;
    o.ram_budget_mb = ram_budget_mb;
    StatusOr<Plan> plan = plan_residency(m.file, m.layout, o, nullptr);
    EXPECT_TRUE(plan.ok()) << plan.status().to_string();
    if (!plan.ok()) return UINT64_MAX;
    const uint64_t base = current_rss_bytes();
    uint64_t peak = base;
    {
      StatusOr<std::unique_ptr<WeightProvider>> p = make_provider(path, m.file, m.layout, *plan, o, nullptr);
      EXPECT_TRUE(p.ok()) << p.status().to_string();
      if (!p.ok()) return UINT64_MAX;
      uint64_t sum = 0;
      for (int tok = 0; tok < 2; ++tok)
        for (int il = 0; il < n_layer; ++il) {
          StatusOr<LayerWeights> w = (*p)->acquire(il);
          EXPECT_TRUE(w.ok());
          // Touch every page the forward pass would read.
          for (int t = 0; t < kLayerTensorCount; ++t) {
            const gguf::TensorInfo* ti = m.layout.layers[il][t];
            if (ti == nullptr) continue;
            for (uint64_t b = 0; b < ti->n_bytes; b += 4096) sum += w->data[t][b];
            EXPECT_EQ(w->data[t][0], test::fake_byte(ti->file_offset));
          }
          peak = std::max(peak, current_rss_bytes());
          (*p)->release(il);
        }
      EXPECT_GT(sum, 0u);
    }
    return peak - base;
  }
  test::TempDir dir_;
  std::string path_;
  std::unique_ptr<test::TestModel> m_;
};

TEST_P(RssTest, TransientStaysWithinTheWindow) {
  if (kSanitized) GTEST_SKIP() << "RSS bounds are meaningless under a sanitizer's shadow memory";
  const uint64_t layer = 7 * 512 * 1024 + 8192;
  // Globals + norms (~4 MiB), prefetch+1 layers in the window (+1 for a page-straddling neighbour)
  // and 4 MiB for allocator and test noise; the file is ~60 MiB.
  const uint64_t bound = 4 * kMiB + 4 * layer + 4 * kMiB;
  const uint64_t growth = stream_peak_growth("transient", 1);
  EXPECT_LT(growth, bound) << "peak RSS grew " << growth / kMiB << " MiB";
  RecordProperty("peak_rss_growth_mib", static_cast<int>(growth / kMiB));
}

TEST_P(RssTest, FullResidencyIsTheControl) {
  const uint64_t growth = stream_peak_growth("full", 1);
  EXPECT_GT(growth, 50 * kMiB) << "the RSS measurement should see a fully resident 60 MiB model";
}

// The "flat from 1b to 13b" at small scale: with a fixed host-RAM budget, a model with six
// times the layers (and file size) must not raise peak RSS: staging ring + cache stay inside the
// budget, so growth is bounded by budget + globals whatever the file size.
TEST_P(RssTest, PeakIsFlatInModelSizeUnderARamBudget) {
  if (kSanitized) GTEST_SKIP() << "RSS bounds are meaningless under a sanitizer's shadow memory";
  constexpr int64_t kBudgetMiB = 16;
  const uint64_t globals = 4 * kMiB + 4096;
  std::vector<uint64_t> growth;
  for (int n_layer : {8, 24, 48}) {  // files of ~32, ~88 and ~172 MiB
    const std::string path = dir_.file("flat" + std::to_string(n_layer) + ".gguf");
    std::unique_ptr<test::TestModel> m = test::make_fake_model(path, n_layer, 512 * 1024, 4096, 2 * kMiB, 2 * kMiB);
    growth.push_back(stream_peak_growth(*m, path, n_layer, "transient", 1, kBudgetMiB));
    std::remove(path.c_str());
    RecordProperty("peak_rss_growth_mib_" + std::to_string(n_layer) + "_layers", static_cast<int>(growth.back() / kMiB));
    EXPECT_LT(growth.back(), kBudgetMiB * kMiB + globals + 6 * kMiB)
        << n_layer << " layers: peak RSS grew " << growth.back() / kMiB << " MiB";
  }
  const auto [lo, hi] = std::minmax_element(growth.begin(), growth.end());
  EXPECT_LT(*hi - *lo, 6 * kMiB) << "peak RSS growth went from " << *lo / kMiB << " to " << *hi / kMiB
                                << " MiB as the model grew 6x";
}

INSTANTIATE_TEST_SUITE_P(Backends, RssTest, ::testing::Values("mmap", "pread"));

}  // namespace
}  // namespace flea
