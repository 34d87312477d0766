// The AMX-INT8 tile matmul: for every type it handles, close to the VNNI dots (same integer levels,
// different float summation order), deterministic across runs and thread counts, switched off by
// amx::set_enabled(false) (then bit-identical to the per-row dots again). Skips with the reason on
// a CPU or kernel without tiles.
#include "compute/cpu/amx.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "compute/cpu/matmul.h"
#include "compute/cpu/thread_pool.h"
#include "quant/quant.h"
#include "quant_test_util.h"

namespace flea::cpu {
namespace {

using quant::gaussian;

std::vector<float> per_row_dots(const WeightView& w, const std::vector<float>& x, int64_t n_tokens) {
  return quant::per_row_dots(w.type, w.cols, w.rows, w.data, x, n_tokens);
}

class AmxMatmul : public ::testing::TestWithParam<GgmlType> {
 protected:
  void SetUp() override {
    if (!amx::available()) GTEST_SKIP() << "no AMX tiles: " << amx::availability();
    amx::set_enabled(true);
  }
  void TearDown() override { amx::set_enabled(true); }
};

// Columns: an odd number of 32-element sub-blocks for the 32-element types (the kernel pairs
// sub-blocks), several super-blocks for the k-quants; rows: not a multiple of the 16-row strip.
int64_t cols_for(GgmlType t) { return type_info(t).block_size == 256 ? 768 : 544; }

TEST_P(AmxMatmul, CloseToTheVnniDotsForEveryTokenCountAndThreadCount) {
  const GgmlType t = GetParam();
  ASSERT_TRUE(amx::supports(t));
  const int64_t cols = cols_for(t), rows = 37;
  const quant::QuantOps* o = quant::ops(t);
  const std::vector<float> wf = gaussian(cols * rows, 3, 0.05f);
  std::vector<uint8_t> wq(row_bytes(type_info(t), cols) * rows);
  o->quantize(wf.data(), wq.data(), cols * rows);
  const WeightView w{t, cols, rows, wq.data()};
  for (int64_t n_tokens : {amx::min_tokens(t), int64_t{16}, int64_t{17}, int64_t{40}}) {
    const std::vector<float> x = gaussian(cols * n_tokens, static_cast<uint32_t>(n_tokens) + 11, 1.0f);
    const std::vector<float> want = per_row_dots(w, x, n_tokens);
    // |error| relative to the largest output: the integer block products are exact, so what is left
    // is float rounding of ~cols/32 scaled terms (~1e-7 relative each).
    float scale = 0;
    for (float v : want) scale = std::max(scale, std::fabs(v));
    std::vector<float> first;
    for (int threads : {0, 1, 3}) {
      std::unique_ptr<ThreadPool> pool = threads > 0 ? std::make_unique<ThreadPool>(threads) : nullptr;
      std::vector<float> out(static_cast<size_t>(n_tokens * rows), NAN);
      matmul(w, x.data(), n_tokens, out.data(), pool.get());
      for (size_t i = 0; i < out.size(); ++i) {
        ASSERT_NEAR(out[i], want[i], 2e-6f * scale)
            << type_info(t).name << " tokens=" << n_tokens << " threads=" << threads << " i=" << i;
      }
      if (first.empty()) {
        first = out;
      } else {  // each strip is one thread's work, summed in one order: bit-identical
        ASSERT_EQ(out, first) << type_info(t).name << " tokens=" << n_tokens << " threads=" << threads;
      }
    }
  }
}

TEST_P(AmxMatmul, SwitchedOffGivesThePerRowDotsExactly) {
  const GgmlType t = GetParam();
  const int64_t cols = cols_for(t), rows = 20, n_tokens = 24;
  const quant::QuantOps* o = quant::ops(t);
  const std::vector<float> wf = gaussian(cols * rows, 5, 0.05f);
  std::vector<uint8_t> wq(row_bytes(type_info(t), cols) * rows);
  o->quantize(wf.data(), wq.data(), cols * rows);
  const WeightView w{t, cols, rows, wq.data()};
  const std::vector<float> x = gaussian(cols * n_tokens, 9, 1.0f);
  const std::vector<float> want = per_row_dots(w, x, n_tokens);
  ThreadPool pool(2);
  std::vector<float> on(want.size()), off(want.size());
  matmul(w, x.data(), n_tokens, on.data(), &pool);
  amx::set_enabled(false);
  EXPECT_FALSE(amx::enabled());
  matmul(w, x.data(), n_tokens, off.data(), &pool);
  EXPECT_EQ(off, want);
  EXPECT_NE(on, want) << "the tile path did not run (or summed in exactly the VNNI order)";
}

INSTANTIATE_TEST_SUITE_P(Types, AmxMatmul,
                         ::testing::Values(GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0,
                                           GgmlType::Q5_1, GgmlType::IQ4_NL, GgmlType::Q4_K, GgmlType::Q5_K,
                                           GgmlType::Q6_K, GgmlType::IQ4_XS),
                         [](const auto& info) { return std::string(type_info(info.param).name); });

TEST(Amx, TypesWithoutATileKernelAreNotClaimed) {
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q2_K, GgmlType::Q3_K}) {
    EXPECT_FALSE(amx::supports(t)) << type_info(t).name;
  }
}

TEST(Amx, AvailabilityIsExplained) {
  const std::string why = amx::availability();
  EXPECT_FALSE(why.empty());
  EXPECT_EQ(amx::available(), why == "granted") << why;
}

}  // namespace
}  // namespace flea::cpu
