// ctest-labels: gpu
// The CUDA kernels against the CPU backend on random data, per weight type: matmul for one token
// and for batches that span several token tiles, and the embedding row dequantizer. Skips when
// no CUDA device is present, and per type when this build's CPU backend lacks the type
// (quant::ops); the device kernels against their own host build need no CPU kernel. Quantized weights are random blocks (tests/random_blocks.h), so every level,
// scale and high-bit pattern occurs; float weights come from the CPU's converter.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include "compute/cpu/matmul.h"
#include "compute/cuda/cuda_session.h"
#include "compute/cuda/kernels.h"
#include "chunk_host.h"
#include "quant/quant.h"
#include "random_blocks.h"

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

// rows × cols weights of `type`: random blocks for the quantized types, the CPU's conversion of
// random floats for F32 / F16 / BF16.
std::vector<uint8_t> make_weights(GgmlType type, int64_t cols, int64_t rows, std::mt19937& rng, float scale) {
  if (!test::fp16_field_offsets(type).empty()) return test::random_blocks(type, cols, rows, rng);
  const TypeInfo& ti = type_info(type);
  const std::vector<float> wf = random_floats(static_cast<size_t>(rows * cols), rng, scale);
  std::vector<uint8_t> w(row_bytes(ti, cols) * static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    quant::ops(type)->quantize(wf.data() + r * cols, w.data() + r * row_bytes(ti, cols), cols);
  }
  return w;
}

// The CPU side of the comparison; nullptr (the caller skips) when this build lacks the type.
// out (T, rows) = weights (rows, cols of `type`, on the device) times x (T, cols, on the device), the
// way the session does it: x quantized into q/d in the type's activation format, then the matmul.
void quantize_and_matmul(GgmlType type, int64_t cols, int64_t rows, int64_t T, const uint8_t* w, const float* x,
                         void* q, float* d, float* out) {
  cuda::Activations act;
  act.format = cuda::activation_format(type);
  act.cols = cols;
  act.n_tokens = T;
  act.q = q;
  act.d = d;
  cuda::quantize_activations(x, &act, nullptr);
  cuda::matmul(cuda::DeviceMatrix{type, cols, rows, w}, act, out, nullptr);
}

const quant::QuantOps* cpu_ops_or_null(GgmlType type) {
  const quant::QuantOps* ops = quant::ops(type);
  if (ops == nullptr || ops->dequantize == nullptr || ops->vec_dot == nullptr) return nullptr;
  return ops;
}

class CudaKernels : public ::testing::TestWithParam<GgmlType> {};

TEST_P(CudaKernels, MatmulMatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  const GgmlType type = GetParam();
  const TypeInfo& ti = type_info(type);
  ASSERT_TRUE(cuda::supported(type)) << ti.name;
  const quant::QuantOps* ops = cpu_ops_or_null(type);
  if (ops == nullptr) GTEST_SKIP() << ti.name << ": no CPU kernel in this build (quant::ops) to compare with";
  // Q4_1/Q5_1: the CPU uses llama.cpp's Q8_1 (the block sum stored as fp16(d * sum q), so its logits
  // match llama.cpp's), the GPU Q8_0 with the exact sum: the min term differs by that fp16 rounding.
  const bool q8_1_on_cpu = ops->vec_dot_type == GgmlType::Q8_1 && cuda::activation_format(type) == GgmlType::Q8_0;
  if (!q8_1_on_cpu) {
    ASSERT_EQ(ops->vec_dot_type, cuda::activation_format(type)) << ti.name << ": CPU and CUDA quantize activations differently";
  }
  std::mt19937 rng(1234 + static_cast<uint32_t>(type));
  // rows not a multiple of the 4 rows per block; Q3_K rows of 768 are 330 bytes (2-byte aligned starts)
  const int64_t cols = 768, rows = 203;
  const std::vector<uint8_t> w = make_weights(type, cols, rows, rng, 0.05f);
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
    quantize_and_matmul(type, cols, rows, T, dw.p, dx.p, dq.p, dd.p, dout.p);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    std::vector<float> got(want.size());
    ASSERT_EQ(cudaMemcpy(got.data(), dout.p, got.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    double err = 0, norm = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_FALSE(std::isnan(got[i])) << ti.name << " T=" << T << " output " << i << " not written";
      err += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
      norm += static_cast<double>(want[i]) * want[i];
    }
    // Same activation rounding and exact integer dots: only float summation order differs (and, for
    // Q4_1/Q5_1, the fp16 rounding of the CPU's block sums: relative 2^-11 on the min term).
    EXPECT_LE(err / norm, q8_1_on_cpu ? 1e-6 : 1e-10) << ti.name << " T=" << T;
  }
}

