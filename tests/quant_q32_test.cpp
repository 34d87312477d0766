// The 32-element formats Q4_1, Q5_0, Q5_1 and IQ4_NL: hand-built blocks decode to the values the
// format defines (written here from the bit layout, independently of the library), quantize round
// trips stay within per-type bounds, the Q8_1 activations (Q4_1 / Q5_1) follow llama.cpp's rule,
// the scalar dot is the exact dot of the dequantized operands, and every SIMD level (1-token and
// 4-token forms) agrees with the scalar dot on random blocks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "quant/fp16.h"
#include "quant/quant.h"
#include "quant_test_util.h"
#include "test_util.h"

namespace flea::quant {
namespace {

constexpr GgmlType kQ32Types[] = {GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::IQ4_NL};

// Random raw blocks: every byte random (all nibble / fifth-bit patterns), then sane fp16 scales
// and mins written over the header.
std::vector<uint8_t> random_weight_blocks(GgmlType t, int64_t nb, std::mt19937& rng) {
  const size_t bytes = type_info(t).block_bytes;
  std::vector<uint8_t> out(static_cast<size_t>(nb) * bytes);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(0.001f, 0.05f), sign(-1.0f, 1.0f);
  for (uint8_t& b : out) b = static_cast<uint8_t>(byte(rng));
  const bool has_min = t == GgmlType::Q4_1 || t == GgmlType::Q5_1;
  for (int64_t i = 0; i < nb; ++i) {
    uint8_t* blk = out.data() + i * bytes;
    const uint16_t d = fp32_to_fp16(scale(rng) * (sign(rng) < 0 ? -1.0f : 1.0f));
    std::memcpy(blk, &d, 2);
    if (has_min) {
      const uint16_t m = fp32_to_fp16(-16 * scale(rng) * sign(rng));
      std::memcpy(blk + 2, &m, 2);
    }
  }
  return out;
}

bool takes_q8_1(GgmlType t) { return t == GgmlType::Q4_1 || t == GgmlType::Q5_1; }

// Activation blocks (Q8_0, or Q8_1 for Q4_1 / Q5_1) with levels in -127..127 (what
// quantize_activation produces; -128 never occurs, and the sign trick of the signed kernels relies
// on that). Q8_1's s is random unless exact_s: then d is a power of two and the levels small, so
// s = d * sum(qs) holds exactly in fp16 and m * s equals the min term of the dequantized dot.
std::vector<uint8_t> random_act_blocks(GgmlType t, int64_t nb, std::mt19937& rng, bool exact_s = false) {
  const bool q8_1 = takes_q8_1(t);
  const size_t bytes = q8_1 ? sizeof(BlockQ8_1) : sizeof(BlockQ8_0);
  std::vector<uint8_t> out(static_cast<size_t>(nb) * bytes);
  const int max_level = exact_s ? 60 : 127;  // |sum| <= 1920 < 2048: an exact fp16 integer
  std::uniform_int_distribution<int> level(-max_level, max_level), exponent(5, 10);
  std::uniform_real_distribution<float> scale(0.001f, 0.1f), s_dist(-20.0f, 20.0f);
  for (int64_t i = 0; i < nb; ++i) {
    uint8_t* blk = out.data() + i * bytes;
    const float d = exact_s ? std::ldexp(1.0f, -exponent(rng)) : scale(rng);
    const uint16_t d16 = fp32_to_fp16(d);
    std::memcpy(blk, &d16, 2);
    int8_t* qs = reinterpret_cast<int8_t*>(blk + (q8_1 ? 4 : 2));
    int sum = 0;
    for (int j = 0; j < 32; ++j) {
      qs[j] = static_cast<int8_t>(level(rng));
      sum += qs[j];
    }
    if (q8_1) {
      const uint16_t s16 = fp32_to_fp16(exact_s ? d * static_cast<float>(sum) : s_dist(rng));
      std::memcpy(blk + 2, &s16, 2);
    }
  }
  return out;
}

// d * q of each activation element, decoded here from the block layout.
std::vector<double> dequantize_act(GgmlType t, const uint8_t* a, int64_t nb) {
  const bool q8_1 = takes_q8_1(t);
  const size_t bytes = q8_1 ? sizeof(BlockQ8_1) : sizeof(BlockQ8_0);
  std::vector<double> out;
  for (int64_t i = 0; i < nb; ++i) {
    const uint8_t* blk = a + i * bytes;
    uint16_t d16;
    std::memcpy(&d16, blk, 2);
    const int8_t* qs = reinterpret_cast<const int8_t*>(blk + (q8_1 ? 4 : 2));
    for (int j = 0; j < 32; ++j) out.push_back(static_cast<double>(fp16_to_fp32(d16)) * qs[j]);
  }
  return out;
}

uint16_t half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return h;
}

// The format's dot in double: sum of dequantized weight x dequantized activation for Q5_0 /
// IQ4_NL; for Q4_1 / Q5_1 the min m of each block multiplies the activation block's s instead of
// d_a * sum(qs) (llama.cpp's definition). *scale: sum of |terms|, for tolerances.
void reference_dot(GgmlType t, int64_t n, const uint8_t* w, const uint8_t* a, double* dot, double* scale) {
  const int64_t nb = n / 32;
  const std::vector<float> wd = dequantize(t, w, n);
  const std::vector<double> ad = dequantize_act(t, a, nb);
  *dot = 0;
  *scale = 0;
  for (int64_t i = 0; i < nb; ++i) {
    double m = 0;
    if (takes_q8_1(t)) {
      m = fp16_to_fp32(half_at(w + i * type_info(t).block_bytes + 2));
      const double s = fp16_to_fp32(half_at(a + i * sizeof(BlockQ8_1) + 2));
      *dot += m * s;
      *scale += std::fabs(m * s);
    }
    for (int j = 0; j < 32; ++j) {
      const double p = (static_cast<double>(wd[static_cast<size_t>(32 * i + j)]) - m) * ad[static_cast<size_t>(32 * i + j)];
      *dot += p;
      *scale += std::fabs(p);
    }
  }
}

// ------------------------------------------------------------------ table

TEST(Q32Table, OpsNameTheirActivationFormatAndEveryLevelHasKernels) {
  for (GgmlType t : kQ32Types) {
    const QuantOps* o = ops(t);
    ASSERT_NE(o, nullptr) << type_info(t).name;
    EXPECT_EQ(o->type, t);
    EXPECT_EQ(o->vec_dot_type, takes_q8_1(t) ? GgmlType::Q8_1 : GgmlType::Q8_0) << type_info(t).name;
    EXPECT_NE(o->dequantize, nullptr);
    EXPECT_NE(o->quantize, nullptr);
    EXPECT_NE(o->vec_dot, nullptr);
    EXPECT_NE(o->vec_dot_scalar, nullptr);
    for (const char* level : simd_levels()) {
      const VecDotFn f = vec_dot_for_level(t, level);
      EXPECT_NE(f, nullptr) << type_info(t).name << " " << level;
      EXPECT_NE(f, o->vec_dot_scalar) << type_info(t).name << " " << level;
      force_simd_level(level);
      EXPECT_NE(ops(t)->vec_dot_x4, nullptr) << type_info(t).name << " " << level;
    }
    force_simd_level(best_simd_level());
  }
}

// ------------------------------------------------------------------ known values

// Fifth bits set at the element positions that straddle the nibble halves and qh bytes.
constexpr uint32_t kQh = (1u << 0) | (1u << 15) | (1u << 16) | (1u << 31) | (1u << 9) | (1u << 22);

TEST(Q32KnownValues, Q4_1) {
  BlockQ4_1 b{};
  b.d = fp32_to_fp16(0.5f);
  b.m = fp32_to_fp16(-3.0f);
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const std::vector<float> y = dequantize(GgmlType::Q4_1, &b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 0.5f * j - 3.0f) << j;
    EXPECT_EQ(y[j + 16], 0.5f * (15 - j) - 3.0f) << j;
  }
}

