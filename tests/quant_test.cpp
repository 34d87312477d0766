// Quant formats: hand-built blocks with known values, dequantization of llama.cpp-written tensors
// against the same network's F16 file, quantize round trips, activation rounding rules, and every
// SIMD dot kernel against the scalar reference and a double-precision dequantize-then-dot.
#include "quant/quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "quant/fp16.h"
#include "quant_test_util.h"
#include "test_util.h"

namespace flea::quant {
namespace {

constexpr GgmlType kWeightTypes[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q8_0,
                                     GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};

// ------------------------------------------------------------------ table

TEST(QuantTable, EveryComputeTypeHasConsistentOps) {
  for (GgmlType t : kWeightTypes) {
    const QuantOps* o = ops(t);
    ASSERT_NE(o, nullptr) << type_info(t).name;
    EXPECT_EQ(o->type, t);
    EXPECT_TRUE(type_info(t).compute_supported);
    EXPECT_NE(o->dequantize, nullptr);
    EXPECT_NE(o->quantize, nullptr);
    EXPECT_NE(o->vec_dot, nullptr);
    EXPECT_NE(o->vec_dot_scalar, nullptr);
  }
  EXPECT_EQ(ops(GgmlType::Q4_0)->vec_dot_type, GgmlType::Q8_0);
  EXPECT_EQ(ops(GgmlType::Q8_0)->vec_dot_type, GgmlType::Q8_0);
  EXPECT_EQ(ops(GgmlType::Q4_K)->vec_dot_type, GgmlType::Q8_K);
  EXPECT_EQ(ops(GgmlType::Q5_K)->vec_dot_type, GgmlType::Q8_K);
  EXPECT_EQ(ops(GgmlType::Q6_K)->vec_dot_type, GgmlType::Q8_K);
  EXPECT_EQ(ops(GgmlType::F16)->vec_dot_type, GgmlType::F16);
  EXPECT_EQ(ops(GgmlType::BF16)->vec_dot_type, GgmlType::BF16);
  EXPECT_EQ(ops(GgmlType::F32)->vec_dot_type, GgmlType::F32);
}

TEST(QuantTable, ForceSimdLevelSwitchesAndRestores) {
  const std::string best = best_simd_level();
  force_simd_level("scalar");
  EXPECT_STREQ(simd_level(), "scalar");
  EXPECT_EQ(ops(GgmlType::Q4_K)->vec_dot, ops(GgmlType::Q4_K)->vec_dot_scalar);
  force_simd_level("no-such-level");
  EXPECT_STREQ(simd_level(), "scalar");
  force_simd_level(best.c_str());
  EXPECT_EQ(simd_level(), best);
  EXPECT_EQ(vec_dot_for_level(GgmlType::Q4_K, best.c_str()), ops(GgmlType::Q4_K)->vec_dot);
}

TEST(QuantTable, ActivationRowBytes) {
  EXPECT_EQ(activation_row_bytes(GgmlType::Q8_0, 4096), 4096u / 32 * 34);
  EXPECT_EQ(activation_row_bytes(GgmlType::Q8_K, 4096), 4096u / 256 * 292);
  EXPECT_EQ(activation_row_bytes(GgmlType::F16, 100), 200u);
  EXPECT_EQ(activation_row_bytes(GgmlType::F32, 100), 400u);
}

// ------------------------------------------------------------------ known values

TEST(QuantKnownValues, Q4_0) {
  BlockQ4_0 b{};
  b.d = fp32_to_fp16(0.5f);
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const std::vector<float> y = dequantize(GgmlType::Q4_0, &b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 0.5f * (j - 8)) << j;
    EXPECT_EQ(y[j + 16], 0.5f * (7 - j)) << j;
  }
}

TEST(QuantKnownValues, Q4_0QuantizerUsesSignedExtreme) {
  // The largest-magnitude value (-4) maps to level 0 exactly: d = -4 / -8 = 0.5.
  std::vector<float> x(32, 0.0f);
  x[3] = -4.0f;
  x[20] = 3.4f;  // 3.4 / 0.5 + 8.5 = 15.3 -> 15
  const std::vector<uint8_t> q = quantize(GgmlType::Q4_0, x);
  BlockQ4_0 b;
  std::memcpy(&b, q.data(), sizeof b);
  EXPECT_EQ(fp16_to_fp32(b.d), 0.5f);
  EXPECT_EQ(b.qs[3] & 0x0f, 0);
  EXPECT_EQ(b.qs[4] >> 4, 15);
  EXPECT_EQ(b.qs[0] & 0x0f, 8);
}

TEST(QuantKnownValues, Q8_0) {
  BlockQ8_0 b{};
  b.d = fp32_to_fp16(0.25f);
  for (int j = 0; j < 32; ++j) b.qs[j] = static_cast<int8_t>(j * 8 - 127);
  const std::vector<float> y = dequantize(GgmlType::Q8_0, &b, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], 0.25f * (j * 8 - 127)) << j;
}

