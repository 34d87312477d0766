// CPU matmul and thread pool: results equal the per-row dot kernel for every type, token count,
// tile remainder and thread count; the pool covers every index exactly once under stress.
#include "compute/cpu/matmul.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "compute/cpu/thread_pool.h"
#include "quant/quant.h"
#include "quant_test_util.h"
#include "test_util.h"

namespace flea::cpu {
namespace {

using quant::gaussian;

TEST(ThreadPool, CoversEveryIndexExactlyOnce) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int64_t n : {0, 1, 2, 7, 64, 1000, 4099}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      for (auto& h : hits) h.store(0);
      pool.parallel_for(n, [&](int64_t b, int64_t e) {
        ASSERT_LE(0, b);
        ASSERT_LT(b, e);
        ASSERT_LE(e, n);
        for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << "n=" << n << " i=" << i;
    }
  }
}

TEST(ThreadPool, ExplicitGrainAndManyBackToBackJobs) {
  ThreadPool pool(3);
  std::atomic<int64_t> total{0};
  for (int job = 0; job < 3000; ++job) {
    pool.parallel_for(97, 5, [&](int64_t b, int64_t e) {
      ASSERT_LE(e - b, 5);
      total.fetch_add(e - b);
    });
  }
  EXPECT_EQ(total.load(), 97 * 3000);
}

// More threads than cores and than chunks: most workers arrive after the job's chunks are done
// (the caller does not wait for them) and must then leave the job alone, also while the caller
// already runs the next one with a different function and size (each job writes its own array).
TEST(ThreadPool, LateWorkersNeverTouchAFinishedJob) {
  ThreadPool pool(16);
  for (int job = 0; job < 4000; ++job) {
    const int64_t n = 1 + job % 3;
    std::vector<int> hits(static_cast<size_t>(n), 0);
    pool.parallel_for(n, 1, [&hits, n](int64_t b, int64_t e) {
      ASSERT_LE(e, n);
      for (int64_t i = b; i < e; ++i) ++hits[static_cast<size_t>(i)];  // one chunk per index: no race
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)], 1) << "job " << job << " index " << i;
  }
}

TEST(ThreadPool, WakesWorkersThatWentToSleep) {
  ThreadPool pool(2);
  for (int job = 0; job < 5; ++job) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // longer than the spin phase
    std::atomic<int> sum{0};
    pool.parallel_for(64, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sum.fetch_add(static_cast<int>(i));
    });
    EXPECT_EQ(sum.load(), 63 * 64 / 2);
  }
}

std::vector<float> reference_matmul(const WeightView& w, const std::vector<float>& x, int64_t n_tokens) {
  return quant::per_row_dots(w.type, w.cols, w.rows, w.data, x, n_tokens);
}

TEST(Matmul, EqualsPerRowDotForEveryTypeTokenCountAndThreadCount) {
  const GgmlType types[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q8_0,
                            GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};
  const int64_t cols = 512, rows = 37;  // 37: not a multiple of the row tile
  const test::AmxOff vnni_only;  // the tile path is checked against the dots in matmul_amx_test
  const std::vector<float> wf = gaussian(cols * rows, 1, 0.05f);
  const std::string best = quant::best_simd_level();
  for (const char* level : {"scalar", "avx2", "avx512"}) {
    if (quant::vec_dot_for_level(GgmlType::Q8_0, level) == nullptr) continue;
    quant::force_simd_level(level);
    for (GgmlType t : types) {
      const quant::QuantOps* o = quant::ops(t);
      std::vector<uint8_t> wq(row_bytes(type_info(t), cols) * rows);
      o->quantize(wf.data(), wq.data(), cols * rows);
      const WeightView w{t, cols, rows, wq.data()};
      for (int64_t n_tokens : {1, 2, 5, 17}) {
        const std::vector<float> x = gaussian(cols * n_tokens, static_cast<uint32_t>(n_tokens) + 7, 1.0f);
        const std::vector<float> want = reference_matmul(w, x, n_tokens);
        for (int threads : {0, 1, 2, 3}) {
          std::unique_ptr<ThreadPool> pool = threads > 0 ? std::make_unique<ThreadPool>(threads) : nullptr;
          std::vector<float> out(static_cast<size_t>(n_tokens * rows), NAN);
          matmul(w, x.data(), n_tokens, out.data(), pool.get());
          for (size_t i = 0; i < out.size(); ++i) {
            ASSERT_EQ(out[i], want[i]) << level << " " << type_info(t).name << " tokens=" << n_tokens
                                       << " threads=" << threads << " i=" << i;
          }
        }
      }
    }
  }
  quant::force_simd_level(best.c_str());
}

TEST(Matmul, CloseToFloatMatmulOfDequantizedWeights) {
  const int64_t cols = 1024, rows = 64, n_tokens = 3;
  const std::vector<float> wf = gaussian(cols * rows, 5, 0.03f);
  const std::vector<float> x = gaussian(cols * n_tokens, 6, 1.0f);
  const std::pair<GgmlType, double> cases[] = {{GgmlType::F16, 1e-3}, {GgmlType::Q8_0, 0.02}, {GgmlType::Q4_K, 0.05},
                                               {GgmlType::Q6_K, 0.03}};
  for (const auto& [t, tol] : cases) {
    const quant::QuantOps* o = quant::ops(t);
    std::vector<uint8_t> wq(row_bytes(type_info(t), cols) * rows);
    o->quantize(wf.data(), wq.data(), cols * rows);
    const WeightView w{t, cols, rows, wq.data()};
    std::vector<float> out(static_cast<size_t>(n_tokens * rows));
    ThreadPool pool(2);
    matmul(w, x.data(), n_tokens, out.data(), &pool);
    std::vector<float> row(static_cast<size_t>(cols));
    double err = 0, ref = 0;
    for (int64_t r = 0; r < rows; ++r) {
      dequantize_row(w, r, row.data());
      for (int64_t tk = 0; tk < n_tokens; ++tk) {
        double want = 0;
        for (int64_t c = 0; c < cols; ++c) want += static_cast<double>(row[c]) * x[tk * cols + c];
        err += (out[tk * rows + r] - want) * (out[tk * rows + r] - want);
        ref += want * want;
      }
    }
    // Only activation quantization separates the two (the weights are the same dequantized values).
    EXPECT_LT(std::sqrt(err / ref), tol) << type_info(t).name;
  }
}

TEST(Matmul, DequantizeRowMatchesWholeTensor) {
  const int64_t cols = 256, rows = 5;
  const std::vector<float> wf = gaussian(cols * rows, 9, 1.0f);
  for (GgmlType t : {GgmlType::Q4_0, GgmlType::Q6_K, GgmlType::BF16}) {
    const quant::QuantOps* o = quant::ops(t);
    std::vector<uint8_t> wq(row_bytes(type_info(t), cols) * rows);
    o->quantize(wf.data(), wq.data(), cols * rows);
    std::vector<float> all(static_cast<size_t>(cols * rows)), row(static_cast<size_t>(cols));
    o->dequantize(wq.data(), all.data(), cols * rows);
    const WeightView w{t, cols, rows, wq.data()};
    for (int64_t r = 0; r < rows; ++r) {
      dequantize_row(w, r, row.data());
      for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(row[c], all[r * cols + c]);
    }
  }
}

}  // namespace
}  // namespace flea::cpu
