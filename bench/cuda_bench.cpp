// CUDA microbenchmarks: host-to-device copies by size (pinned vs pageable), device-to-device copy
// (the HBM ceiling: bytes read + bytes written), and the fused dequantize + matrix-vector kernels
// per weight type in weight GB/s. All timed with CUDA events (manual time), after a warm-up.
// scripts/gpu_verify.sh reads BM_H2D/pinned and BM_D2D from here as the machine's ceilings.
#include <benchmark/benchmark.h>

#ifdef FLEA_HAVE_CUDA

#include <cuda_runtime.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "compute/cuda/cuda_session.h"
#include "compute/cuda/kernels.h"
#include "quant/quant.h"

namespace {

bool have_gpu(benchmark::State& state) {
  std::string why;
  if (flea::cuda_device_available(&why)) return true;
  state.SkipWithError(("no GPU: " + why).c_str());
  return false;
}

// Times `body` (which enqueues on `stream`) with events; returns seconds.
template <class F>
double timed(cudaStream_t stream, F body) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  cudaEventRecord(a, stream);
  body();
  cudaEventRecord(b, stream);
  cudaEventSynchronize(b);
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms * 1e-3;
}

void BM_H2D(benchmark::State& state, bool pinned) {
  if (!have_gpu(state)) return;
  const size_t n = static_cast<size_t>(state.range(0));
  void* host = nullptr;
  std::vector<uint8_t> pageable;
  if (pinned) {
    if (cudaHostAlloc(&host, n, cudaHostAllocDefault) != cudaSuccess) { state.SkipWithError("cudaHostAlloc failed"); return; }
  } else {
    pageable.resize(n);
    host = pageable.data();
  }
  std::memset(host, 0x5a, n);  // fault the pages in; not zeros
  void* dev = nullptr;
  if (cudaMalloc(&dev, n) != cudaSuccess) { state.SkipWithError("cudaMalloc failed"); return; }
  cudaStream_t s;
  cudaStreamCreate(&s);
  cudaMemcpyAsync(dev, host, n, cudaMemcpyHostToDevice, s);  // warm-up
  cudaStreamSynchronize(s);
  for (auto _ : state) {
    state.SetIterationTime(timed(s, [&] { cudaMemcpyAsync(dev, host, n, cudaMemcpyHostToDevice, s); }));
  }
  if (cudaGetLastError() != cudaSuccess) state.SkipWithError("CUDA error");
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(n));
  cudaStreamDestroy(s);
  cudaFree(dev);
  if (pinned) cudaFreeHost(host);
}
void BM_H2D_pinned(benchmark::State& state) { BM_H2D(state, true); }
void BM_H2D_pageable(benchmark::State& state) { BM_H2D(state, false); }
BENCHMARK(BM_H2D_pinned)->Name("BM_H2D/pinned")->RangeMultiplier(16)->Range(1 << 20, 256 << 20)->UseManualTime()->Iterations(20);
BENCHMARK(BM_H2D_pageable)->Name("BM_H2D/pageable")->RangeMultiplier(16)->Range(1 << 20, 256 << 20)->UseManualTime()->Iterations(10);

// Device-to-device copy of 1 GiB: bytes_per_second counts the read and the write.
void BM_D2D(benchmark::State& state) {
  if (!have_gpu(state)) return;
  const size_t n = static_cast<size_t>(state.range(0));
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, n) != cudaSuccess || cudaMalloc(&b, n) != cudaSuccess) { state.SkipWithError("cudaMalloc failed"); return; }
  cudaMemset(a, 0x3c, n);
  cudaStream_t s;
  cudaStreamCreate(&s);
  cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, s);
  cudaStreamSynchronize(s);
  for (auto _ : state) {
    state.SetIterationTime(timed(s, [&] { cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, s); }));
  }
  if (cudaGetLastError() != cudaSuccess) state.SkipWithError("CUDA error");
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 2 * static_cast<int64_t>(n));
  cudaStreamDestroy(s);
  cudaFree(a);
  cudaFree(b);
}
BENCHMARK(BM_D2D)->Arg(1 << 30)->UseManualTime()->Iterations(20);