// Packs 8 scales / 8 mins (6 bits each) the way the Q4_K/Q5_K header lays them out, written
// independently of the library (byte by byte from the format description).
void pack_scales_by_hand(const int* sc, const int* m, uint8_t* out) {
  for (int j = 0; j < 4; ++j) {
    out[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    out[j + 4] = static_cast<uint8_t>((m[j] & 63) | ((m[j + 4] >> 4) << 6));
    out[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
  }
}

TEST(QuantKnownValues, Q4_K) {
  const int sc[8] = {1, 2, 63, 4, 37, 16, 7, 50};
  const int m[8] = {3, 0, 9, 63, 21, 48, 33, 1};
  BlockQ4K b{};
  b.d = fp32_to_fp16(0.5f);
  b.dmin = fp32_to_fp16(0.25f);
  pack_scales_by_hand(sc, m, b.scales);
  for (int i = 0; i < 128; ++i) b.qs[i] = static_cast<uint8_t>((i * 7 + 3) & 0xff);
  const std::vector<float> y = dequantize(GgmlType::Q4_K, &b, 256);
  for (int e = 0; e < 256; ++e) {
    const int chunk = e / 64, l = e % 64;
    const uint8_t byte = b.qs[32 * chunk + (l % 32)];
    const int q = l < 32 ? (byte & 15) : (byte >> 4);
    const int j = e / 32;
    EXPECT_FLOAT_EQ(y[e], 0.5f * sc[j] * q - 0.25f * m[j]) << e;
  }
}

TEST(QuantKnownValues, Q5_K) {
  const int sc[8] = {5, 63, 2, 17, 40, 8, 31, 60};
  const int m[8] = {0, 12, 63, 5, 19, 44, 2, 35};
  BlockQ5K b{};
  b.d = fp32_to_fp16(0.125f);
  b.dmin = fp32_to_fp16(1.0f);
  pack_scales_by_hand(sc, m, b.scales);
  for (int i = 0; i < 128; ++i) b.qs[i] = static_cast<uint8_t>((i * 13 + 5) & 0xff);
  for (int i = 0; i < 32; ++i) b.qh[i] = static_cast<uint8_t>((i * 37 + 11) & 0xff);
  const std::vector<float> y = dequantize(GgmlType::Q5_K, &b, 256);
  for (int e = 0; e < 256; ++e) {
    const int chunk = e / 64, l = e % 64;
    const uint8_t byte = b.qs[32 * chunk + (l % 32)];
    const int low = l < 32 ? (byte & 15) : (byte >> 4);
    const int bit = 2 * chunk + (l < 32 ? 0 : 1);
    const int q = low + (((b.qh[l % 32] >> bit) & 1) << 4);
    const int j = e / 32;
    EXPECT_FLOAT_EQ(y[e], 0.125f * sc[j] * q - 1.0f * m[j]) << e;
  }
}

TEST(QuantKnownValues, Q6_K) {
  BlockQ6K b{};
  b.d = fp32_to_fp16(0.5f);
  for (int g = 0; g < 16; ++g) b.scales[g] = static_cast<int8_t>(g * 17 - 128);
  for (int i = 0; i < 128; ++i) b.ql[i] = static_cast<uint8_t>((i * 29 + 1) & 0xff);
  for (int i = 0; i < 64; ++i) b.qh[i] = static_cast<uint8_t>((i * 53 + 7) & 0xff);
  const std::vector<float> y = dequantize(GgmlType::Q6_K, &b, 256);
  for (int e = 0; e < 256; ++e) {
    // Per 128-element half: element l + 32k (k = 0..3) takes its low 4 bits from
    // ql[64h + l + 32 (k odd)] (low nibble for k < 2, high otherwise), its top 2 bits from
    // qh[32h + l] bits 2k, 2k+1.
    const int h = e / 128, k = (e % 128) / 32, l = e % 32;
    const uint8_t lb = b.ql[64 * h + l + ((k % 2) ? 32 : 0)];
    const int low = k < 2 ? (lb & 15) : (lb >> 4);
    const int high = (b.qh[32 * h + l] >> (2 * k)) & 3;
    const int q = (low | (high << 4)) - 32;
    EXPECT_FLOAT_EQ(y[e], 0.5f * b.scales[e / 16] * q) << e;
  }
}

// ------------------------------------------------------------------ activation rounding rules

TEST(QuantActivation, Q8_0RoundsHalfToEvenWithScale127OverAmax) {
  std::vector<float> x(32, 0.0f);
  x[0] = 127.0f;  // amax = 127 -> id = 1 exactly
  x[1] = 2.5f;
  x[2] = 3.5f;
  x[3] = -2.5f;
  x[4] = 0.5f;
  x[5] = -126.6f;
  BlockQ8_0 b;
  quantize_activation(GgmlType::Q8_0, x.data(), &b, 32);
  EXPECT_EQ(fp16_to_fp32(b.d), fp16_to_fp32(fp32_to_fp16(1.0f)));
  EXPECT_EQ(b.qs[0], 127);
  EXPECT_EQ(b.qs[1], 2);
  EXPECT_EQ(b.qs[2], 4);
  EXPECT_EQ(b.qs[3], -2);
  EXPECT_EQ(b.qs[4], 0);
  EXPECT_EQ(b.qs[5], -127);
}

TEST(QuantActivation, Q8_KMapsSignedExtremeToMinus127AndFillsBsums) {
  std::vector<float> x = gaussian(512, 11);
  x[300] = 9.0f;  // positive extreme of block 1 -> q = -127, d < 0
  std::vector<BlockQ8K> b(2);
  quantize_activation(GgmlType::Q8_K, x.data(), b.data(), 512);
  EXPECT_EQ(b[1].qs[300 - 256], -127);
  EXPECT_FLOAT_EQ(b[1].d, -9.0f / 127.0f);
  for (const BlockQ8K& blk : b) {
    for (int g = 0; g < 16; ++g) {
      int s = 0;
      for (int l = 0; l < 16; ++l) s += blk.qs[16 * g + l];
      EXPECT_EQ(blk.bsums[g], s);
    }
  }
  std::vector<float> back(512);
  dequantize_row_q8_k(b.data(), back.data(), 512);
  EXPECT_LT(rel_rmse(back, x), 0.02);  // step 9/127 in block 1 -> ~0.02 there
  // An all-zero block stays all zero.
  std::vector<float> zeros(256, 0.0f);
  BlockQ8K z;
  quantize_row_q8_k(zeros.data(), &z, 256);
  EXPECT_EQ(z.d, 0.0f);
  for (int g = 0; g < 16; ++g) EXPECT_EQ(z.bsums[g], 0);
}

TEST(QuantActivation, SimdQuantizersAreBitIdenticalToScalar) {
  const std::string best = best_simd_level();
  std::vector<float> x = gaussian(4096, 21, 2.0f);
  x[5] = -40.0f;    // negative extreme in block 0
  x[300] = 40.0f;   // tie in magnitude with a later element of block 1: the first one wins
  x[400] = -40.0f;
  for (int i = 512; i < 768; ++i) x[static_cast<size_t>(i)] = (i == 600) ? 3.0f : 0.0f;  // sparse block
  for (int i = 768; i < 1024; ++i) x[static_cast<size_t>(i)] = 0.0f;                     // zero block
  for (GgmlType act : {GgmlType::Q8_0, GgmlType::Q8_K}) {
    force_simd_level("scalar");
    std::vector<uint8_t> want(activation_row_bytes(act, 4096));
    quantize_activation(act, x.data(), want.data(), 4096);
    for (const char* level : {"avx2", "avx512"}) {
      if (vec_dot_for_level(GgmlType::Q8_0, level) == nullptr) continue;
      force_simd_level(level);
      std::vector<uint8_t> got(want.size(), 0xAA);
      quantize_activation(act, x.data(), got.data(), 4096);
      EXPECT_EQ(got, want) << type_info(act).name << " " << level;
    }
  }
  force_simd_level(best.c_str());
}

// ------------------------------------------------------------------ round trips

TEST(QuantRoundTrip, ErrorWithinPerTypeBound) {
  const std::map<GgmlType, double> bound = {
      {GgmlType::F32, 0.0},     {GgmlType::F16, 1e-3},   {GgmlType::BF16, 5e-3}, {GgmlType::Q8_0, 0.01},
      {GgmlType::Q4_0, 0.12},   {GgmlType::Q4_K, 0.10},  {GgmlType::Q5_K, 0.05}, {GgmlType::Q6_K, 0.025},
  };
  const std::vector<float> x = gaussian(4096, 3, 0.02f);
  for (GgmlType t : kWeightTypes) {
    const std::vector<uint8_t> q = quantize(t, x);
    const std::vector<float> y = dequantize(t, q.data(), 4096);
    const double e = rel_rmse(y, x);
    EXPECT_LE(e, bound.at(t)) << type_info(t).name;
    // Re-quantizing the dequantized values must land on (nearly) the same values.
    const std::vector<float> y2 = dequantize(t, quantize(t, y).data(), 4096);
    EXPECT_LE(rel_rmse(y2, y), bound.at(t) * 0.5 + 1e-6) << type_info(t).name;
  }
}

// Every weight type with kernels, the low-bit ones included.
TEST(QuantRoundTrip, ConstantAndZeroBlocksStayFinite) {
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1,
                     GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::IQ4_NL, GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K,
                     GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::IQ4_XS}) {
    for (float value : {0.0f, 1.0f, -3.0f}) {
      const std::vector<float> x(512, value);
      const std::vector<float> y = dequantize(t, quantize(t, x).data(), 512);
      for (float v : y) {
        ASSERT_TRUE(std::isfinite(v)) << type_info(t).name;
        EXPECT_NEAR(v, value, std::fabs(value) * 0.02 + 1e-6) << type_info(t).name << " value " << value;
      }
    }
  }
}

