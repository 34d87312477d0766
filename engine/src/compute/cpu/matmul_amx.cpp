// The AMX-INT8 batched matmul (see amx.h for the arithmetic). Compiled with -mamx-tile -mamx-int8
// and AVX-512: nothing here may run before amx::available() said yes, so this file has no static
// initialisers and nothing outside calls into it but amx.cpp.
//
// Work split: strips of 16 weight rows are handed out to the threads; a thread unpacks its strip
// once (int8 levels [16][cols], scale and min per sub-block) and runs it against every 16-token
// tile of the activations, which were laid out once per call:
//   B[k/4][16 tokens][4]  int8  (the TDPBSSD "B" operand: 4 consecutive k of one token per dword)
//   sa[sub][16 tokens], asum[sub][16 tokens]  float
// Per sub-block s of `sub` (32 or 16) columns: C = A_s . B_s (16x16 int32, a fresh tile) is stored
// and folded into 16 AVX-512 float accumulators (one per weight row, lanes = tokens). Two C tiles
// alternate so one sub-block's product overlaps the previous one's epilogue.
// GCC 12 warns about _mm512_undefined_* inside its own avx512fintrin.h (a known false positive).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "compute/cpu/amx.h"
#include "flea/status.h"
#include "quant/fp16.h"
#include "quant/quant.h"
#include "quant/quant_kernels.h"

namespace flea::cpu::amx::internal {
namespace {

using quant::kQk0;
using quant::kQkK;

constexpr int kTile = 16;  // weight rows per strip = tokens per token tile = C tile rows/cols

// One weight row as int8 levels q[cols] and, per sub-block s, the scale sw[s * 16] and the min
// coefficient mw[s * 16] (null for types without mins): the row's value at column c of sub-block s
// is sw * q[c] + mw. (sw, mw point at this row's lane of the [n_sub][16] strip arrays.)
using UnpackFn = void (*)(const uint8_t* row, int64_t cols, int8_t* q, float* sw, float* mw);

// Activation rows: the int8 levels of `cols` values into q, per sub-block the scale sa[s * 16]
// and value sum asum[s * 16] (asum may be null when the weight type has no mins).
using ActFn = void (*)(const uint8_t* row, int64_t cols, int sub, int8_t* q, float* sa, float* asum);

inline float h2f(uint16_t h) { return fp16_to_fp32(h); }

// ---- weight unpacking, one row

void unpack_q8_0(const uint8_t* row, int64_t cols, int8_t* q, float* sw, float*) {
  const auto* b = reinterpret_cast<const quant::BlockQ8_0*>(row);
  for (int64_t i = 0; i < cols / kQk0; ++i) {
    std::memcpy(q + 32 * i, b[i].qs, 32);
    sw[i * kTile] = h2f(b[i].d);
  }
}

// Low nibbles of 16 bytes are elements 0-15, high nibbles 16-31 (Q4_0, Q4_1, Q5_x, IQ4_NL).
inline __m256i nibbles_32(const uint8_t* qs) {
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i m = _mm_set1_epi8(0x0f);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(x, 4), m), _mm_and_si128(x, m));
}

// Bit j of the 32-bit qh as 16 in byte j (Q5_0 / Q5_1's fifth bit).
inline __m256i fifth_bits(const uint8_t* qh) {
  uint32_t bits;
  std::memcpy(&bits, qh, 4);
  return _mm256_maskz_set1_epi8(bits, 16);
}

void unpack_q4_0(const uint8_t* row, int64_t cols, int8_t* q, float* sw, float*) {
  const auto* b = reinterpret_cast<const quant::BlockQ4_0*>(row);
  const __m256i eight = _mm256_set1_epi8(8);
  for (int64_t i = 0; i < cols / kQk0; ++i) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 32 * i), _mm256_sub_epi8(nibbles_32(b[i].qs), eight));
    sw[i * kTile] = h2f(b[i].d);
  }
}

void unpack_q4_1(const uint8_t* row, int64_t cols, int8_t* q, float* sw, float* mw) {
  const auto* b = reinterpret_cast<const quant::BlockQ4_1*>(row);
  for (int64_t i = 0; i < cols / kQk0; ++i) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 32 * i), nibbles_32(b[i].qs));
    sw[i * kTile] = h2f(b[i].d);
    mw[i * kTile] = h2f(b[i].m);
  }
}

