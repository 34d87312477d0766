// Microbenchmarks of the quant kernels: dequantize throughput (GB/s of quantized input), dot
// products per SIMD level (GFLOP/s, 2 flops per element) and the 4096 x 4096 matmul at 1 token
// (generation) and 64 tokens (prompt processing) on 1 and 2 threads.
#include <benchmark/benchmark.h>

#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "compute/cpu/amx.h"
#include "compute/cpu/matmul.h"
#include "compute/cpu/thread_pool.h"
#include "quant/quant.h"

namespace {

using flea::GgmlType;
namespace quant = flea::quant;

constexpr GgmlType kTypes[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q8_0,
                               GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K,
                               GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::IQ4_NL,
                               GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::IQ4_XS};

std::vector<float> gaussian(int64_t n, uint32_t seed, float sigma) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& f : v) f = dist(rng);
  return v;
}

std::vector<uint8_t> quantized(GgmlType t, const std::vector<float>& x) {
  std::vector<uint8_t> q(flea::row_bytes(flea::type_info(t), static_cast<int64_t>(x.size())));
  quant::ops(t)->quantize(x.data(), q.data(), static_cast<int64_t>(x.size()));
  return q;
}

void bm_dequantize(benchmark::State& state, GgmlType t) {
  const int64_t n = 1 << 16;
  const std::vector<uint8_t> q = quantized(t, gaussian(n, 1, 0.05f));
  std::vector<float> out(static_cast<size_t>(n));
  for (auto _ : state) {
    quant::ops(t)->dequantize(q.data(), out.data(), n);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(q.size()));
  state.counters["out_GB/s"] = benchmark::Counter(static_cast<double>(n) * 4 * state.iterations() / 1e9,
                                                  benchmark::Counter::kIsRate);
}

void bm_vec_dot(benchmark::State& state, GgmlType t, const char* level) {
  const quant::VecDotFn dot = quant::vec_dot_for_level(t, level);
  if (dot == nullptr) {
    state.SkipWithError("CPU lacks this SIMD level");
    return;
  }
  const int64_t n = 4096;
  const quant::QuantOps* o = quant::ops(t);
  const std::vector<uint8_t> w = quantized(t, gaussian(n, 2, 0.05f));
  const std::vector<float> x = gaussian(n, 3, 1.0f);
  std::vector<uint8_t> a(quant::activation_row_bytes(o->vec_dot_type, n));
  quant::quantize_activation(o->vec_dot_type, x.data(), a.data(), n);
  for (auto _ : state) benchmark::DoNotOptimize(dot(n, w.data(), a.data()));
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * n * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}

void bm_quantize_activation(benchmark::State& state, GgmlType act) {
  const int64_t n = 4096;
  const std::vector<float> x = gaussian(n, 4, 1.0f);
  std::vector<uint8_t> a(quant::activation_row_bytes(act, n));
  for (auto _ : state) {
    quant::quantize_activation(act, x.data(), a.data(), n);
    benchmark::DoNotOptimize(a.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * n * 4);
}

// path: "auto" (the tiles when the CPU has them and the batch is large enough), "vnni" (tiles off).
void bm_matmul(benchmark::State& state, GgmlType t, const char* path) {
  const bool amx_on = std::string(path) != "vnni";
  if (amx_on && std::string(path) == "amx" && !flea::cpu::amx::available()) {
    state.SkipWithError(("no AMX tiles: " + std::string(flea::cpu::amx::availability())).c_str());
    return;
  }
  const bool was = flea::cpu::amx::set_enabled(amx_on);
  const int64_t n_tokens = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  const int64_t dim = 4096;
  // Quantized once per type: the reference quantizers of the low-bit types take seconds here.
  static std::map<GgmlType, std::vector<uint8_t>> weights;
  if (weights.count(t) == 0) weights[t] = quantized(t, gaussian(dim * dim, 5, 0.02f));
  const std::vector<uint8_t>& w = weights[t];
  const std::vector<float> x = gaussian(dim * n_tokens, 6, 1.0f);
  std::vector<float> out(static_cast<size_t>(dim * n_tokens));
  flea::cpu::ThreadPool pool(threads);
  const flea::cpu::WeightView view{t, dim, dim, w.data()};
  for (auto _ : state) {
    flea::cpu::matmul(view, x.data(), n_tokens, out.data(), &pool);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * dim * dim * n_tokens * state.iterations() / 1e9, benchmark::Counter::kIsRate);
  state.counters["weight_GB/s"] =
      benchmark::Counter(static_cast<double>(w.size()) * state.iterations() / 1e9, benchmark::Counter::kIsRate);
  state.counters["tok/s"] = benchmark::Counter(static_cast<double>(n_tokens) * state.iterations(),
                                               benchmark::Counter::kIsRate);
  const bool tiles = flea::cpu::amx::enabled() && flea::cpu::amx::supports(t) && n_tokens >= flea::cpu::amx::min_tokens(t);
  state.SetLabel(std::string(quant::simd_level()) + (tiles ? "+amx" : ""));
  flea::cpu::amx::set_enabled(was);
}

const bool kRegistered = [] {
  for (GgmlType t : kTypes) {
    const std::string name = flea::type_info(t).name;
    benchmark::RegisterBenchmark(("dequantize/" + name).c_str(), bm_dequantize, t);
  }
  for (GgmlType t : kTypes) {
    const std::string name = flea::type_info(t).name;
    for (const char* level : {"scalar", "avx2", "avx512"}) {
      benchmark::RegisterBenchmark(("vec_dot/" + name + "/" + level).c_str(), bm_vec_dot, t, level);
    }
  }
  for (GgmlType act : {GgmlType::Q8_0, GgmlType::Q8_K, GgmlType::F16, GgmlType::BF16}) {
    benchmark::RegisterBenchmark(("quantize_activation/" + std::string(flea::type_info(act).name)).c_str(),
                                 bm_quantize_activation, act);
  }
  for (GgmlType t : {GgmlType::Q4_K, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::F16,
                     GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::IQ4_NL,
                     GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::IQ4_XS}) {
    benchmark::RegisterBenchmark(("matmul4096/" + std::string(flea::type_info(t).name)).c_str(), bm_matmul, t, "vnni")
        ->ArgNames({"tokens", "threads"})
        ->Args({1, 1})
        ->Args({1, 2})
        ->Args({8, 1})
        ->Args({16, 1})
        ->Args({64, 1})
        ->Args({64, 2})
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    if (flea::cpu::amx::supports(t)) {  // the tile path, side by side with the VNNI one above
      benchmark::RegisterBenchmark(("matmul4096_amx/" + std::string(flea::type_info(t).name)).c_str(), bm_matmul, t,
                                   "amx")
          ->ArgNames({"tokens", "threads"})
          ->Args({8, 1})
          ->Args({16, 1})
          ->Args({64, 1})
          ->Args({64, 2})
          ->Args({512, 2})
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
  }
  return true;
}();

}  // namespace