// ------------------------------------------------------------------ llama.cpp-written tensors

TEST(QuantReference, DequantizedTensorsMatchTheF16Model) {
  if (!test::reference_available()) GTEST_SKIP() << "reference data not found at " << test::reference_dir();
  const auto manifest = load_manifest(test::reference_dir() + "/manifest.json");
  const std::vector<uint8_t> f16_file = test::read_bytes(test::reference_dir() + "/pub-F16.gguf");
  std::map<std::string, std::vector<float>> original;
  for (const RefTensor& t : manifest.at("pub-F16.gguf")) original[t.name] = read_tensor(f16_file, t);

  // Quantization error of N(0, sigma) weights relative to their RMS; a wrong bit layout gives ~1.4.
  const std::map<GgmlType, double> bound = {
      {GgmlType::F32, 1e-6},  {GgmlType::F16, 1e-6},  {GgmlType::BF16, 5e-3}, {GgmlType::Q8_0, 0.01},
      {GgmlType::Q4_0, 0.12}, {GgmlType::Q4_K, 0.10}, {GgmlType::Q5_K, 0.05}, {GgmlType::Q6_K, 0.03},
  };
  std::map<GgmlType, int> checked;
  for (const auto& [model, tensors] : manifest) {
    const std::vector<uint8_t> file = test::read_bytes(test::reference_dir() + "/" + model);
    for (const RefTensor& t : tensors) {
      const std::vector<float> y = read_tensor(file, t);
      const double e = rel_rmse(y, original.at(t.name));
      EXPECT_LE(e, bound.at(t.type)) << model << " " << t.name << " " << type_info(t.type).name;
      ++checked[t.type];
    }
  }
  for (GgmlType t : kWeightTypes) EXPECT_GT(checked[t], 0) << "no reference tensor of " << type_info(t).name;
}