// One token through a rows × cols matrix: bytes_per_second = weight bytes read per second.
// Several weight copies are rotated so repeated runs do not measure L2.
void BM_MatVec(benchmark::State& state, flea::GgmlType type) {
  if (!have_gpu(state)) return;
  const int64_t rows = state.range(0), cols = state.range(1);
  const flea::TypeInfo& ti = flea::type_info(type);
  const size_t wbytes = flea::row_bytes(ti, cols) * static_cast<size_t>(rows);
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.f, 0.05f);
  std::vector<float> wf(static_cast<size_t>(cols));
  std::vector<uint8_t> w(wbytes);
  const flea::quant::QuantOps* ops = flea::quant::ops(type);
  if (ops != nullptr && ops->quantize != nullptr) {
    for (int64_t r = 0; r < rows; ++r) {
      for (float& x : wf) x = dist(rng);
      ops->quantize(wf.data(), w.data() + static_cast<size_t>(r) * flea::row_bytes(ti, cols), cols);
    }
  } else {
    // No CPU quantizer in this build: random bytes time the same (integer unpacking, any value).
    std::uniform_int_distribution<int> byte(0, 255);
    for (uint8_t& b : w) b = static_cast<uint8_t>(byte(rng));
  }
  constexpr int kCopies = 4;
  std::vector<uint8_t*> dw(kCopies, nullptr);
  for (auto& p : dw) {
    if (cudaMalloc(reinterpret_cast<void**>(&p), wbytes) != cudaSuccess) { state.SkipWithError("cudaMalloc failed"); return; }
    cudaMemcpy(p, w.data(), wbytes, cudaMemcpyHostToDevice);
  }
  std::vector<float> x(static_cast<size_t>(cols));
  for (float& v : x) v = dist(rng) * 20;
  float *dx = nullptr, *dout = nullptr, *dd = nullptr;
  void* dq = nullptr;
  const flea::GgmlType fmt = flea::cuda::activation_format(type);
  cudaMalloc(reinterpret_cast<void**>(&dx), x.size() * 4);
  cudaMalloc(reinterpret_cast<void**>(&dout), static_cast<size_t>(rows) * 4);
  cudaMalloc(&dq, flea::cuda::activation_q_bytes(fmt, 1, cols) + 16);
  cudaMalloc(reinterpret_cast<void**>(&dd), flea::cuda::activation_d_bytes(fmt, 1, cols) + 16);
  cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice);
  flea::cuda::Activations act;
  act.format = fmt;
  act.cols = cols;
  act.n_tokens = 1;
  act.q = dq;
  act.d = dd;
  cudaStream_t s;
  cudaStreamCreate(&s);
  flea::cuda::quantize_activations(dx, &act, s);
  for (auto p : dw) flea::cuda::matmul(flea::cuda::DeviceMatrix{type, cols, rows, p}, act, dout, s);  // warm-up
  cudaStreamSynchronize(s);
  int i = 0;
  for (auto _ : state) {
    const uint8_t* p = dw[static_cast<size_t>(i++ % kCopies)];
    state.SetIterationTime(timed(s, [&] { flea::cuda::matmul(flea::cuda::DeviceMatrix{type, cols, rows, p}, act, dout, s); }));
  }
  if (cudaGetLastError() != cudaSuccess) state.SkipWithError("CUDA error");
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(wbytes));
  cudaStreamDestroy(s);
  for (auto p : dw) cudaFree(p);
  cudaFree(dx);
  cudaFree(dout);
  cudaFree(dq);
  cudaFree(dd);
}

#define FLEA_MATVEC_BENCH(T)                                                                          \
  void BM_MatVec_##T(benchmark::State& state) { BM_MatVec(state, flea::GgmlType::T); }               \
  BENCHMARK(BM_MatVec_##T)->Name("BM_MatVec/" #T)->Args({4096, 4096})->Args({11008, 4096})->Args({4096, 11008}) \
      ->UseManualTime()->Iterations(200);
FLEA_MATVEC_BENCH(F16)
FLEA_MATVEC_BENCH(BF16)
FLEA_MATVEC_BENCH(Q8_0)
FLEA_MATVEC_BENCH(Q4_0)
FLEA_MATVEC_BENCH(Q4_1)
FLEA_MATVEC_BENCH(Q5_0)
FLEA_MATVEC_BENCH(Q5_1)
FLEA_MATVEC_BENCH(IQ4_NL)
FLEA_MATVEC_BENCH(Q2_K)
FLEA_MATVEC_BENCH(Q3_K)
FLEA_MATVEC_BENCH(Q4_K)
FLEA_MATVEC_BENCH(Q5_K)
FLEA_MATVEC_BENCH(Q6_K)
FLEA_MATVEC_BENCH(IQ4_XS)

}  // namespace

#else  // !FLEA_HAVE_CUDA

namespace {
void BM_CudaUnavailable(benchmark::State& state) {
  state.SkipWithError("built without CUDA (configure with -DFLEA_CUDA=ON)");
  for (auto _ : state) {
  }
}
BENCHMARK(BM_CudaUnavailable);
}  // namespace

#endif