void unpack_q5_0(const uint8_t* row, int64_t cols, int8_t* q, float* sw, float*) {
  const auto* b = reinterpret_cast<const quant::BlockQ5_0*>(row);
  const __m256i sixteen = _mm256_set1_epi8(16);
  for (int64_t i = 0; i < cols / kQk0; ++i) {
    const __m256i v = _mm256_or_si256(nibbles_32(b[i].qs), fifth_bits(b[i].qh));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 32 * i), _mm256_sub_epi8(v, sixteen));
    sw[i * kTile] = h2f(b[i].d);
  }
}

void unpack_q5_1(const uint8_t* row, int64_t cols, int8_t* q, float* sw, float* mw) {
  const auto* b = reinterpret_cast<const quant::BlockQ5_1*>(row);
  for (int64_t i = 0; i < cols / kQk0; ++i) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 32 * i), _mm256_or_si256(nibbles_32(b[i].qs), fifth_bits(b[i].qh)));
    sw[i * kTile] = h2f(b[i].d);
    mw[i * kTile] = h2f(b[i].m);
  }
}

inline __m256i iq4_table() {
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(quant::kIq4nlValues));
  return _mm256_set_m128i(t, t);
}

void unpack_iq4_nl(const uint8_t* row, int64_t cols, int8_t* q, float* sw, float*) {
  const auto* b = reinterpret_cast<const quant::BlockIq4Nl*>(row);
  const __m256i table = iq4_table();
  for (int64_t i = 0; i < cols / kQk0; ++i) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 32 * i), _mm256_shuffle_epi8(table, nibbles_32(b[i].qs)));
    sw[i * kTile] = h2f(b[i].d);
  }
}

// Q4_K: 32-byte chunk c of qs holds sub-block 2c in its low nibbles and 2c + 1 in its high ones;
// value = d * sc * q - dmin * m.
void unpack_q4_k(const uint8_t* row, int64_t cols, int8_t* q, float* sw, float* mw) {
  const auto* b = reinterpret_cast<const quant::BlockQ4K*>(row);
  const __m256i mask = _mm256_set1_epi8(0x0f);
  for (int64_t i = 0; i < cols / kQkK; ++i, q += kQkK) {
    uint8_t sc[8], m[8];
    quant::internal::unpack_k_scales(b[i].scales, sc, m);
    const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
    for (int c = 0; c < 4; ++c) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs + 32 * c));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 64 * c), _mm256_and_si256(x, mask));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 64 * c + 32), _mm256_and_si256(_mm256_srli_epi16(x, 4), mask));
    }
    for (int j = 0; j < 8; ++j) {
      sw[(8 * i + j) * kTile] = d * sc[j];
      mw[(8 * i + j) * kTile] = -dmin * m[j];
    }
  }
}

// Q5_K: Q4_K plus bit 2c (2c + 1) of qh[l] on element l of sub-block 2c (2c + 1).
void unpack_q5_k(const uint8_t* row, int64_t cols, int8_t* q, float* sw, float* mw) {
  const auto* b = reinterpret_cast<const quant::BlockQ5K*>(row);
  const __m256i mask = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
  for (int64_t i = 0; i < cols / kQkK; ++i, q += kQkK) {
    uint8_t sc[8], m[8];
    quant::internal::unpack_k_scales(b[i].scales, sc, m);
    const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qh));
    for (int c = 0; c < 4; ++c) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs + 32 * c));
      // (qh >> s) & 1, as bytes: shift 16-bit lanes, mask to one bit per byte.
      const __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one);
      const __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 64 * c),
                          _mm256_or_si256(_mm256_and_si256(x, mask), _mm256_slli_epi16(h0, 4)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 64 * c + 32),
                          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(x, 4), mask), _mm256_slli_epi16(h1, 4)));
    }
    for (int j = 0; j < 8; ++j) {
      sw[(8 * i + j) * kTile] = d * sc[j];
      mw[(8 * i + j) * kTile] = -dmin * m[j];
    }
  }
}