TEST(QuantReference, OurQuantizersAreAsAccurateAsLlamaCpps) {
  if (!test::reference_available()) GTEST_SKIP() << "reference data not found at " << test::reference_dir();
  const auto manifest = load_manifest(test::reference_dir() + "/manifest.json");
  const std::vector<uint8_t> f16_file = test::read_bytes(test::reference_dir() + "/pub-F16.gguf");
  std::map<std::string, std::vector<float>> original;
  for (const RefTensor& t : manifest.at("pub-F16.gguf")) original[t.name] = read_tensor(f16_file, t);
  std::map<GgmlType, double> sum_ours, sum_theirs;
  for (const char* model : {"pub-Q8_0.gguf", "pub-Q4_0.gguf", "pub-Q4_K_M.gguf", "pub-Q5_K_M.gguf", "pub-Q6_K.gguf"}) {
    const std::vector<uint8_t> file = test::read_bytes(test::reference_dir() + "/" + model);
    for (const RefTensor& t : manifest.at(model)) {
      if (t.type == GgmlType::F32) continue;
      const std::vector<float>& x = original.at(t.name);
      const double theirs = rel_rmse(read_tensor(file, t), x);
      const double ours = rel_rmse(dequantize(t.type, quantize(t.type, x).data(), t.n), x);
      EXPECT_LE(ours, theirs * 1.05 + 1e-6) << model << " " << t.name << " ours " << ours << " llama.cpp " << theirs;
      sum_ours[t.type] += ours;
      sum_theirs[t.type] += theirs;
    }
  }
  for (const auto& [type, ours] : sum_ours) {
    std::printf("%-5s relative RMSE ours / llama.cpp's: %.4f\n", type_info(type).name, ours / sum_theirs[type]);
  }
}

