// The CUDA matmul's per-type chunk code (compute/cuda/chunk_dot.h) built for the host: no GPU
// needed. For every integer weight type, on random blocks (every bit pattern of levels, scales
// and high bits): the 32-element chunk dot summed over a row against
//   - the exact value Σ w_e · a_e from an independent dequantizer (the CPU's for the types it has,
//     else one written here from the layouts in quant/quant.h, as ggml defines them), and
//   - quant::ops(type)->vec_dot, where this build's CPU backend has the type;
// and the embedding element dequantizer, bit for bit, against the same dequantizers.
// The device build differs only in the intrinsics (dp4a, byte_perm, rounding float ops), whose
// host stand-ins are written to their documented semantics; tests/cuda_kernels_test.cpp checks
// the device build on a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "compute/cuda/chunk_dot.h"
#include "gguf/gguf.h"
#include "quant/fp16.h"
#include "quant/quant.h"
#include "chunk_host.h"
#include "random_blocks.h"
#include "test_util.h"

namespace flea {
namespace {

namespace chunk = cuda::chunk;
using quant::kIq4nlValues;

// ---- reference dequantizers for the types the CPU backend may lack, per the ggml definitions
// (loops over whole blocks, the format's own arithmetic order).

void ref_q4_1(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const quant::BlockQ4_1*>(src);
  for (int64_t i = 0; i < n / 32; ++i, y += 32) {
    const float d = fp16_to_fp32(x[i].d), m = fp16_to_fp32(x[i].m);
    for (int j = 0; j < 16; ++j) {
      y[j] = (x[i].qs[j] & 0x0f) * d + m;
      y[j + 16] = (x[i].qs[j] >> 4) * d + m;
    }
  }
}

template <class Block, bool kHasMin>
void ref_q5(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const Block*>(src);
  for (int64_t i = 0; i < n / 32; ++i, y += 32) {
    const float d = fp16_to_fp32(x[i].d);
    uint32_t qh;
    std::memcpy(&qh, x[i].qh, 4);
    for (int j = 0; j < 16; ++j) {
      const int q0 = (x[i].qs[j] & 0x0f) | (((qh >> j) & 1) << 4);
      const int q1 = (x[i].qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
      if constexpr (kHasMin) {
        const float m = fp16_to_fp32(x[i].m);
        y[j] = q0 * d + m;
        y[j + 16] = q1 * d + m;
      } else {
        y[j] = (q0 - 16) * d;
        y[j + 16] = (q1 - 16) * d;
      }
    }
  }
}

void ref_iq4_nl(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const quant::BlockIq4Nl*>(src);
  for (int64_t i = 0; i < n / 32; ++i, y += 32) {
    const float d = fp16_to_fp32(x[i].d);
    for (int j = 0; j < 16; ++j) {
      y[j] = d * kIq4nlValues[x[i].qs[j] & 0x0f];
      y[j + 16] = d * kIq4nlValues[x[i].qs[j] >> 4];
    }
  }
}

void ref_q2_k(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const quant::BlockQ2K*>(src);
  for (int64_t i = 0; i < n / 256; ++i) {
    const float d = fp16_to_fp32(x[i].d), dmin = fp16_to_fp32(x[i].dmin);
    for (int e = 0; e < 256; ++e) {
      const int q = (x[i].qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
      const uint8_t sc = x[i].scales[e / 16];
      const float dl = d * (sc & 0x0f), ml = dmin * (sc >> 4);
      *y++ = dl * q - ml;
    }
  }
}

void ref_q3_k(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const quant::BlockQ3K*>(src);
  for (int64_t i = 0; i < n / 256; ++i) {
    const float d = fp16_to_fp32(x[i].d);
    int s[16];
    for (int j = 0; j < 16; ++j) {
      const int low = j < 8 ? (x[i].scales[j] & 0x0f) : (x[i].scales[j - 8] >> 4);
      const int high = (x[i].scales[8 + j % 4] >> (2 * (j / 4))) & 3;
      s[j] = (low | (high << 4)) - 32;
    }
    for (int e = 0; e < 256; ++e) {
      const int q = (x[i].qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
      const bool hbit = (x[i].hmask[e % 32] >> (e / 32)) & 1;
      const float dl = d * s[e / 16];
      *y++ = dl * (q - (hbit ? 0 : 4));
    }
  }
}

void ref_iq4_xs(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const quant::BlockIq4Xs*>(src);
  for (int64_t i = 0; i < n / 256; ++i) {
    const float d = fp16_to_fp32(x[i].d);
    for (int j = 0; j < 8; ++j, y += 32) {
      const int ls = ((x[i].scales_l[j / 2] >> (4 * (j % 2))) & 0x0f) | (((x[i].scales_h >> (2 * j)) & 3) << 4);
      const float dl = d * (ls - 32);
      const uint8_t* qs = x[i].qs + 16 * j;
      for (int l = 0; l < 16; ++l) {
        y[l] = dl * kIq4nlValues[qs[l] & 0x0f];
        y[l + 16] = dl * kIq4nlValues[qs[l] >> 4];
      }
    }
  }
}

// The dequantizer of this file for the types it defines, else nullptr.
quant::DequantizeFn local_reference(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_1: return ref_q4_1;
    case GgmlType::Q5_0: return ref_q5<quant::BlockQ5_0, false>;
    case GgmlType::Q5_1: return ref_q5<quant::BlockQ5_1, true>;
    case GgmlType::IQ4_NL: return ref_iq4_nl;
    case GgmlType::Q2_K: return ref_q2_k;
    case GgmlType::Q3_K: return ref_q3_k;
    case GgmlType::IQ4_XS: return ref_iq4_xs;
    default: return nullptr;
  }
}

// CPU dequantizer when this build has one for `t`, else the local one; `what` names the source.
quant::DequantizeFn reference_dequantizer(GgmlType t, std::string* what) {
  const quant::QuantOps* ops = quant::ops(t);
  if (ops != nullptr && ops->dequantize != nullptr) {
    *what = "quant::ops dequantize";
    return ops->dequantize;
  }
  *what = "this test's dequantizer";
  return local_reference(t);
}

// ---- the chunk code on the host

bool is_k_type(GgmlType t) { return type_info(t).block_size == 256; }

// Activations of one row in the CPU's format (Q8_0 or Q8_K blocks), split into chunks.
struct QuantizedActs {
  std::vector<uint8_t> blocks;
  std::vector<chunk::ActQ8> chunks;
  std::vector<double> values;  // d * q per element
};

QuantizedActs quantize_acts(GgmlType t, const std::vector<float>& x) {
  const int64_t n = static_cast<int64_t>(x.size());
  QuantizedActs r;
  r.chunks.resize(static_cast<size_t>(n / 32));
  r.values.resize(static_cast<size_t>(n));
  if (is_k_type(t)) {
    r.blocks.resize(quant::activation_row_bytes(GgmlType::Q8_K, n));
    quant::quantize_activation(GgmlType::Q8_K, x.data(), r.blocks.data(), n);
    const auto* b = reinterpret_cast<const quant::BlockQ8K*>(r.blocks.data());
    for (int64_t c = 0; c < n / 32; ++c) {
      chunk::ActQ8& a = r.chunks[static_cast<size_t>(c)];
      std::memcpy(a.a, b[c / 8].qs + 32 * (c % 8), 32);
      a.d = b[c / 8].d;
    }
    for (int64_t e = 0; e < n; ++e) {
      r.values[static_cast<size_t>(e)] = static_cast<double>(b[e / 256].d) * b[e / 256].qs[e % 256];
    }
  } else {
    r.blocks.resize(quant::activation_row_bytes(GgmlType::Q8_0, n));
    quant::quantize_activation(GgmlType::Q8_0, x.data(), r.blocks.data(), n);
    const auto* b = reinterpret_cast<const quant::BlockQ8_0*>(r.blocks.data());
    for (int64_t c = 0; c < n / 32; ++c) {
      chunk::ActQ8& a = r.chunks[static_cast<size_t>(c)];
      std::memcpy(a.a, b[c].qs, 32);
      a.d = fp16_to_fp32(b[c].d);
    }
    for (int64_t e = 0; e < n; ++e) {
      r.values[static_cast<size_t>(e)] = static_cast<double>(fp16_to_fp32(b[e / 32].d)) * b[e / 32].qs[e % 32];
    }
  }
  return r;
}

class CudaChunk : public ::testing::TestWithParam<GgmlType> {};

TEST_P(CudaChunk, RowDotMatchesTheDequantizedDotAndTheCpuKernel) {
  const GgmlType t = GetParam();
  const TypeInfo& ti = type_info(t);
  std::string ref_name;
  const quant::DequantizeFn ref = reference_dequantizer(t, &ref_name);
  ASSERT_NE(ref, nullptr) << ti.name;
  const quant::QuantOps* ops = quant::ops(t);
  const bool cpu_dot = ops != nullptr && ops->vec_dot != nullptr;
  // Q4_1/Q5_1 on the CPU dot llama.cpp's Q8_1 (Q8_0 plus the block sum as fp16(d * sum q)); the CUDA
  // kernel uses Q8_0 and the exact sum, so the two differ by that rounding of the min term.
  const bool cpu_q8_1 = cpu_dot && ops->vec_dot_type == GgmlType::Q8_1 && !is_k_type(t);
  if (cpu_dot && !cpu_q8_1) {
    ASSERT_EQ(ops->vec_dot_type, is_k_type(t) ? GgmlType::Q8_K : GgmlType::Q8_0)
        << ti.name << ": the CUDA kernel quantizes activations to a different format than the CPU";
  }
  std::mt19937 rng(static_cast<uint32_t>(t) * 7919u + 1);
  std::normal_distribution<float> normal(0.f, 1.f);
  const int64_t cols = 1024, rows = 24;
  const std::vector<uint8_t> w = test::random_blocks(t, cols, rows, rng);
  const size_t rb = row_bytes(ti, cols);
  std::vector<float> wf(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<float> x(static_cast<size_t>(cols));
    for (float& v : x) v = normal(rng);
    const QuantizedActs a = quantize_acts(t, x);
    const uint8_t* wr = w.data() + static_cast<size_t>(r) * rb;
    ref(wr, wf.data(), cols);
    double exact = 0, magnitude = 0;
    for (size_t e = 0; e < wf.size(); ++e) {
      exact += wf[e] * a.values[e];
      magnitude += std::fabs(wf[e] * a.values[e]);
    }
    const float got = test::chunk_row_dot(t, wr, a.chunks.data(), cols / 32);
    // Integer dots are exact; what is left is float rounding of scales and partial sums.
    EXPECT_NEAR(got, exact, 1e-5 * magnitude) << ti.name << " row " << r << " vs " << ref_name;
    if (cpu_dot) {
      std::vector<uint8_t> q8_1;
      const void* cpu_act = a.blocks.data();
      if (cpu_q8_1) {
        q8_1.resize(quant::activation_row_bytes(GgmlType::Q8_1, cols));
        quant::quantize_activation(GgmlType::Q8_1, x.data(), q8_1.data(), cols);
        cpu_act = q8_1.data();
      }
      const float cpu = ops->vec_dot(cols, wr, cpu_act);
      EXPECT_NEAR(got, cpu, (cpu_q8_1 ? 1e-3 : 1e-5) * magnitude) << ti.name << " row " << r << " vs quant::ops vec_dot";
    }
  }
  if (!cpu_dot) std::printf("  %s: no CPU vec_dot in this build, checked against %s only\n", ti.name, ref_name.c_str());
}

TEST_P(CudaChunk, DequantElementIsBitIdenticalToTheReference) {
  const GgmlType t = GetParam();
  const TypeInfo& ti = type_info(t);
  std::mt19937 rng(static_cast<uint32_t>(t) * 104729u + 3);
  const int64_t cols = 512, rows = 4;
  const std::vector<uint8_t> w = test::random_blocks(t, cols, rows, rng);
  const size_t rb = row_bytes(ti, cols);
  // Every available dequantizer: the CPU's and, for the types it defines, this file's.
  std::vector<std::pair<std::string, quant::DequantizeFn>> refs;
  const quant::QuantOps* ops = quant::ops(t);
  if (ops != nullptr && ops->dequantize != nullptr) refs.emplace_back("quant::ops dequantize", ops->dequantize);
  if (local_reference(t) != nullptr) refs.emplace_back("this test's dequantizer", local_reference(t));
  ASSERT_FALSE(refs.empty()) << ti.name;
  std::vector<float> want(static_cast<size_t>(cols));
  for (const auto& [name, fn] : refs) {
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* wr = w.data() + static_cast<size_t>(r) * rb;
      fn(wr, want.data(), cols);
      int mismatches = 0;
      for (int64_t i = 0; i < cols; ++i) {
        const float got = chunk::dequant_element(t, wr, i);
        if (std::memcmp(&got, &want[static_cast<size_t>(i)], 4) != 0 && ++mismatches <= 3) {
          ADD_FAILURE() << ti.name << " row " << r << " element " << i << ": " << got << " vs "
                        << want[static_cast<size_t>(i)] << " (" << name << ")";
        }
      }
      EXPECT_EQ(mismatches, 0) << ti.name << " row " << r << " vs " << name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, CudaChunk,
                         ::testing::Values(GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,
                                           GgmlType::Q8_0, GgmlType::IQ4_NL, GgmlType::Q2_K, GgmlType::Q3_K,
                                           GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::IQ4_XS),
                         [](const ::testing::TestParamInfo<GgmlType>& p) { return std::string(type_info(p.param).name); });

// ---- real files: the reference model as llama-quantize wrote it in each new type, against the
// same network stored as F16. A misread layout decodes to noise (NMSE near 2); a right one to the
// format's quantization error (seen: Q5_1 0.0014, Q5_0 0.0018, IQ4_NL/IQ4_XS 0.006, Q4_1 0.006,
// Q3_K 0.023, Q2_K 0.088; bounds about 1.7x those). This checks the reading of the formats
// independently of any dequantizer in this repository. Skips without the reference data.

std::vector<uint8_t> read_tensor(const gguf::File& f, const gguf::TensorInfo& t) {
  std::vector<uint8_t> bytes(t.n_bytes);
  std::ifstream in(f.path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(t.file_offset));
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  EXPECT_TRUE(in.good()) << f.path << ": reading " << t.name;
  return bytes;
}

struct RealCase {
  GgmlType type;
  const char* file;    // under <reference>/quants
  double max_nmse;     // ‖dequantized − F16‖² / ‖F16‖² over all tensors of the type
};
void PrintTo(const RealCase& c, std::ostream* os) { *os << type_info(c.type).name << " in " << c.file; }

class CudaChunkReal : public ::testing::TestWithParam<RealCase> {};

TEST_P(CudaChunkReal, TensorsAgreeWithTheF16Model) {
  const RealCase rc = GetParam();
  const std::string qpath = test::reference_dir() + "/quants/" + rc.file;
  const std::string fpath = test::reference_dir() + "/pub-F16.gguf";
  std::ifstream probe_q(qpath), probe_f(fpath);
  if (!probe_q || !probe_f) GTEST_SKIP() << "reference data not found (" << qpath << ", " << fpath << ")";
  auto qf = gguf::read_file(qpath);
  auto ff = gguf::read_file(fpath);
  ASSERT_TRUE(qf.ok()) << qf.status().to_string();
  ASSERT_TRUE(ff.ok()) << ff.status().to_string();
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.f, 1.f);
  int n_tensors = 0;
  double werr = 0, wnorm = 0, derr = 0, dnorm = 0;
  for (const gguf::TensorInfo& t : qf->tensors) {
    if (t.type != rc.type) continue;
    const gguf::TensorInfo* tf = ff->find_tensor(t.name);
    ASSERT_NE(tf, nullptr) << t.name;
    ASSERT_EQ(tf->type, GgmlType::F16) << t.name;
    ASSERT_EQ(tf->ne, t.ne) << t.name;
    ++n_tensors;
    const std::vector<uint8_t> q = read_tensor(*qf, t), f = read_tensor(*ff, *tf);
    const int64_t cols = t.ne[0];
    const size_t rb = t.row_bytes();
    std::vector<float> x(static_cast<size_t>(cols));
    for (float& v : x) v = normal(rng);
    const QuantizedActs a = quantize_acts(t.type, x);
    for (int64_t r = 0; r < t.n_rows(); ++r) {
      const uint8_t* qr = q.data() + static_cast<size_t>(r) * rb;
      const uint16_t* fr = reinterpret_cast<const uint16_t*>(f.data()) + r * cols;
      double want_dot = 0;
      for (int64_t i = 0; i < cols; ++i) {
        const double want = fp16_to_fp32(fr[i]);
        const double got = chunk::dequant_element(t.type, qr, i);
        werr += (got - want) * (got - want);
        wnorm += want * want;
        want_dot += want * a.values[static_cast<size_t>(i)];
      }
      const double got_dot = test::chunk_row_dot(t.type, qr, a.chunks.data(), cols / 32);
      derr += (got_dot - want_dot) * (got_dot - want_dot);
      dnorm += want_dot * want_dot;
    }
  }
  ASSERT_GT(n_tensors, 0) << rc.file << " holds no " << type_info(rc.type).name << " tensor";
  const double wnmse = werr / wnorm, dnmse = derr / dnorm;
  std::printf("  %s in %s: %d tensors, weight NMSE %.5f, row-dot NMSE %.5f (bound %.3f)\n",
              type_info(rc.type).name, rc.file, n_tensors, wnmse, dnmse, rc.max_nmse);
  EXPECT_LE(wnmse, rc.max_nmse) << "element dequantizer";
  EXPECT_LE(dnmse, rc.max_nmse) << "chunk dot";
}

INSTANTIATE_TEST_SUITE_P(Types, CudaChunkReal,
                         ::testing::Values(RealCase{GgmlType::Q4_1, "pub-Q4_1.gguf", 0.012},
                                           RealCase{GgmlType::Q5_0, "pub-Q5_0.gguf", 0.004},
                                           RealCase{GgmlType::Q5_1, "pub-Q5_1.gguf", 0.003},
                                           RealCase{GgmlType::IQ4_NL, "pub-IQ4_NL.gguf", 0.012},
                                           RealCase{GgmlType::Q2_K, "pub-Q2_K.gguf", 0.15},
                                           RealCase{GgmlType::Q3_K, "pub-Q3_K_M.gguf", 0.045},
                                           RealCase{GgmlType::IQ4_XS, "pub-IQ4_XS.gguf", 0.012}),
                         [](const ::testing::TestParamInfo<RealCase>& p) {
                           return std::string(type_info(p.param.type).name);
                         });

// The IQ4 table lookup through byte_perm, for every index in every byte position.
TEST(CudaChunkPrimitives, Iq4nlLookupMatchesTheTable) {
  for (uint32_t q = 0; q < 16; ++q) {
    for (int pos = 0; pos < 4; ++pos) {
      const uint32_t other = (q * 5 + 3) & 15;  // a different index in the other bytes
      uint32_t idx = 0;
      for (int b = 0; b < 4; ++b) idx |= (b == pos ? q : other) << (8 * b);
      const uint32_t got = static_cast<uint32_t>(chunk::iq4nl_lookup4(idx));
      EXPECT_EQ(static_cast<int8_t>(got >> (8 * pos)), kIq4nlValues[q]) << "index " << q << " byte " << pos;
      EXPECT_EQ(static_cast<int8_t>(got >> (8 * ((pos + 1) % 4))), kIq4nlValues[other]);
    }
    EXPECT_EQ(chunk::iq4nl_value(static_cast<int>(q)), kIq4nlValues[q]);
  }
}

TEST(CudaChunkPrimitives, Spread4PutsBitIInBit4OfByteI) {
  for (uint32_t v = 0; v < 16; ++v) {
    const uint32_t s = chunk::spread4_to_bit4(v | 0xfff0u);  // higher bits must be ignored
    for (int i = 0; i < 4; ++i) EXPECT_EQ((s >> (8 * i)) & 0xffu, ((v >> i) & 1u) << 4) << v << " byte " << i;
  }
}

}  // namespace
}  // namespace flea