// Q6_K, sub-blocks of 16: in each 128-element half, element 32k + l (k = 0..3) takes its low 4 bits
// from ql[l + 32 (k & 1)] (low nibble for k < 2, high for k >= 2) and its top 2 from bits 2k of
// qh[l]; value = d * scales[j] * (q - 32).
void unpack_q6_k(const uint8_t* row, int64_t cols, int8_t* q, float* sw, float*) {
  const auto* b = reinterpret_cast<const quant::BlockQ6K*>(row);
  const __m256i mask4 = _mm256_set1_epi8(0x0f), mask2 = _mm256_set1_epi8(0x30), bias = _mm256_set1_epi8(32);
  for (int64_t i = 0; i < cols / kQkK; ++i, q += kQkK) {
    const float d = h2f(b[i].d);
    for (int half = 0; half < 2; ++half) {
      const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].ql + 64 * half));
      const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].ql + 64 * half + 32));
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qh + 32 * half));
      const __m256i v[4] = {
          _mm256_or_si256(_mm256_and_si256(l0, mask4), _mm256_and_si256(_mm256_slli_epi16(h, 4), mask2)),
          _mm256_or_si256(_mm256_and_si256(l1, mask4), _mm256_and_si256(_mm256_slli_epi16(h, 2), mask2)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), mask4), _mm256_and_si256(h, mask2)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), mask4), _mm256_and_si256(_mm256_srli_epi16(h, 2), mask2)),
      };
      for (int k = 0; k < 4; ++k) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 128 * half + 32 * k), _mm256_sub_epi8(v[k], bias));
      }
    }
    for (int j = 0; j < 16; ++j) sw[(16 * i + j) * kTile] = d * b[i].scales[j];
  }
}

// IQ4_XS: sub-block j's 16 bytes hold element 32j + l in the low nibble and 32j + 16 + l in the
// high one; value = d * (ls_j - 32) * kIq4nlValues[q].
void unpack_iq4_xs(const uint8_t* row, int64_t cols, int8_t* q, float* sw, float*) {
  const auto* b = reinterpret_cast<const quant::BlockIq4Xs*>(row);
  const __m256i table = iq4_table();
  for (int64_t i = 0; i < cols / kQkK; ++i, q += kQkK) {
    const float d = h2f(b[i].d);
    for (int j = 0; j < 8; ++j) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 32 * j), _mm256_shuffle_epi8(table, nibbles_32(b[i].qs + 16 * j)));
      const int ls = ((b[i].scales_l[j / 2] >> (4 * (j % 2))) & 0x0f) | (((b[i].scales_h >> (2 * j)) & 3) << 4);
      sw[(8 * i + j) * kTile] = d * static_cast<float>(ls - 32);
    }
  }
}

// ---- activation rows (already quantized by the VNNI path's quantizers)

// Q8_0 (and Q8_1: same levels, plus s = fp16(d * sum q), the value sum the affine types' min needs).
template <bool kHasSum>
void act_q8_x(const uint8_t* row, int64_t cols, int /*sub = 32*/, int8_t* q, float* sa, float* asum) {
  constexpr size_t kBytes = kHasSum ? sizeof(quant::BlockQ8_1) : sizeof(quant::BlockQ8_0);
  for (int64_t i = 0; i < cols / kQk0; ++i) {
    const uint8_t* blk = row + i * kBytes;
    uint16_t d;
    std::memcpy(&d, blk, 2);
    std::memcpy(q + 32 * i, blk + (kHasSum ? 4 : 2), 32);
    sa[i * kTile] = h2f(d);
    if (kHasSum) {
      uint16_t s;
      std::memcpy(&s, blk + 2, 2);
      asum[i * kTile] = h2f(s);
    }
  }
}

// Q8_K: one float scale per 256 and the level sums of every 16; sub-blocks of 32 or 16.
void act_q8_k(const uint8_t* row, int64_t cols, int sub, int8_t* q, float* sa, float* asum) {
  const auto* b = reinterpret_cast<const quant::BlockQ8K*>(row);
  const int per = kQkK / sub;
  for (int64_t i = 0; i < cols / kQkK; ++i) {
    std::memcpy(q + kQkK * i, b[i].qs, kQkK);
    for (int j = 0; j < per; ++j) {
      const int64_t s = i * per + j;
      sa[s * kTile] = b[i].d;
      if (asum != nullptr) {
        const int g = j * sub / 16;  // first 16-group of the sub-block
        const int sum = sub == 32 ? b[i].bsums[g] + b[i].bsums[g + 1] : b[i].bsums[g];
        asum[s * kTile] = b[i].d * static_cast<float>(sum);
      }
    }
  }
}

struct TileType {
  int sub;          // columns per scale: 32 or 16
  bool has_min;
  UnpackFn unpack;
  ActFn act;
};