// ------------------------------------------------------------------ dot kernels

TEST(QuantDot, EveryLevelAgreesWithScalarAndDoubleReference) {
  std::printf("levels available on this CPU: best=%s\n", best_simd_level());
  for (GgmlType t : kWeightTypes) {
    const QuantOps* o = ops(t);
    // Sizes: one block, a typical width, and (float types) lengths that exercise the tails.
    std::vector<int64_t> sizes = {type_info(t).block_size == 1 ? 256 : type_info(t).block_size, 4096, 11008};
    if (type_info(t).block_size == 1) sizes.insert(sizes.end(), {1, 7, 37, 100});
    if (type_info(t).block_size == 32) sizes.push_back(96);
    for (int64_t n : sizes) {
      const std::vector<float> w = gaussian(n, static_cast<uint32_t>(n) + 1, 0.05f);
      std::vector<float> x = gaussian(n, static_cast<uint32_t>(n) + 2, 1.0f);
      x[static_cast<size_t>(n / 2)] = 6.0f;  // an outlier like real activations have
      const std::vector<uint8_t> wq = quantize(t, w);
      std::vector<uint8_t> xq(activation_row_bytes(o->vec_dot_type, n));
      quantize_activation(o->vec_dot_type, x.data(), xq.data(), n);

      // Double-precision dot of exactly the values the kernels see.
      const std::vector<float> wd = dequantize(t, wq.data(), n);
      std::vector<float> xd(static_cast<size_t>(n));
      if (o->vec_dot_type == GgmlType::Q8_K) {
        dequantize_row_q8_k(xq.data(), xd.data(), n);
      } else {
        ops(o->vec_dot_type)->dequantize(xq.data(), xd.data(), n);
      }
      double want = 0, scale = 0;
      for (int64_t i = 0; i < n; ++i) {
        want += static_cast<double>(wd[i]) * xd[i];
        scale += std::fabs(static_cast<double>(wd[i]) * xd[i]);
      }
      const double tol = 2e-5 * scale + 1e-6;
      const float scalar = o->vec_dot_scalar(n, wq.data(), xq.data());
      EXPECT_NEAR(scalar, want, tol) << type_info(t).name << " n=" << n;
      for (const char* level : available_levels()) {
        const float got = vec_dot_for_level(t, level)(n, wq.data(), xq.data());
        EXPECT_NEAR(got, want, tol) << type_info(t).name << " " << level << " n=" << n;
        EXPECT_NEAR(got, scalar, tol) << type_info(t).name << " " << level << " n=" << n;
      }
    }
  }
}

