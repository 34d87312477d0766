// Q2_K, Q3_K and IQ4_XS: hand-built blocks with known values (scale packing, high bits), quantize
// round trips, the scalar dot against a double dot of the dequantized operands, and every SIMD
// level (single and 4-token forms) against the scalar reference over random blocks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "compute/cpu/matmul.h"
#include "compute/cpu/thread_pool.h"
#include "quant/fp16.h"
#include "quant/quant.h"
#include "quant_test_util.h"
#include "test_util.h"

namespace flea::quant {
namespace {

constexpr GgmlType kLowKTypes[] = {GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::IQ4_XS};

// 2-bit level of element e as the Q2_K/Q3_K header describes it: byte 32 * (e / 128) + e % 32,
// bits 2s..2s+1 with s = (e % 128) / 32.
int two_bits(const uint8_t* qs, int e) { return (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3; }

// ------------------------------------------------------------------ table

TEST(QuantLowKTable, TypesHaveOpsAndDotWithQ8K) {
  for (GgmlType t : kLowKTypes) {
    const QuantOps* o = ops(t);
    ASSERT_NE(o, nullptr) << type_info(t).name;
    EXPECT_EQ(o->type, t);
    EXPECT_EQ(o->vec_dot_type, GgmlType::Q8_K);
    EXPECT_NE(o->dequantize, nullptr);
    EXPECT_NE(o->quantize, nullptr);
    EXPECT_NE(o->vec_dot, nullptr);
    EXPECT_NE(o->vec_dot_scalar, nullptr);
    EXPECT_EQ(vec_dot_for_level(t, "scalar"), o->vec_dot_scalar);
  }
  EXPECT_EQ(type_info(GgmlType::Q2_K).block_bytes, sizeof(BlockQ2K));
  EXPECT_EQ(type_info(GgmlType::Q3_K).block_bytes, sizeof(BlockQ3K));
  EXPECT_EQ(type_info(GgmlType::IQ4_XS).block_bytes, sizeof(BlockIq4Xs));
}

// ------------------------------------------------------------------ known values

TEST(QuantLowKKnownValues, Q2_KLiteralElements) {
  BlockQ2K b{};
  b.d = fp32_to_fp16(0.5f);
  b.dmin = fp32_to_fp16(0.25f);
  b.scales[0] = 0x21;   // sub-block 0 (elements 0-15): scale 1, min 2
  b.scales[2] = 0x0f;   // sub-block 2 (32-47): scale 15, min 0
  b.scales[6] = 0xf3;   // sub-block 6 (96-111): scale 3, min 15
  b.scales[15] = 0x97;  // sub-block 15 (240-255): scale 7, min 9
  b.qs[0] = 0xe4;       // elements 0, 32, 64, 96: levels 0, 1, 2, 3
  b.qs[63] = 0x80;      // element 128 + 96 + 31 = 255: level 2
  const std::vector<float> y = dequantize(GgmlType::Q2_K, &b, 256);
  EXPECT_EQ(y[0], 0.5f * 1 * 0 - 0.25f * 2);
  EXPECT_EQ(y[32], 0.5f * 15 * 1);
  EXPECT_EQ(y[64], 0.0f);  // sub-block 4 has scale 0, min 0
  EXPECT_EQ(y[96], 0.5f * 3 * 3 - 0.25f * 15);
  EXPECT_EQ(y[97], -0.25f * 15);
  EXPECT_EQ(y[255], 0.5f * 7 * 2 - 0.25f * 9);
  EXPECT_EQ(y[254], -0.25f * 9);
}

TEST(QuantLowKKnownValues, Q2_KEveryElement) {
  BlockQ2K b{};
  b.d = fp32_to_fp16(0.125f);
  b.dmin = fp32_to_fp16(2.0f);
  for (int j = 0; j < 16; ++j) b.scales[j] = static_cast<uint8_t>((j * 37 + 5) & 0xff);
  for (int i = 0; i < 64; ++i) b.qs[i] = static_cast<uint8_t>((i * 91 + 17) & 0xff);
  const std::vector<float> y = dequantize(GgmlType::Q2_K, &b, 256);
  for (int e = 0; e < 256; ++e) {
    const int sc = b.scales[e / 16] & 15, m = b.scales[e / 16] >> 4;
    EXPECT_FLOAT_EQ(y[e], 0.125f * sc * two_bits(b.qs, e) - 2.0f * m) << e;
  }
}

TEST(QuantLowKKnownValues, Q3_KScalePackingAndHighBits) {
  BlockQ3K b{};
  b.d = fp32_to_fp16(0.5f);
  // All scale bytes zero: every six-bit scale is 0, i.e. -32. Now set, by hand:
  b.scales[8] = 0x03;           // high bits of scale 0 (byte 8 bits 0-1) = 3      -> s0 = 48
  b.scales[9] = 0x08;           // high bits of scale 5 (byte 9 bits 2-3) = 2      -> s5 = 32
  b.scales[11] = 0x10 | 0xc0;   // scale 11 (byte 11 bits 4-5) = 1, 15 (bits 6-7) = 3
  b.scales[3] = 0x05;           // low nibble of scale 3
  b.scales[7] = 0x90;           // high nibble of byte 7 = low bits of scale 15
  b.scales[2] = 0x60;           // high nibble of byte 2 = low bits of scale 10
  const int want_scale[16] = {48, 0, 0, 5, 0, 32, 0, 0, 0, 0, 6, 16, 0, 0, 0, 57};
  // Levels: all two-bit fields 3 except where set below; no high bits except hmask[5] bit 3
  // (element 3 * 32 + 5 = 101) and hmask[31] bit 7 (element 255).
  std::memset(b.qs, 0xff, sizeof(b.qs));
  b.qs[0] = 0x00;  // elements 0, 32, 64, 96: low bits 0
  b.hmask[5] = 0x08;
  b.hmask[31] = 0x80;
  const std::vector<float> y = dequantize(GgmlType::Q3_K, &b, 256);
  EXPECT_EQ(y[0], 0.5f * (48 - 32) * (0 - 4));
  EXPECT_EQ(y[1], 0.5f * (48 - 32) * (3 - 4));
  EXPECT_EQ(y[50], 0.5f * (5 - 32) * (3 - 4));     // sub-block 3
  EXPECT_EQ(y[80], 0.5f * (32 - 32) * (3 - 4));    // sub-block 5
  EXPECT_EQ(y[101], 0.5f * (0 - 32) * 3);          // high bit set: level 3
  EXPECT_EQ(y[100], 0.5f * (0 - 32) * (3 - 4));    // neighbour without it
  EXPECT_EQ(y[165], 0.5f * (6 - 32) * (3 - 4));    // sub-block 10
  EXPECT_EQ(y[180], 0.5f * (16 - 32) * (3 - 4));   // sub-block 11
  EXPECT_EQ(y[255], 0.5f * (57 - 32) * 3);         // sub-block 15, high bit set
  EXPECT_EQ(y[254], 0.5f * (57 - 32) * (3 - 4));
  for (int e = 0; e < 256; ++e) {
    const int high = (b.hmask[e % 32] >> (e / 32)) & 1;
    const int q = two_bits(b.qs, e) - (high ? 0 : 4);
    EXPECT_EQ(y[e], 0.5f * (want_scale[e / 16] - 32) * q) << e;
  }
}

// Packs 16 six-bit Q3_K scales byte by byte from the format description.
void pack_q3_scales_by_hand(const int* s, uint8_t* out) {
  std::memset(out, 0, 12);
  for (int j = 0; j < 16; ++j) {
    if (j < 8) out[j] |= static_cast<uint8_t>(s[j] & 15);
    else out[j - 8] |= static_cast<uint8_t>((s[j] & 15) << 4);
    out[8 + j % 4] |= static_cast<uint8_t>((s[j] >> 4) << (2 * (j / 4)));
  }
}

TEST(QuantLowKKnownValues, Q3_KEveryElement) {
  const int s[16] = {0, 63, 17, 32, 45, 2, 60, 31, 33, 8, 50, 1, 40, 27, 12, 59};
  BlockQ3K b{};
  b.d = fp32_to_fp16(0.25f);
  pack_q3_scales_by_hand(s, b.scales);
  for (int i = 0; i < 64; ++i) b.qs[i] = static_cast<uint8_t>((i * 29 + 3) & 0xff);
  for (int i = 0; i < 32; ++i) b.hmask[i] = static_cast<uint8_t>((i * 73 + 41) & 0xff);
  const std::vector<float> y = dequantize(GgmlType::Q3_K, &b, 256);
  for (int e = 0; e < 256; ++e) {
    const int high = (b.hmask[e % 32] >> (e / 32)) & 1;
    const int q = two_bits(b.qs, e) - (high ? 0 : 4);
    EXPECT_FLOAT_EQ(y[e], 0.25f * (s[e / 16] - 32) * q) << e;
  }
}

TEST(QuantLowKKnownValues, Iq4XsScalesAndNibbles) {
  BlockIq4Xs b{};
  b.d = fp32_to_fp16(0.5f);
  b.scales_l[0] = 0x3a;   // sub-block 0 low bits 0xa, sub-block 1 low bits 3
  b.scales_l[3] = 0xf0;   // sub-block 7 low bits 0xf
  b.scales_h = static_cast<uint16_t>((2 << 0) | (1 << 2) | (3 << 14));  // sub-blocks 0, 1, 7
  // Six-bit scales: 0x2a = 42, 0x13 = 19, 0 for 2..6, 0x3f = 63.
  b.qs[0] = 0xf0;         // element 0: index 0 (-127), element 16: index 15 (113)
  b.qs[16] = 0x78;        // element 32: index 8 (1), element 48: index 7 (-10)
  b.qs[127] = 0x5c;       // element 239: index 12 (53), element 255: index 5 (-35)
  const std::vector<float> y = dequantize(GgmlType::IQ4_XS, &b, 256);
  EXPECT_EQ(y[0], 0.5f * (42 - 32) * -127);
  EXPECT_EQ(y[16], 0.5f * (42 - 32) * 113);
  EXPECT_EQ(y[1], 0.5f * (42 - 32) * -127);   // index 0 elsewhere
  EXPECT_EQ(y[32], 0.5f * (19 - 32) * 1);
  EXPECT_EQ(y[48], 0.5f * (19 - 32) * -10);
  EXPECT_EQ(y[64], 0.5f * (0 - 32) * -127);
  EXPECT_EQ(y[239], 0.5f * (63 - 32) * 53);
  EXPECT_EQ(y[255], 0.5f * (63 - 32) * -35);
  for (int e = 0; e < 256; ++e) {
    const int j = e / 32, l = e % 32;
    const int ls = ((b.scales_l[j / 2] >> (4 * (j % 2))) & 15) | (((b.scales_h >> (2 * j)) & 3) << 4);
    const uint8_t byte = b.qs[16 * j + l % 16];
    const int idx = l < 16 ? (byte & 15) : (byte >> 4);
    EXPECT_EQ(y[e], 0.5f * (ls - 32) * kIq4nlValues[idx]) << e;
  }
}

TEST(QuantLowKKnownValues, Iq4nlTableIsTheFormats) {
  const int want[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
  for (int k = 0; k < 16; ++k) EXPECT_EQ(kIq4nlValues[k], want[k]) << k;
}

// ------------------------------------------------------------------ quantizers

TEST(QuantLowKRoundTrip, ErrorWithinPerTypeBound) {
  // Relative RMSE on N(0, sigma) weights; these quantizers give 0.263 (Q2_K), 0.144 (Q3_K) and
  // 0.074 (IQ4_XS) here.
  const std::map<GgmlType, double> bound = {{GgmlType::Q2_K, 0.30}, {GgmlType::Q3_K, 0.19}, {GgmlType::IQ4_XS, 0.10}};
  const std::vector<float> x = gaussian(8192, 3, 0.02f);
  for (GgmlType t : kLowKTypes) {
    const std::vector<uint8_t> q = quantize(t, x);
    const std::vector<float> y = dequantize(t, q.data(), 8192);
    const double e = rel_rmse(y, x);
    std::printf("%-6s relative RMSE %.4f\n", type_info(t).name, e);
    EXPECT_LE(e, bound.at(t)) << type_info(t).name;
    EXPECT_GE(e, bound.at(t) * 0.3) << type_info(t).name << ": suspiciously good for this many bits";
    // Re-quantizing the dequantized values must land on (nearly) the same values.
    const std::vector<float> y2 = dequantize(t, quantize(t, y).data(), 8192);
    EXPECT_LE(rel_rmse(y2, y), bound.at(t) * 0.5) << type_info(t).name;
  }
}

TEST(QuantLowKRoundTrip, ScaledInputsKeepTheirRelativeError) {
  // A scale change of the input must not change the relative error much (fp16 super-scales).
  for (GgmlType t : kLowKTypes) {
    const std::vector<float> x = gaussian(2048, 5, 1.0f);
    std::vector<float> xs(x);
    for (float& v : xs) v *= 1e-3f;
    const double e1 = rel_rmse(dequantize(t, quantize(t, x).data(), 2048), x);
    const double e2 = rel_rmse(dequantize(t, quantize(t, xs).data(), 2048), xs);
    EXPECT_NEAR(e1, e2, 0.01) << type_info(t).name;
  }
}

TEST(QuantLowKRoundTrip, OutlierIsKept) {
  // One large value per super-block: the sub-block holding it must still represent it.
  for (GgmlType t : kLowKTypes) {
    std::vector<float> x = gaussian(512, 9, 0.01f);
    x[77] = 0.5f;
    x[300] = -0.4f;
    const std::vector<float> y = dequantize(t, quantize(t, x).data(), 512);
    EXPECT_NEAR(y[77], 0.5f, 0.06f) << type_info(t).name;
    EXPECT_NEAR(y[300], -0.4f, 0.06f) << type_info(t).name;
  }
}

// ------------------------------------------------------------------ llama.cpp-written tensors

TEST(QuantLowKReference, LlamaCppTensorsDequantizeNearTheOriginalAndOursAreAsAccurate) {
  const std::string quants = test::reference_dir() + "/quants";
  if (!test::reference_available() || !std::ifstream(quants + "/manifest.json")) {
    GTEST_SKIP() << "reference data not found at " << quants;
  }
  const auto originals = load_manifest(test::reference_dir() + "/manifest.json");
  const std::vector<uint8_t> f16_file = test::read_bytes(test::reference_dir() + "/pub-F16.gguf");
  std::map<std::string, std::vector<float>> original;
  for (const RefTensor& t : originals.at("pub-F16.gguf")) original[t.name] = read_tensor(f16_file, t);
  // A wrong bit layout gives a relative error of ~1.4 against N(0, sigma) weights.
  const std::map<GgmlType, double> bound = {{GgmlType::Q2_K, 0.40}, {GgmlType::Q3_K, 0.22}, {GgmlType::IQ4_XS, 0.10}};
  std::map<GgmlType, double> sum_ours, sum_theirs;
  std::map<GgmlType, int> count;
  for (const auto& [model, tensors] : load_manifest(quants + "/manifest.json")) {
    if (model != "pub-Q2_K.gguf" && model != "pub-Q3_K_M.gguf" && model != "pub-IQ4_XS.gguf") continue;
    const std::vector<uint8_t> file = test::read_bytes(quants + "/" + model);
    for (const RefTensor& t : tensors) {
      if (bound.count(t.type) == 0) continue;
      const std::vector<float>& x = original.at(t.name);
      const double theirs = rel_rmse(read_tensor(file, t), x);
      const double ours = rel_rmse(dequantize(t.type, quantize(t.type, x).data(), t.n), x);
      EXPECT_LE(theirs, bound.at(t.type)) << model << " " << t.name << " " << type_info(t.type).name;
      EXPECT_LE(ours, theirs * 1.05) << model << " " << t.name << " ours " << ours << " llama.cpp " << theirs;
      sum_ours[t.type] += ours;
      sum_theirs[t.type] += theirs;
      ++count[t.type];
    }
  }
  for (GgmlType t : kLowKTypes) {
    ASSERT_GT(count[t], 0) << "no reference tensor of " << type_info(t).name;
    std::printf("%-6s mean relative RMSE over %d tensors, ours / llama.cpp's: %.4f / %.4f\n", type_info(t).name,
                count[t], sum_ours[t] / count[t], sum_theirs[t] / count[t]);
  }
}

// ------------------------------------------------------------------ dot products

// n weights of type t built from random bytes (every bit pattern the kernels can meet) with
// sane fp16 super-scales.
std::vector<uint8_t> random_blocks(GgmlType t, int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> q(row_bytes(type_info(t), n));
  for (uint8_t& b : q) b = static_cast<uint8_t>(rng());
  std::uniform_real_distribution<float> scale(-0.02f, 0.02f);
  const size_t bb = type_info(t).block_bytes;
  for (size_t off = 0; off < q.size(); off += bb) {
    const uint16_t d = fp32_to_fp16(scale(rng)), dmin = fp32_to_fp16(std::fabs(scale(rng)));
    switch (t) {
      case GgmlType::Q2_K: {
        auto* b = reinterpret_cast<BlockQ2K*>(q.data() + off);
        b->d = d;
        b->dmin = dmin;
        break;
      }
      case GgmlType::Q3_K: reinterpret_cast<BlockQ3K*>(q.data() + off)->d = d; break;
      case GgmlType::IQ4_XS: reinterpret_cast<BlockIq4Xs*>(q.data() + off)->d = d; break;
      default: ADD_FAILURE() << "no random blocks for " << type_info(t).name;
    }
  }
  return q;
}

std::vector<uint8_t> activations(const std::vector<float>& x) {
  std::vector<uint8_t> a(activation_row_bytes(GgmlType::Q8_K, static_cast<int64_t>(x.size())));
  quantize_row_q8_k(x.data(), a.data(), static_cast<int64_t>(x.size()));
  return a;
}

TEST(QuantLowKDot, ScalarEqualsDoubleDotOfDequantizedOperands) {
  for (GgmlType t : kLowKTypes) {
    for (int64_t blocks : {1, 3, 16}) {
      const int64_t n = 256 * blocks;
      for (int variant = 0; variant < 2; ++variant) {
        const std::vector<uint8_t> w = variant == 0 ? random_blocks(t, n, 100 + static_cast<uint32_t>(n))
                                                    : quantize(t, gaussian(n, 200 + static_cast<uint32_t>(n), 0.05f));
        std::vector<float> x = gaussian(n, 300 + static_cast<uint32_t>(n));
        x[static_cast<size_t>(n / 3)] = 7.0f;
        const std::vector<uint8_t> a = activations(x);
        const std::vector<float> wd = dequantize(t, w.data(), n);
        std::vector<float> xd(static_cast<size_t>(n));
        dequantize_row_q8_k(a.data(), xd.data(), n);
        double want = 0, scale = 0;
        for (int64_t i = 0; i < n; ++i) {
          want += static_cast<double>(wd[i]) * xd[i];
          scale += std::fabs(static_cast<double>(wd[i]) * xd[i]);
        }
        const float got = ops(t)->vec_dot_scalar(n, w.data(), a.data());
        EXPECT_NEAR(got, want, 2e-6 * scale + 1e-9) << type_info(t).name << " n=" << n << " variant " << variant;
      }
    }
  }
}

TEST(QuantLowKDot, EveryLevelAgreesWithScalarOnRandomBlocks) {
  std::printf("levels available on this CPU: best=%s\n", best_simd_level());
  for (GgmlType t : kLowKTypes) {
    for (int64_t blocks : {1, 2, 3, 7, 16}) {
      const int64_t n = 256 * blocks;
      for (uint32_t seed = 0; seed < 4; ++seed) {
        const std::vector<uint8_t> w = random_blocks(t, n, 1000 * seed + static_cast<uint32_t>(blocks));
        std::vector<float> x = gaussian(n, 5000 * seed + static_cast<uint32_t>(blocks), 1.0f + seed);
        if (seed == 3) {
          for (int64_t i = 0; i < n; ++i) x[static_cast<size_t>(i)] = (i % 2) ? 1.0f : -1.0f;  // |q| = 127 everywhere
        }
        const std::vector<uint8_t> a = activations(x);
        double scale = 0;
        {
          const std::vector<float> wd = dequantize(t, w.data(), n);
          std::vector<float> xd(static_cast<size_t>(n));
          dequantize_row_q8_k(a.data(), xd.data(), n);
          for (int64_t i = 0; i < n; ++i) scale += std::fabs(static_cast<double>(wd[i]) * xd[i]);
        }
        const float want = ops(t)->vec_dot_scalar(n, w.data(), a.data());
        for (const char* level : available_levels()) {
          const float got = vec_dot_for_level(t, level)(n, w.data(), a.data());
          EXPECT_NEAR(got, want, 1e-5 * scale + 1e-9)
              << type_info(t).name << " " << level << " blocks=" << blocks << " seed=" << seed;
        }
      }
    }
  }
}

TEST(QuantLowKDot, ExtremeLevelsDoNotSaturate) {
  // Largest-magnitude levels, scales and activations together: any int16 saturation shows.
  const int64_t n = 512;
  std::vector<float> x(n);
  for (int64_t i = 0; i < n; ++i) x[static_cast<size_t>(i)] = (i % 3 == 0) ? 1.0f : -1.0f;
  const std::vector<uint8_t> a = activations(x);
  for (GgmlType t : kLowKTypes) {
    std::vector<uint8_t> w(row_bytes(type_info(t), n));
    for (int fill : {0x00, 0xff, 0x88, 0x77}) {
      std::memset(w.data(), fill, w.size());
      for (size_t off = 0; off < w.size(); off += type_info(t).block_bytes) {
        if (t == GgmlType::Q2_K) {
          reinterpret_cast<BlockQ2K*>(w.data() + off)->d = fp32_to_fp16(1.0f);
          reinterpret_cast<BlockQ2K*>(w.data() + off)->dmin = fp32_to_fp16(1.0f);
        } else if (t == GgmlType::Q3_K) {
          reinterpret_cast<BlockQ3K*>(w.data() + off)->d = fp32_to_fp16(1.0f);
        } else {
          reinterpret_cast<BlockIq4Xs*>(w.data() + off)->d = fp32_to_fp16(1.0f);
        }
      }
      const std::vector<float> wd = dequantize(t, w.data(), n);
      std::vector<float> xd(n);
      dequantize_row_q8_k(a.data(), xd.data(), n);
      double want = 0;
      for (int64_t i = 0; i < n; ++i) want += static_cast<double>(wd[i]) * xd[i];
      for (const char* level : available_levels()) {
        EXPECT_NEAR(vec_dot_for_level(t, level)(n, w.data(), a.data()), want, 1e-5 * std::fabs(want) + 1e-4)
            << type_info(t).name << " " << level << " fill " << fill;
      }
    }
  }
}

TEST(QuantLowKDot, FourTokenKernelsAreBitIdenticalToSingleToken) {
  const std::string best = best_simd_level();
  for (GgmlType t : kLowKTypes) {
    for (int64_t blocks : {1, 7}) {
      const int64_t n = 256 * blocks;
      const std::vector<uint8_t> w = random_blocks(t, n, 77 + static_cast<uint32_t>(blocks));
      const size_t stride = activation_row_bytes(GgmlType::Q8_K, n) + 64;  // padded rows
      std::vector<uint8_t> acts(stride * kVecDotTokens);
      for (int k = 0; k < kVecDotTokens; ++k) {
        const std::vector<float> x = gaussian(n, 40 + static_cast<uint32_t>(k), 1.0f);
        quantize_row_q8_k(x.data(), acts.data() + k * stride, n);
      }
      const int levels_with_x4 = expect_x4_equals_single(t, n, w.data(), acts.data(), stride, available_levels(),
                                                         "blocks=" + std::to_string(blocks));
      if (best != "scalar") {
        EXPECT_GT(levels_with_x4, 0) << type_info(t).name;
      }
    }
  }
}

TEST(QuantLowKDot, MatmulEqualsPerRowDotsAtEveryLevel) {
  // The CPU matmul (4-token groups, row tiles, threads) must give exactly the per-row dots.
  const test::AmxOff vnni_only;  // the tile path is checked against the dots in matmul_amx_test
  const int64_t cols = 512, rows = 37;  // 37: not a multiple of the row tile
  const std::string best = best_simd_level();
  for (const char* level : available_levels()) {
    force_simd_level(level);
    for (GgmlType t : kLowKTypes) {
      const std::vector<uint8_t> wq = random_blocks(t, cols * rows, 11);
      const size_t w_row = row_bytes(type_info(t), cols);
      const cpu::WeightView w{t, cols, rows, wq.data()};
      for (int64_t n_tokens : {1, 5, 17}) {
        const std::vector<float> x = gaussian(cols * n_tokens, 60 + static_cast<uint32_t>(n_tokens));
        std::vector<float> want(static_cast<size_t>(n_tokens * rows));
        std::vector<uint8_t> a(activation_row_bytes(GgmlType::Q8_K, cols));
        for (int64_t tk = 0; tk < n_tokens; ++tk) {
          quantize_activation(GgmlType::Q8_K, x.data() + tk * cols, a.data(), cols);
          for (int64_t r = 0; r < rows; ++r) want[tk * rows + r] = ops(t)->vec_dot(cols, wq.data() + r * w_row, a.data());
        }
        for (int threads : {1, 2}) {
          cpu::ThreadPool pool(threads);
          std::vector<float> out(want.size(), NAN);
          cpu::matmul(w, x.data(), n_tokens, out.data(), &pool);
          for (size_t i = 0; i < out.size(); ++i) {
            ASSERT_EQ(out[i], want[i]) << level << " " << type_info(t).name << " tokens=" << n_tokens
                                       << " threads=" << threads << " i=" << i;
          }
        }
      }
    }
  }
  force_simd_level(best.c_str());
}

}  // namespace
}  // namespace flea::quant