const TileType* tile_type(GgmlType t) {
  static constexpr TileType kQ8_0{32, false, unpack_q8_0, act_q8_x<false>};
  static constexpr TileType kQ4_0{32, false, unpack_q4_0, act_q8_x<false>};
  static constexpr TileType kQ4_1{32, true, unpack_q4_1, act_q8_x<true>};
  static constexpr TileType kQ5_0{32, false, unpack_q5_0, act_q8_x<false>};
  static constexpr TileType kQ5_1{32, true, unpack_q5_1, act_q8_x<true>};
  static constexpr TileType kIq4Nl{32, false, unpack_iq4_nl, act_q8_x<false>};
  static constexpr TileType kQ4K{32, true, unpack_q4_k, act_q8_k};
  static constexpr TileType kQ5K{32, true, unpack_q5_k, act_q8_k};
  static constexpr TileType kQ6K{16, false, unpack_q6_k, act_q8_k};
  static constexpr TileType kIq4Xs{32, false, unpack_iq4_xs, act_q8_k};
  switch (t) {
    case GgmlType::Q8_0: return &kQ8_0;
    case GgmlType::Q4_0: return &kQ4_0;
    case GgmlType::Q4_1: return &kQ4_1;
    case GgmlType::Q5_0: return &kQ5_0;
    case GgmlType::Q5_1: return &kQ5_1;
    case GgmlType::IQ4_NL: return &kIq4Nl;
    case GgmlType::Q4_K: return &kQ4K;
    case GgmlType::Q5_K: return &kQ5K;
    case GgmlType::Q6_K: return &kQ6K;
    case GgmlType::IQ4_XS: return &kIq4Xs;
    default: return nullptr;
  }
}

// ---- tiles

// LDTILECFG's 64-byte operand (palette 1).
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Tiles 0/3: C (16 x 16 int32); 1/4: A (16 weight rows x sub levels); 2/5: B (sub/4 rows x 16 tokens x 4).
void load_config(int sub) {
  TileConfig cfg;
  for (int c : {0, 3}) {
    cfg.rows[c] = kTile;
    cfg.colsb[c] = kTile * 4;
  }
  for (int a : {1, 4}) {
    cfg.rows[a] = kTile;
    cfg.colsb[a] = static_cast<uint16_t>(sub);
  }
  for (int b : {2, 5}) {
    cfg.rows[b] = static_cast<uint8_t>(sub / 4);
    cfg.colsb[b] = kTile * 4;
  }
  _tile_loadconfig(&cfg);
}

// The activations of one call, laid out per 16-token tile.
struct PackedActs {
  int64_t cols = 0, n_sub = 0, n_tiles = 0;
  int8_t* b = nullptr;  // [n_tiles][cols / 4][16][4]
  float* sa = nullptr;  // [n_tiles][n_sub][16]
  float* asum = nullptr;  // [n_tiles][n_sub][16] or null
  const int8_t* tile_b(int64_t tt) const { return b + tt * cols * kTile; }
  const float* tile_sa(int64_t tt) const { return sa + tt * n_sub * kTile; }
  const float* tile_asum(int64_t tt) const { return asum ? asum + tt * n_sub * kTile : nullptr; }
};

// Token tile tt of the activations into the B layout (missing tokens of the last tile are zeros).
void pack_tile(const TileType& tt_info, const uint8_t* act, size_t act_row_bytes, int64_t n_tokens, int64_t tt,
               const PackedActs& p, int8_t* row_q) {
  int8_t* b = p.b + tt * p.cols * kTile;
  float* sa = p.sa + tt * p.n_sub * kTile;
  float* asum = p.asum ? p.asum + tt * p.n_sub * kTile : nullptr;
  for (int n = 0; n < kTile; ++n) {
    const int64_t t = tt * kTile + n;
    if (t < n_tokens) {
      tt_info.act(act + t * act_row_bytes, p.cols, tt_info.sub, row_q, sa + n, asum ? asum + n : nullptr);
    } else {
      std::memset(row_q, 0, static_cast<size_t>(p.cols));
      for (int64_t s = 0; s < p.n_sub; ++s) {
        sa[s * kTile + n] = 0;
        if (asum) asum[s * kTile + n] = 0;
      }
    }
    // Dword k4 of this token goes to B[k4][n].
    const auto* src = reinterpret_cast<const uint32_t*>(row_q);
    auto* dst = reinterpret_cast<uint32_t*>(b) + n;
    for (int64_t k4 = 0; k4 < p.cols / 4; ++k4) dst[k4 * kTile] = src[k4];
  }
}