TEST(QuantDot, FourTokenKernelsAreBitIdenticalToSingleToken) {
  for (GgmlType t : {GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q6_K}) {
    const QuantOps* o = ops(t);
    const int64_t n = 2048;
    const std::vector<uint8_t> wq = quantize(t, gaussian(n, 31, 0.05f));
    const size_t stride = activation_row_bytes(o->vec_dot_type, n) + 64;  // padded rows
    std::vector<uint8_t> acts(stride * kVecDotTokens);
    for (int k = 0; k < kVecDotTokens; ++k) {
      const std::vector<float> x = gaussian(n, 40 + static_cast<uint32_t>(k), 1.0f);
      quantize_activation(o->vec_dot_type, x.data(), acts.data() + k * stride, n);
    }
    const int levels_with_x4 =
        expect_x4_equals_single(t, n, wq.data(), acts.data(), stride, available_levels(), "n=" + std::to_string(n));
    if (std::string(best_simd_level()) != "scalar") {
      EXPECT_GT(levels_with_x4, 0) << type_info(t).name;
    }
  }
}

TEST(QuantDot, ExtremeLevelsDoNotSaturate) {
  // Largest-magnitude levels on both sides: any int16 saturation in a SIMD path would show.
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K}) {
    const QuantOps* o = ops(t);
    const int64_t n = 512;
    std::vector<float> w(n), x(n);
    for (int64_t i = 0; i < n; ++i) {
      w[i] = (i % 3 == 0) ? -1.0f : 1.0f;
      x[i] = (i % 5 == 0) ? -1.0f : 1.0f;
    }
    const std::vector<uint8_t> wq = quantize(t, w);
    std::vector<uint8_t> xq(activation_row_bytes(o->vec_dot_type, n));
    quantize_activation(o->vec_dot_type, x.data(), xq.data(), n);
    const float scalar = o->vec_dot_scalar(n, wq.data(), xq.data());
    for (const char* level : available_levels()) {
      EXPECT_NEAR(vec_dot_for_level(t, level)(n, wq.data(), xq.data()), scalar, 1e-3 * std::fabs(scalar) + 1e-3)
          << type_info(t).name << " " << level;
    }
  }
}

}  // namespace
}  // namespace flea::quant