TEST_P(CudaKernels, DequantizedRowsAreBitIdenticalToTheCpu) {
  SKIP_WITHOUT_GPU();
  const GgmlType type = GetParam();
  const TypeInfo& ti = type_info(type);
  if (cpu_ops_or_null(type) == nullptr) GTEST_SKIP() << ti.name << ": no CPU kernel in this build (quant::ops) to compare with";
  std::mt19937 rng(99 + static_cast<uint32_t>(type));
  const int64_t cols = 512, rows = 40;
  const std::vector<uint8_t> w = make_weights(type, cols, rows, rng, 0.1f);
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

// The device build of the chunk code against its host build (tests/chunk_host.h) on the same
// activations (the GPU's quantized ones, copied back): checks the device intrinsics (dp4a,
// byte_perm, non-contracted products) and loads without any CPU kernel, so it runs for every
// integer type in every build. Matmul to float-order differences, dequantized rows bit for bit.
TEST_P(CudaKernels, MatchesTheHostBuildOfTheChunkCode) {
  SKIP_WITHOUT_GPU();
  const GgmlType type = GetParam();
  const TypeInfo& ti = type_info(type);
  if (test::fp16_field_offsets(type).empty()) GTEST_SKIP() << ti.name << " is a float type (no chunk code)";
  std::mt19937 rng(4321 + static_cast<uint32_t>(type));
  const int64_t cols = 768, rows = 67, T = 11;  // two token tiles, the second partial
  const size_t rb = row_bytes(ti, cols);
  const std::vector<uint8_t> w = test::random_blocks(type, cols, rows, rng);
  const std::vector<float> x = random_floats(static_cast<size_t>(T * cols), rng, 1.0f);
  const GgmlType fmt = cuda::activation_format(type);
  const int act_block = fmt == GgmlType::Q8_K ? 256 : 32;
  const size_t q_bytes = cuda::activation_q_bytes(fmt, T, cols), d_count = cuda::activation_d_bytes(fmt, T, cols) / 4;
  DevBuf<uint8_t> dw(w.size()), dq(q_bytes);
  DevBuf<float> dx(x.size()), dd(d_count), dout(static_cast<size_t>(T * rows));
  ASSERT_EQ(cudaMemcpy(dw.p, w.data(), w.size(), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dx.p, x.data(), x.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemset(dout.p, 0xff, static_cast<size_t>(T * rows) * 4), cudaSuccess);
  quantize_and_matmul(type, cols, rows, T, dw.p, dx.p, dq.p, dd.p, dout.p);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  std::vector<int8_t> q(q_bytes);
  std::vector<float> d(d_count), got(static_cast<size_t>(T * rows));
  ASSERT_EQ(cudaMemcpy(q.data(), dq.p, q.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d.data(), dd.p, d.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(got.data(), dout.p, got.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  double err = 0, norm = 0;
  std::vector<cuda::chunk::ActQ8> acts(static_cast<size_t>(cols / 32));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t c = 0; c < cols / 32; ++c) {
      const int64_t e = t * cols + 32 * c;
      std::memcpy(acts[static_cast<size_t>(c)].a, q.data() + e, 32);
      acts[static_cast<size_t>(c)].d = d[static_cast<size_t>(e / act_block)];
    }
    for (int64_t r = 0; r < rows; ++r) {
      const double want = test::chunk_row_dot(type, w.data() + static_cast<size_t>(r) * rb, acts.data(), cols / 32);
      const float g = got[static_cast<size_t>(t * rows + r)];
      ASSERT_FALSE(std::isnan(g)) << ti.name << " token " << t << " row " << r << " not written";
      err += (g - want) * (g - want);
      norm += want * want;
    }
  }
  EXPECT_LE(err / norm, 1e-10) << ti.name;

  std::vector<int32_t> ids(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) ids[static_cast<size_t>(r)] = static_cast<int32_t>(rows - 1 - r);
  DevBuf<int32_t> dids(ids.size());
  DevBuf<float> drows(static_cast<size_t>(rows * cols));
  ASSERT_EQ(cudaMemcpy(dids.p, ids.data(), ids.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  cuda::dequantize_rows(cuda::DeviceMatrix{type, cols, rows, dw.p}, dids.p, rows, drows.p, nullptr);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  std::vector<float> deq(static_cast<size_t>(rows * cols));
  ASSERT_EQ(cudaMemcpy(deq.data(), drows.p, deq.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  int mismatches = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const uint8_t* wr = w.data() + static_cast<size_t>(ids[static_cast<size_t>(i)]) * rb;
    for (int64_t e = 0; e < cols; ++e) {
      const float want = cuda::chunk::dequant_element(type, wr, e);
      if (std::memcmp(&want, &deq[static_cast<size_t>(i * cols + e)], 4) != 0 && ++mismatches <= 3) {
        ADD_FAILURE() << ti.name << " row " << ids[static_cast<size_t>(i)] << " element " << e;
      }
    }
  }
  EXPECT_EQ(mismatches, 0) << ti.name;
}

INSTANTIATE_TEST_SUITE_P(Types, CudaKernels,
                         ::testing::Values(GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q4_1,
                                           GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::IQ4_NL,
                                           GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K,
                                           GgmlType::Q6_K, GgmlType::IQ4_XS),
                         [](const ::testing::TestParamInfo<GgmlType>& p) { return std::string(type_info(p.param).name); });

}  // namespace
}  // namespace flea