TEST(Q32KnownValues, Q5_0FifthBitAtEdges) {
  BlockQ5_0 b{};
  b.d = fp32_to_fp16(0.25f);
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(((j * 5) & 15) | (((j * 3 + 7) & 15) << 4));
  std::memcpy(b.qh, &kQh, 4);
  const std::vector<float> y = dequantize(GgmlType::Q5_0, &b, 32);
  for (int e = 0; e < 32; ++e) {
    const int low = e < 16 ? ((e * 5) & 15) : (((e - 16) * 3 + 7) & 15);
    const int q = low + (((kQh >> e) & 1) ? 16 : 0);
    EXPECT_EQ(y[e], 0.25f * (q - 16)) << e;
  }
  // Spot values that catch a bit taken from the wrong end: element 0 (low 0, bit set) = 0,
  // element 31 (bit set) and element 30 (bit clear) differ by the fifth bit.
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[15], 0.25f * (((15 * 5) & 15) + 16 - 16));
  EXPECT_EQ(y[16], 0.25f * ((7 & 15) + 16 - 16));
  EXPECT_EQ(y[1], 0.25f * (5 - 16));
}

TEST(Q32KnownValues, Q5_1FifthBitAtEdges) {
  BlockQ5_1 b{};
  b.d = fp32_to_fp16(0.5f);
  b.m = fp32_to_fp16(1.25f);
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(((j * 7 + 1) & 15) | (((j * 11 + 2) & 15) << 4));
  std::memcpy(b.qh, &kQh, 4);
  const std::vector<float> y = dequantize(GgmlType::Q5_1, &b, 32);
  for (int e = 0; e < 32; ++e) {
    const int low = e < 16 ? ((e * 7 + 1) & 15) : (((e - 16) * 11 + 2) & 15);
    const int q = low + (((kQh >> e) & 1) ? 16 : 0);
    EXPECT_EQ(y[e], 0.5f * q + 1.25f) << e;
  }
  EXPECT_EQ(y[0], 0.5f * (1 + 16) + 1.25f);
  EXPECT_EQ(y[31], 0.5f * (((15 * 11 + 2) & 15) + 16) + 1.25f);
  EXPECT_EQ(y[30], 0.5f * ((14 * 11 + 2) & 15) + 1.25f);
}

