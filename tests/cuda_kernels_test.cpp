// ctest-labels: gpu
// The CUDA kernels against the CPU backend on random data, per weight type: matmul for one token
// and for batches that span several token tiles, and the embedding row dequantizer. Skips when
// no CUDA device is present.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "compute/cpu/matmul.h"
#include "compute/cuda/cuda_session.h"
#include "compute/cuda/kernels.h"
#include "quant/quant.h"

namespace flea {
namespace {

#define SKIP_WITHOUT_GPU()                                              \
  do {                                                                  \
    std::string why;                                                    \
    if (!cuda_device_available(&why)) GTEST_SKIP() << "no GPU: " << why; \
  } while (0)

template <class T>
struct DevBuf {
  T* p = nullptr;
  explicit DevBuf(size_t n) { EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&p), std::max<size_t>(n, 1) * sizeof(T)), cudaSuccess); }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
};

std::vector<float> random_floats(size_t n, std::mt19937& rng, float scale) {
  std::normal_distribution<float> dist(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

const GgmlType kTypes[] = {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q4_0,
                           GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};

TEST(CudaKernels, MatmulMatchesTheCpuForEveryType) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(1234);
  const int64_t cols = 768, rows = 203;  // rows not a multiple of the 4 rows per block
  for (GgmlType type : kTypes) {
    const TypeInfo& ti = type_info(type);
    const quant::QuantOps* ops = quant::ops(type);
    ASSERT_NE(ops, nullptr);
    const std::vector<float> wf = random_floats(static_cast<size_t>(rows * cols), rng, 0.05f);
    std::vector<uint8_t> w(row_bytes(ti, cols) * static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) ops->quantize(wf.data() + r * cols, w.data() + r * row_bytes(ti, cols), cols);
    DevBuf<uint8_t> dw(w.size());
    ASSERT_EQ(cudaMemcpy(dw.p, w.data(), w.size(), cudaMemcpyHostToDevice), cudaSuccess);
    for (int64_t T : {1, 3, 8, 19}) {
      const std::vector<float> x = random_floats(static_cast<size_t>(T * cols), rng, 1.0f);
      std::vector<float> want(static_cast<size_t>(T * rows));
      cpu::matmul(cpu::WeightView{type, cols, rows, w.data()}, x.data(), T, want.data(), nullptr);

      DevBuf<float> dx(x.size()), dout(want.size());
      const GgmlType fmt = cuda::activation_format(type);
      DevBuf<uint8_t> dq(cuda::activation_q_bytes(fmt, T, cols));
      DevBuf<float> dd(cuda::activation_d_bytes(fmt, T, cols) / 4 + 1);
      ASSERT_EQ(cudaMemcpy(dx.p, x.data(), x.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
      ASSERT_EQ(cudaMemset(dout.p, 0xff, want.size() * 4), cudaSuccess);  // NaN poison: every output must be written
      cuda::Activations act;
      act.format = fmt;
      act.cols = cols;
      act.n_tokens = T;
      act.q = dq.p;
      act.d = dd.p;
      cuda::quantize_activations(dx.p, &act, nullptr);
      cuda::matmul(cuda::DeviceMatrix{type, cols, rows, dw.p}, act, dout.p, nullptr);
      ASSERT_EQ(cudaGetLastError(), cudaSuccess);
      std::vector<float> got(want.size());
      ASSERT_EQ(cudaMemcpy(got.data(), dout.p, got.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
      double err = 0, norm = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        ASSERT_FALSE(std::isnan(got[i])) << ti.name << " T=" << T << " output " << i << " not written";
        err += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
        norm += static_cast<double>(want[i]) * want[i];
      }
      // Same activation rounding and exact integer dots: only float summation order differs.
      EXPECT_LE(err / norm, 1e-10) << ti.name << " T=" << T;
    }
  }
}

TEST(CudaKernels, DequantizedRowsAreBitIdenticalToTheCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(99);
  const int64_t cols = 512, rows = 40;
  for (GgmlType type : kTypes) {
    const TypeInfo& ti = type_info(type);
    const quant::QuantOps* ops = quant::ops(type);
    const std::vector<float> wf = random_floats(static_cast<size_t>(rows * cols), rng, 0.1f);
    std::vector<uint8_t> w(row_bytes(ti, cols) * static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) ops->quantize(wf.data() + r * cols, w.data() + r * row_bytes(ti, cols), cols);
    const std::vector<int32_t> ids = {3, 0, 39, 3, 17};
    DevBuf<uint8_t> dw(w.size());
    DevBuf<int32_t> dids(ids.size());
    DevBuf<float> dout(ids.size() * static_cast<size_t>(cols));
    ASSERT_EQ(cudaMemcpy(dw.p, w.data(), w.size(), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(dids.p, ids.data(), ids.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
    cuda::dequantize_rows(cuda::DeviceMatrix{type, cols, rows, dw.p}, dids.p, static_cast<int64_t>(ids.size()), dout.p,
                          nullptr);
    std::vector<float> got(ids.size() * static_cast<size_t>(cols));
    ASSERT_EQ(cudaMemcpy(got.data(), dout.p, got.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    std::vector<float> want(static_cast<size_t>(cols));
    for (size_t i = 0; i < ids.size(); ++i) {
      cpu::dequantize_row(cpu::WeightView{type, cols, rows, w.data()}, ids[i], want.data());
      EXPECT_EQ(0, std::memcmp(want.data(), got.data() + i * static_cast<size_t>(cols), want.size() * 4))
          << ti.name << " row " << ids[i];
    }
  }
}

}  // namespace
}  // namespace flea