// acc[m] (lanes = tokens) += sw[m] * sa * C[m] (+ mw[m] * asum) for sub-block s.
inline void fold(const int32_t* c, const float* sa, const float* sw, const float* asum, const float* mw, __m512* acc) {
  const __m512 sav = _mm512_loadu_ps(sa);
#pragma GCC unroll 16
  for (int m = 0; m < kTile; ++m) {
    const __m512 prod = _mm512_cvtepi32_ps(_mm512_load_si512(c + m * kTile));
    acc[m] = _mm512_fmadd_ps(prod, _mm512_mul_ps(sav, _mm512_set1_ps(sw[m])), acc[m]);
  }
  if (asum != nullptr) {
    const __m512 asv = _mm512_loadu_ps(asum);
#pragma GCC unroll 16
    for (int m = 0; m < kTile; ++m) acc[m] = _mm512_fmadd_ps(asv, _mm512_set1_ps(mw[m]), acc[m]);
  }
}

// One strip (q: [16][cols] levels, sw/mw: [n_sub][16]) against token tile tt; writes the valid
// rows x tokens of out. While the tiles compute, the cache lines [pf, pf + pf_bytes) (a slice of
// the next strip's weights) are prefetched into L2, so its unpacking does not wait on DRAM.
void strip_x_tile(const int8_t* q, const float* sw, const float* mw, const PackedActs& p, int sub, int64_t tt,
                  int64_t n_tokens, int64_t r0, int64_t rows, float* out, const uint8_t* pf, int64_t pf_bytes) {
  __m512 acc[kTile];
  for (auto& a : acc) a = _mm512_setzero_ps();
  alignas(64) int32_t c0[kTile * kTile], c1[kTile * kTile];
  const int8_t* b = p.tile_b(tt);
  const float* sa = p.tile_sa(tt);
  const float* asum = p.tile_asum(tt);
  const int64_t cols = p.cols, n_sub = p.n_sub;
  const int64_t b_step = static_cast<int64_t>(sub) * kTile;  // bytes of B per sub-block
  // Cache lines to prefetch per pair of sub-blocks.
  const int64_t pf_step = (pf_bytes / 64 / std::max<int64_t>(1, n_sub / 2) + 1) * 64;
  const uint8_t* const pf_end = pf + pf_bytes;
  int64_t s = 0;
  for (; s + 2 <= n_sub; s += 2) {
    for (int64_t i = 0; i < pf_step && pf < pf_end; i += 64, pf += 64) _mm_prefetch(reinterpret_cast<const char*>(pf), _MM_HINT_T1);
    _tile_loadd(1, q + s * sub, cols);
    _tile_loadd(2, b + s * b_step, kTile * 4);
    _tile_zero(0);
    _tile_dpbssd(0, 1, 2);
    _tile_loadd(4, q + (s + 1) * sub, cols);
    _tile_loadd(5, b + (s + 1) * b_step, kTile * 4);
    _tile_zero(3);
    _tile_dpbssd(3, 4, 5);
    _tile_stored(0, c0, kTile * 4);
    fold(c0, sa + s * kTile, sw + s * kTile, asum ? asum + s * kTile : nullptr, mw ? mw + s * kTile : nullptr, acc);
    _tile_stored(3, c1, kTile * 4);
    fold(c1, sa + (s + 1) * kTile, sw + (s + 1) * kTile, asum ? asum + (s + 1) * kTile : nullptr,
         mw ? mw + (s + 1) * kTile : nullptr, acc);
  }
  if (s < n_sub) {
    _tile_loadd(1, q + s * sub, cols);
    _tile_loadd(2, b + s * b_step, kTile * 4);
    _tile_zero(0);
    _tile_dpbssd(0, 1, 2);
    _tile_stored(0, c0, kTile * 4);
    fold(c0, sa + s * kTile, sw + s * kTile, asum ? asum + s * kTile : nullptr, mw ? mw + s * kTile : nullptr, acc);
  }
  alignas(64) float res[kTile * kTile];
  for (int m = 0; m < kTile; ++m) _mm512_store_ps(res + m * kTile, acc[m]);
  const int64_t n_valid = std::min<int64_t>(kTile, n_tokens - tt * kTile);
  const int64_t m_valid = std::min<int64_t>(kTile, rows - r0);
  for (int64_t n = 0; n < n_valid; ++n) {
    float* o = out + (tt * kTile + n) * rows + r0;
    for (int64_t m = 0; m < m_valid; ++m) o[m] = res[m * kTile + n];
  }
}

}  // namespace