TEST(Q32KnownValues, Iq4Nl) {
  const int kLevels[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
  BlockIq4Nl b{};
  b.d = fp32_to_fp16(0.125f);
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const std::vector<float> y = dequantize(GgmlType::IQ4_NL, &b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 0.125f * kLevels[j]) << j;
    EXPECT_EQ(y[j + 16], 0.125f * kLevels[15 - j]) << j;
  }
}

// ------------------------------------------------------------------ quantizers

TEST(Q32Quantize, RoundTripErrorWithinPerTypeBound) {
  // Relative RMSE of N(0, sigma) weights: 4-bit uniform over the block range ~0.1, 5-bit ~0.05.
  const std::map<GgmlType, double> bound = {
      {GgmlType::Q4_1, 0.11}, {GgmlType::Q5_0, 0.06}, {GgmlType::Q5_1, 0.055}, {GgmlType::IQ4_NL, 0.10}};
  const std::vector<float> x = gaussian(8192, 5, 0.02f);
  for (GgmlType t : kQ32Types) {
    const std::vector<float> y = dequantize(t, quantize(t, x).data(), 8192);
    const double e = rel_rmse(y, x);
    std::printf("%-6s round-trip relative RMSE %.4f\n", type_info(t).name, e);
    EXPECT_LE(e, bound.at(t)) << type_info(t).name;
    EXPECT_GT(e, 0.005) << type_info(t).name << ": suspiciously exact for a 4/5-bit format";
    // Quantizing values that are already on the grid keeps them (nearly) there.
    const std::vector<float> y2 = dequantize(t, quantize(t, y).data(), 8192);
    EXPECT_LE(rel_rmse(y2, y), bound.at(t) * 0.5) << type_info(t).name;
  }
}

TEST(Q32Quantize, ConstantAndZeroBlocksStayFinite) {
  for (GgmlType t : kQ32Types) {
    for (float value : {0.0f, 1.0f, -3.0f}) {
      const std::vector<float> x(64, value);
      const std::vector<float> y = dequantize(t, quantize(t, x).data(), 64);
      for (float v : y) {
        ASSERT_TRUE(std::isfinite(v)) << type_info(t).name;
        EXPECT_NEAR(v, value, std::fabs(value) * 0.02 + 1e-6) << type_info(t).name << " value " << value;
      }
    }
  }
}

TEST(Q32Quantize, AffineTypesHitBlockMinAndMaxLevels) {
  // value = d q + m with m = block min: the minimum decodes (up to fp16 rounding of m) exactly,
  // the maximum to the top level.
  std::vector<float> x = gaussian(32, 9, 0.3f);  // well inside the two planted extremes
  x[4] = -2.5f;
  x[27] = 3.5f;
  for (GgmlType t : {GgmlType::Q4_1, GgmlType::Q5_1}) {
    const std::vector<float> y = dequantize(t, quantize(t, x).data(), 32);
    EXPECT_NEAR(y[4], -2.5f, 1e-3) << type_info(t).name;
    EXPECT_NEAR(y[27], 3.5f, 5e-3) << type_info(t).name;
  }
}