void matmul_tiles(const WeightView& w, const uint8_t* act, size_t act_row_bytes, int64_t n_tokens, float* out,
                  ThreadPool* pool) {
  const TileType* info = tile_type(w.type);
  FLEA_CHECK(info != nullptr, std::string("no tile kernel for ") + type_info(w.type).name);
  const int64_t cols = w.cols, rows = w.rows;
  FLEA_CHECK(cols % info->sub == 0, "tile matmul: cols not a multiple of the sub-block");
  const size_t w_row_bytes = row_bytes(type_info(w.type), cols);

  PackedActs p;
  p.cols = cols;
  p.n_sub = cols / info->sub;
  p.n_tiles = (n_tokens + kTile - 1) / kTile;
  // Per calling thread; the lambdas below use the pointers in p, not the thread_local names.
  thread_local std::vector<int8_t> b_buf;
  thread_local std::vector<float> s_buf;
  b_buf.resize(static_cast<size_t>(p.n_tiles * cols * kTile));
  s_buf.resize(static_cast<size_t>(p.n_tiles * p.n_sub * kTile * (info->has_min ? 2 : 1)));
  p.b = b_buf.data();
  p.sa = s_buf.data();
  p.asum = info->has_min ? s_buf.data() + p.n_tiles * p.n_sub * kTile : nullptr;

  auto pack_tiles = [&](int64_t t0, int64_t t1) {
    thread_local std::vector<int8_t> row_q;
    row_q.resize(static_cast<size_t>(cols));
    for (int64_t tt = t0; tt < t1; ++tt) pack_tile(*info, act, act_row_bytes, n_tokens, tt, p, row_q.data());
  };
  if (pool != nullptr && p.n_tiles > 1) {
    pool->parallel_for(p.n_tiles, pack_tiles);
  } else {
    pack_tiles(0, p.n_tiles);
  }

  const int64_t n_strips = (rows + kTile - 1) / kTile;
  auto run_strips = [&](int64_t s0, int64_t s1) {
    thread_local std::vector<int8_t> q;
    thread_local std::vector<float> scales;
    q.resize(static_cast<size_t>(kTile * cols));
    scales.resize(static_cast<size_t>(p.n_sub * kTile * 2));
    float* sw = scales.data();
    float* mw = info->has_min ? scales.data() + p.n_sub * kTile : nullptr;
    load_config(info->sub);
    for (int64_t strip = s0; strip < s1; ++strip) {
      const int64_t r0 = strip * kTile;
      for (int m = 0; m < kTile; ++m) {
        if (r0 + m < rows) {
          info->unpack(w.data + (r0 + m) * w_row_bytes, cols, q.data() + m * cols, sw + m, mw ? mw + m : nullptr);
        } else {  // past the last row: zero levels and scales
          std::memset(q.data() + m * cols, 0, static_cast<size_t>(cols));
          for (int64_t s = 0; s < p.n_sub; ++s) {
            sw[s * kTile + m] = 0;
            if (mw) mw[s * kTile + m] = 0;
          }
        }
      }
      // The next strip's rows (contiguous), a slice per token tile.
      const int64_t next_rows = std::clamp<int64_t>(rows - r0 - kTile, 0, kTile);
      const uint8_t* next = w.data + (r0 + kTile) * w_row_bytes;
      const int64_t next_bytes = next_rows * static_cast<int64_t>(w_row_bytes);
      const int64_t slice = (next_bytes + p.n_tiles - 1) / p.n_tiles;
      for (int64_t tt = 0; tt < p.n_tiles; ++tt) {
        const int64_t off = std::min(next_bytes, tt * slice);
        strip_x_tile(q.data(), sw, mw, p, info->sub, tt, n_tokens, r0, rows, out, next + off,
                     std::min(slice, next_bytes - off));
      }
    }
    _tile_release();
  };
  if (pool != nullptr) {
    pool->parallel_for(n_strips, run_strips);
  } else {
    run_strips(0, n_strips);
  }
}

}  // namespace flea::cpu::amx::internal