TEST(Q32Quantize, Iq4NlMapsExtremeToOuterLevelAndSearchBeatsFixedScale) {
  std::vector<float> x = gaussian(4096, 13, 0.02f);
  const std::vector<uint8_t> q = quantize(GgmlType::IQ4_NL, x);
  const std::vector<float> y = dequantize(GgmlType::IQ4_NL, q.data(), 4096);
  // Fixed rule, computed here: d = (signed extreme) / -127, each element to its nearest level.
  const int kLevels[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
  std::vector<float> fixed(x.size());
  for (size_t b = 0; b < x.size() / 32; ++b) {
    float amax = 0, max = 0;
    for (int j = 0; j < 32; ++j) {
      if (std::fabs(x[32 * b + j]) > amax) { amax = std::fabs(x[32 * b + j]); max = x[32 * b + j]; }
    }
    const float d = fp16_to_fp32(fp32_to_fp16(max / -127.0f));
    for (int j = 0; j < 32; ++j) {
      int best = 0;
      for (int k = 1; k < 16; ++k) {
        if (std::fabs(d * kLevels[k] - x[32 * b + j]) < std::fabs(d * kLevels[best] - x[32 * b + j])) best = k;
      }
      fixed[32 * b + j] = d * kLevels[best];
    }
  }
  const double ours = rel_rmse(y, x), rule = rel_rmse(fixed, x);
  std::printf("IQ4_NL relative RMSE: scale search %.4f, fixed extreme rule %.4f\n", ours, rule);
  EXPECT_LE(ours, rule);
  // Every block's largest-magnitude element lands on one of the two outermost levels (-127 or
  // -104: the sign of d absorbs the element's sign).
  for (size_t b = 0; b < x.size() / 32; ++b) {
    int arg = 0;
    for (int j = 1; j < 32; ++j) if (std::fabs(x[32 * b + j]) > std::fabs(x[32 * b + arg])) arg = j;
    BlockIq4Nl blk;
    std::memcpy(&blk, q.data() + b * sizeof(BlockIq4Nl), sizeof blk);
    const int idx = arg < 16 ? (blk.qs[arg] & 15) : (blk.qs[arg - 16] >> 4);
    EXPECT_LE(idx, 1) << "block " << b << " extreme at level " << idx;
  }
}

// ------------------------------------------------------------------ llama.cpp-written tensors

// llama-quantize's Q4_1 / Q5_0 / Q5_1 / IQ4_NL tensors of the pub model decode to the F16
// model's weights within quantization error (a wrong bit layout gives ~1.4), and our quantizers
// are about as accurate as llama.cpp's on the same weights.
TEST(Q32Reference, LlamaCppTensorsDecodeAndOurQuantizersKeepUp) {
  if (!test::reference_available()) GTEST_SKIP() << "reference data not found at " << test::reference_dir();
  const std::string quants = test::reference_dir() + "/quants";
  const std::vector<uint8_t> f16_file = test::read_bytes(test::reference_dir() + "/pub-F16.gguf");
  std::map<std::string, std::vector<float>> original;
  const auto top_level = load_manifest(test::reference_dir() + "/manifest.json");
  for (const RefTensor& t : top_level.at("pub-F16.gguf")) {
    original[t.name] = read_tensor(f16_file, t);
  }
  const std::map<GgmlType, double> bound = {
      {GgmlType::Q4_1, 0.11}, {GgmlType::Q5_0, 0.06}, {GgmlType::Q5_1, 0.055}, {GgmlType::IQ4_NL, 0.10}};
  const auto quant_files = load_manifest(quants + "/manifest.json");
  for (const char* model : {"pub-Q4_1.gguf", "pub-Q5_0.gguf", "pub-Q5_1.gguf", "pub-IQ4_NL.gguf"}) {
    const std::vector<uint8_t> file = test::read_bytes(quants + "/" + model);
    double ours_sum = 0, theirs_sum = 0;
    int checked = 0;
    GgmlType type = GgmlType::F32;
    for (const RefTensor& t : quant_files.at(model)) {
      if (bound.count(t.type) == 0) continue;
      type = t.type;
      const std::vector<float>& x = original.at(t.name);
      const double theirs = rel_rmse(read_tensor(file, t), x);
      EXPECT_LE(theirs, bound.at(t.type)) << model << " " << t.name;
      ours_sum += rel_rmse(dequantize(t.type, quantize(t.type, x).data(), t.n), x);
      theirs_sum += theirs;
      ++checked;
    }
    ASSERT_GT(checked, 0) << model;
    std::printf("%-6s relative RMSE ours / llama.cpp's: %.4f over %d tensors\n", type_info(type).name,
                ours_sum / theirs_sum, checked);
    EXPECT_LE(ours_sum, theirs_sum * 1.05) << model;
  }
}

// ------------------------------------------------------------------ Q8_1 activations

TEST(Q32Activation, Q8_1IsQ8_0PlusSumWithUnroundedScale) {
  std::vector<float> x = gaussian(4096, 31, 2.0f);
  x[7] = 40.0f;                                                             // outlier
  for (int i = 64; i < 96; ++i) x[static_cast<size_t>(i)] = 0.0f;          // zero block
  for (int i = 96; i < 128; ++i) x[static_cast<size_t>(i)] = i % 2 ? 0.5f : -0.25f;  // ties at .5
  force_simd_level("scalar");
  std::vector<BlockQ8_0> q8_0(128);
  std::vector<BlockQ8_1> want(128);
  quantize_activation(GgmlType::Q8_0, x.data(), q8_0.data(), 4096);
  quantize_activation(GgmlType::Q8_1, x.data(), want.data(), 4096);
  for (int i = 0; i < 128; ++i) {
    ASSERT_EQ(want[i].d, q8_0[i].d) << i;
    ASSERT_EQ(std::memcmp(want[i].qs, q8_0[i].qs, 32), 0) << i;
    float amax = 0;
    int sum = 0;
    for (int j = 0; j < 32; ++j) {
      amax = std::max(amax, std::fabs(x[static_cast<size_t>(32 * i + j)]));
      sum += want[i].qs[j];
    }
    // s uses the fp32 scale amax / 127, not the fp16-rounded d.
    EXPECT_EQ(want[i].s, fp32_to_fp16(amax / 127.f * static_cast<float>(sum))) << i;
  }
  EXPECT_EQ(activation_row_bytes(GgmlType::Q8_1, 4096), 4096u / 32 * 36);
  for (const char* level : simd_levels()) {
    force_simd_level(level);
    std::vector<BlockQ8_1> got(128);
    std::memset(got.data(), 0xAA, got.size() * sizeof(BlockQ8_1));
    quantize_activation(GgmlType::Q8_1, x.data(), got.data(), 4096);
    EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(BlockQ8_1)), 0) << level;
  }
  force_simd_level(best_simd_level());
}

// ------------------------------------------------------------------ dot products

TEST(Q32Dot, ScalarEqualsDoubleDotOfDequantizedOperands) {
  std::mt19937 rng(17);
  for (GgmlType t : kQ32Types) {
    for (int64_t nb : {1, 2, 3, 7, 64}) {
      const int64_t n = nb * 32;
      const std::vector<uint8_t> w = random_weight_blocks(t, nb, rng);
      const std::vector<uint8_t> a = random_act_blocks(t, nb, rng, /*exact_s=*/true);
      double want, scale;
      reference_dot(t, n, w.data(), a.data(), &want, &scale);
      // With s exact, the min term is the dequantized one: plain sum of products, independently.
      const std::vector<float> wd = dequantize(t, w.data(), n);
      const std::vector<double> ad = dequantize_act(t, a.data(), nb);
      double plain = 0;
      for (int64_t i = 0; i < n; ++i) plain += wd[static_cast<size_t>(i)] * ad[static_cast<size_t>(i)];
      EXPECT_NEAR(plain, want, 1e-7 * scale + 1e-12) << type_info(t).name << " blocks=" << nb;
      const float got = ops(t)->vec_dot_scalar(n, w.data(), a.data());
      EXPECT_NEAR(got, plain, 2e-6 * scale + 1e-9) << type_info(t).name << " blocks=" << nb;
    }
  }
}

TEST(Q32Dot, QuantizerOutputAndActivationsEveryLevelMatchesDouble) {
  // Real quantizer output against quantize_activation's rows (an outlier included).
  for (GgmlType t : kQ32Types) {
    const int64_t n = 4096;
    const GgmlType act = ops(t)->vec_dot_type;
    const std::vector<uint8_t> w = quantize(t, gaussian(n, 21, 0.05f));
    std::vector<float> x = gaussian(n, 22, 1.0f);
    x[1000] = 8.0f;
    std::vector<uint8_t> a(activation_row_bytes(act, n));
    quantize_activation(act, x.data(), a.data(), n);
    double want, scale;
    reference_dot(t, n, w.data(), a.data(), &want, &scale);
    EXPECT_NEAR(ops(t)->vec_dot_scalar(n, w.data(), a.data()), want, 2e-6 * scale) << type_info(t).name;
    for (const char* level : simd_levels()) {
      EXPECT_NEAR(vec_dot_for_level(t, level)(n, w.data(), a.data()), want, 1e-5 * scale)
          << type_info(t).name << " " << level;
    }
  }
}

TEST(Q32Dot, EverySimdLevelAgreesWithScalarOnRandomBlocks) {
  std::printf("best SIMD level on this CPU: %s\n", best_simd_level());
  std::mt19937 rng(23);
  int checked = 0;
  for (GgmlType t : kQ32Types) {
    for (int rep = 0; rep < 20; ++rep) {
      for (int64_t nb : {1, 2, 3, 7, 64}) {
        const int64_t n = nb * 32;
        const std::vector<uint8_t> w = random_weight_blocks(t, nb, rng);
        const std::vector<uint8_t> a = random_act_blocks(t, nb, rng);
        double want, scale;
        reference_dot(t, n, w.data(), a.data(), &want, &scale);
        const float scalar = ops(t)->vec_dot_scalar(n, w.data(), a.data());
        ASSERT_NEAR(scalar, want, 2e-6 * scale + 1e-9) << type_info(t).name << " blocks=" << nb;
        for (const char* level : simd_levels()) {
          const float got = vec_dot_for_level(t, level)(n, w.data(), a.data());
          ASSERT_NEAR(got, scalar, 1e-5 * scale + 1e-9)
              << type_info(t).name << " " << level << " blocks=" << nb << " rep=" << rep;
          ++checked;
        }
      }
    }
  }
  if (simd_levels().empty()) GTEST_SKIP() << "this CPU has no SIMD level to compare";
  EXPECT_EQ(checked, 4 * 20 * 5 * static_cast<int>(simd_levels().size()));
}

TEST(Q32Dot, ExtremeLevelsDoNotSaturate) {
  // Every weight at its largest-magnitude level, every activation at +-127: a saturating int16
  // step in a SIMD path would show as a large error.
  for (GgmlType t : kQ32Types) {
    const int64_t nb = 8, n = nb * 32;
    const size_t bytes = type_info(t).block_bytes;
    std::vector<uint8_t> w(static_cast<size_t>(nb) * bytes, 0);
    for (int64_t i = 0; i < nb; ++i) {
      uint8_t* blk = w.data() + i * bytes;
      const uint16_t d = fp32_to_fp16(0.01f);
      std::memcpy(blk, &d, 2);
      // Level 15 / 31 for the unsigned types; for Q5_0 level 0 (-16) and for IQ4_NL index 0 (-127).
      const bool low_end = t == GgmlType::Q5_0 || t == GgmlType::IQ4_NL;
      std::memset(blk + bytes - 16, low_end ? 0x00 : 0xff, 16);
      if (t == GgmlType::Q5_1) std::memset(blk + 4, 0xff, 4);
    }
    std::mt19937 rng(37);
    std::vector<uint8_t> a = random_act_blocks(t, nb, rng);
    const size_t a_bytes = takes_q8_1(t) ? sizeof(BlockQ8_1) : sizeof(BlockQ8_0);
    for (int64_t i = 0; i < nb; ++i) {
      auto* qs = reinterpret_cast<int8_t*>(a.data() + i * a_bytes + a_bytes - 32);
      for (int j = 0; j < 32; ++j) qs[j] = static_cast<int8_t>(j % 3 == 0 ? 127 : -127);
    }
    double want, scale;
    reference_dot(t, n, w.data(), a.data(), &want, &scale);
    EXPECT_NEAR(ops(t)->vec_dot_scalar(n, w.data(), a.data()), want, 1e-6 * scale) << type_info(t).name;
    for (const char* level : simd_levels()) {
      EXPECT_NEAR(vec_dot_for_level(t, level)(n, w.data(), a.data()), want, 1e-5 * scale)
          << type_info(t).name << " " << level;
    }
  }
}

TEST(Q32Dot, FourTokenKernelsAreBitIdenticalToSingleToken) {
  std::mt19937 rng(29);
  for (GgmlType t : kQ32Types) {
    for (int64_t nb : {1, 3, 64}) {
      const int64_t n = nb * 32;
      const std::vector<uint8_t> w = random_weight_blocks(t, nb, rng);
      const size_t stride = activation_row_bytes(ops(t)->vec_dot_type, n) + 6;  // padded, unaligned rows
      std::vector<uint8_t> acts(stride * kVecDotTokens);
      for (int k = 0; k < kVecDotTokens; ++k) {
        const std::vector<uint8_t> a = random_act_blocks(t, nb, rng);
        std::memcpy(acts.data() + k * stride, a.data(), a.size());
      }
      // Every SIMD level has the 4-token form for these types.
      EXPECT_EQ(expect_x4_equals_single(t, n, w.data(), acts.data(), stride, simd_levels(), "blocks=" + std::to_string(nb)),
                static_cast<int>(simd_levels().size()))
          << type_info(t).name;
    }
  }
}

}  // namespace
}  // namespace flea::quant
