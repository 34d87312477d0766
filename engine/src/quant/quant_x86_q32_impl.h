// x86 dot kernels of the 32-element formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and IQ4_NL (against Q8_0
// activations, Q8_1 for Q4_1 / Q5_1) and the Q8_1 activation quantizer, included by
// quant_avx2.cpp and quant_avx512.cpp right after quant_x86_impl.h (whose helpers dot_u8s8,
// hsum_ps, token_rows and the activation helpers it uses) under the same ISA namespace.
//
// One kernel template serves all types and both the 1-token and the 4-token form. The bulk of a
// row goes through block groups (16 blocks on 512-bit registers with FLEA_QUANT_VNNI, 8 on 256-bit
// ones otherwise): exact integer block sums land in the lanes of one register and the fp16 block
// headers are converted a group at a time, so the scale work and the FMA are paid once per group
// rather than once per block. The remaining blocks (fewer than a group) take the per-block path:
// a type supplies its 32 weight levels per block as bytes, either signed (dotted with the
// |w| * sign(a, w) trick) or unsigned with a per-block min (Q4_1, Q5_1 against Q8_1: u8 x s8 dot
// plus the min term m * s). Each token's float ops are the same whatever the token count, so the
// 4-token form is bit-identical to the 1-token one.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quant/quant.h"

namespace flea::quant::FLEA_QUANT_ISA_NS {
namespace q32 {

// 16 packed bytes -> 32 nibbles in element order (low nibbles = elements 0-15).
inline __m256i nibbles(const uint8_t* qs) {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0f));
}

inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

#ifndef FLEA_QUANT_VNNI
// Byte j = 0xff where bit j of the 32-bit word qh is set: each byte picks its qh byte (j / 8)
// with pshufb, keeps bit j % 8, and compares.
inline __m256i fifth_bit_bytes(uint32_t qh) {
  const __m256i select = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                          2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
  const __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int32_t>(qh)), select);
  return _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
}
#endif

// levels 0..31 (Q5_1).
inline __m256i q5_unsigned(const uint8_t* qs, const uint8_t* qh) {
  const __m256i low = nibbles(qs);
#ifdef FLEA_QUANT_VNNI
  return _mm256_mask_add_epi8(low, _cvtu32_mask32(load_u32(qh)), low, _mm256_set1_epi8(16));
#else
  return _mm256_or_si256(low, _mm256_and_si256(fifth_bit_bytes(load_u32(qh)), _mm256_set1_epi8(16)));
#endif
}

// levels - 16 in -16..15 (Q5_0): an unset fifth bit means low - 16, i.e. low | 0xf0 as int8.
inline __m256i q5_signed(const uint8_t* qs, const uint8_t* qh) {
  const __m256i low = nibbles(qs);
#ifdef FLEA_QUANT_VNNI
  return _mm256_mask_sub_epi8(low, _cvtu32_mask32(~load_u32(qh)), low, _mm256_set1_epi8(16));
#else
  return _mm256_or_si256(low, _mm256_andnot_si256(fifth_bit_bytes(load_u32(qh)), _mm256_set1_epi8(static_cast<char>(0xf0))));
#endif
}

// Per-type weight decoding. kHasMin: levels are unsigned, the block has a min m (value =
// d * q + m) and the activations are Q8_1; otherwise levels are signed (value = d * q) against Q8_0.
struct Q4_1W {
  using Block = BlockQ4_1;
  using Act = BlockQ8_1;
  static constexpr bool kHasMin = true;
  static __m256i levels(const Block& b, __m256i) { return nibbles(b.qs); }
};
struct Q5_1W {
  using Block = BlockQ5_1;
  using Act = BlockQ8_1;
  static constexpr bool kHasMin = true;
  static __m256i levels(const Block& b, __m256i) { return q5_unsigned(b.qs, b.qh); }
};
struct Q5_0W {
  using Block = BlockQ5_0;
  using Act = BlockQ8_0;
  static constexpr bool kHasMin = false;
  static __m256i levels(const Block& b, __m256i) { return q5_signed(b.qs, b.qh); }
};
// The 16 levels sit in both 128-bit lanes of `table`, so pshufb maps each nibble to its value.
struct Iq4NlW {
  using Block = BlockIq4Nl;
  using Act = BlockQ8_0;
  static constexpr bool kHasMin = false;
  static __m256i levels(const Block& b, __m256i table) { return _mm256_shuffle_epi8(table, nibbles(b.qs)); }
};

// Q4_0 / Q8_0 also go through this template (dot_*_grouped below; quant_x86_impl.h keeps the
// older per-block kernels).
struct Q4_0W {
  using Block = BlockQ4_0;
  using Act = BlockQ8_0;
  static constexpr bool kHasMin = false;
  static __m256i levels(const Block& b, __m256i) { return _mm256_sub_epi8(nibbles(b.qs), _mm256_set1_epi8(8)); }
};
struct Q8_0W {
  using Block = BlockQ8_0;
  using Act = BlockQ8_0;
  static constexpr bool kHasMin = false;
  static __m256i levels(const Block& b, __m256i) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs)); }
};

#ifdef FLEA_QUANT_VNNI
// ---------------------------------------------------------------- 16-block groups (AVX-512)
// The per-block float work (two fp16 scales converted, int -> float, one FMA, a broadcast) cost
// more than the integer dot itself. Here 16 blocks share it: blocks j and j + 4 (j = 0..3, then
// 8..11) share one 512-bit register, vpdpbusd gives 8 int32 partials per block, a
// transpose-and-add tree leaves the 16 exact block sums in the 16 lanes of one register, and one
// gather per operand fetches the 16 block headers. cvtph turns a header dword into two lanes:
// (d, m) of a weight block times (d_a, s) of a Q8_1 block gives d * d_a in the even lane and the
// min term m * s in the odd one, so one FMA per 8 blocks adds both (odd lanes of the block-sum
// factor are 1). The signed types (Q5_0, IQ4_NL) use unsigned levels q + kBias and subtract
// kBias * sum(a) per block (one more vpdpbusd); their odd header lanes are other bytes of the
// block and stay masked off.
namespace wide {

constexpr int kGroup = 16;
// Weight rows stream from DRAM at 1 token; the profile showed the group's first loads stalling,
// so each group prefetches the weights 4 groups (1.2-1.4 KB for the 4/5-bit types) ahead.
constexpr int kPrefetchGroups = 4;

// 16 bytes of nibbles of two blocks -> 64 levels: [lo elements 0-15, 16-31, hi 0-15, 16-31].
inline __m512i nibbles_pair(const uint8_t* lo, const uint8_t* hi) {
  __m512i z = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(lo)));
  z = _mm512_mask_broadcast_i32x4(z, 0xff00, _mm_loadu_si128(reinterpret_cast<const __m128i*>(hi)));
  z = _mm512_mask_srli_epi16(z, 0xff00ff00u, z, 4);  // the second copy of each block: high nibbles
  return _mm512_and_si512(z, _mm512_set1_epi8(0x0f));
}

// The same layout with the high nibbles left in place (16 x their value): saves the shift for the
// 4-bit types, whose high-nibble partial sums are divided by 16 (exactly) in block_sums.
inline __m512i nibbles_pair_x16(const uint8_t* lo, const uint8_t* hi) {
  __m512i z = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(lo)));
  z = _mm512_mask_broadcast_i32x4(z, 0xff00, _mm_loadu_si128(reinterpret_cast<const __m128i*>(hi)));
  const __m512i lo_hi = _mm512_setr_epi32(0x0f0f0f0f, 0x0f0f0f0f, 0x0f0f0f0f, 0x0f0f0f0f, -0x0f0f0f10, -0x0f0f0f10,
                                          -0x0f0f0f10, -0x0f0f0f10, 0x0f0f0f0f, 0x0f0f0f0f, 0x0f0f0f0f, 0x0f0f0f0f,
                                          -0x0f0f0f10, -0x0f0f0f10, -0x0f0f0f10, -0x0f0f0f10);  // 0xf0f0f0f0
  return _mm512_and_si512(z, lo_hi);
}

// Fifth bits of two blocks as a byte mask in the nibbles_pair layout.
inline __mmask64 fifth_bits_pair(const uint8_t* lo, const uint8_t* hi) {
  return _cvtu64_mask64(static_cast<uint64_t>(load_u32(lo)) | (static_cast<uint64_t>(load_u32(hi)) << 32));
}

template <typename W>
struct Traits;
// kBias: levels are q + kBias; kHighX16: the second and fourth 128-bit chunks (the high nibbles)
// hold 16 x the level (and 16 x the bias).
template <>
struct Traits<Q4_1W> {
  static constexpr int kBias = 0;
  static constexpr bool kHighX16 = true;
  static __m512i levels(const BlockQ4_1& lo, const BlockQ4_1& hi, __m512i) { return nibbles_pair_x16(lo.qs, hi.qs); }
};
template <>
struct Traits<Q5_1W> {
  static constexpr int kBias = 0;
  static constexpr bool kHighX16 = false;
  static __m512i levels(const BlockQ5_1& lo, const BlockQ5_1& hi, __m512i) {
    const __m512i low = nibbles_pair(lo.qs, hi.qs);
    return _mm512_mask_add_epi8(low, fifth_bits_pair(lo.qh, hi.qh), low, _mm512_set1_epi8(16));
  }
};
template <>
struct Traits<Q5_0W> {  // q + 16 = low + 16 * fifth bit
  static constexpr int kBias = 16;
  static constexpr bool kHighX16 = false;
  static __m512i levels(const BlockQ5_0& lo, const BlockQ5_0& hi, __m512i) {
    const __m512i low = nibbles_pair(lo.qs, hi.qs);
    return _mm512_mask_add_epi8(low, fifth_bits_pair(lo.qh, hi.qh), low, _mm512_set1_epi8(16));
  }
};
template <>
struct Traits<Iq4NlW> {  // table holds kIq4nlValues + 128 as bytes
  static constexpr int kBias = 128;
  static constexpr bool kHighX16 = false;
  static __m512i levels(const BlockIq4Nl& lo, const BlockIq4Nl& hi, __m512i table) {
    return _mm512_shuffle_epi8(table, nibbles_pair(lo.qs, hi.qs));
  }
};

template <>
struct Traits<Q4_0W> {
  static constexpr int kBias = 8;
  static constexpr bool kHighX16 = true;
  static __m512i levels(const BlockQ4_0& lo, const BlockQ4_0& hi, __m512i) { return nibbles_pair_x16(lo.qs, hi.qs); }
};
template <>
struct Traits<Q8_0W> {  // q + 128 = q with the sign bit flipped
  static constexpr int kBias = 128;
  static constexpr bool kHighX16 = false;
  static __m512i levels(const BlockQ8_0& lo, const BlockQ8_0& hi, __m512i) {
    const __m512i q = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(lo.qs))),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(hi.qs)), 1);
    return _mm512_xor_si512(q, _mm512_set1_epi8(-128));
  }
};

// 8 registers of 16 int32 partials (register j: lanes 0-7 block lo(j), 8-15 block hi(j)) -> the
// 16 block sums in block order, given lo(j) = j, hi(j) = j + 4 for j < 4 and 8 + .. for j >= 4.
// kHighX16: the second and fourth chunks sum to 16 x their share.
template <bool kHighX16>
inline __m512i block_sums(const __m512i* z) {
  auto pair32 = [](__m512i a, __m512i b) {
    return _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
  };
  auto pair64 = [](__m512i a, __m512i b) {
    return _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
  };
  // u0: in each 128-bit chunk c, the chunk-c sums of z0..z3; u1 the same for z4..z7.
  const __m512i u0 = pair64(pair32(z[0], z[1]), pair32(z[2], z[3]));
  const __m512i u1 = pair64(pair32(z[4], z[5]), pair32(z[6], z[7]));
  // Chunks 0 + 1 are the lo blocks, 2 + 3 the hi blocks.
  const __m512i high = _mm512_shuffle_i32x4(u0, u1, _MM_SHUFFLE(3, 1, 3, 1));
  return _mm512_add_epi32(_mm512_shuffle_i32x4(u0, u1, _MM_SHUFFLE(2, 0, 2, 0)),
                          kHighX16 ? _mm512_srai_epi32(high, 4) : high);
}

// Blocks [0, 16 * ng) of the row; sum[t] = their dot with token t.
template <typename W, int kT>
inline void dot_groups(int64_t ng, const typename W::Block* x, const typename W::Act* const* y, float* sum) {
  using Tr = Traits<W>;
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i w_off = _mm512_mullo_epi32(iota, _mm512_set1_epi32(static_cast<int>(sizeof(typename W::Block))));
  const __m512i a_off = _mm512_mullo_epi32(iota, _mm512_set1_epi32(static_cast<int>(sizeof(typename W::Act))));
  const __m512i spread_lo = _mm512_srli_epi32(iota, 1), spread_hi = _mm512_add_epi32(spread_lo, _mm512_set1_epi32(8));
  const __m512i table = _mm512_xor_si512(
      _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4nlValues))), _mm512_set1_epi8(-128));
  constexpr int kBiasHigh = Tr::kHighX16 ? 16 * Tr::kBias : Tr::kBias;  // in the high-nibble chunks
  static_assert(kBiasHigh < 256, "the bias is an unsigned byte");
  const __m512i bias = _mm512_mask_blend_epi32(0xf0f0, _mm512_set1_epi8(static_cast<char>(Tr::kBias)),
                                               _mm512_set1_epi8(static_cast<char>(kBiasHigh)));
  const __m512 ones = _mm512_set1_ps(1.0f);
  constexpr __mmask16 kEven = 0x5555;
  __m512 acc0[kT], acc1[kT];
  for (int t = 0; t < kT; ++t) acc0[t] = acc1[t] = _mm512_setzero_ps();
  for (int64_t g = 0; g < ng; ++g) {
    const typename W::Block* xb = x + kGroup * g;
    {
      const char* pf = reinterpret_cast<const char*>(xb + kGroup * kPrefetchGroups);
      for (size_t k = 0; k < kGroup * sizeof(typename W::Block); k += 64) _mm_prefetch(pf + k, _MM_HINT_T0);
    }
    __m512i wq[8];
    for (int j = 0; j < 4; ++j) {
      wq[j] = Tr::levels(xb[j], xb[j + 4], table);
      wq[4 + j] = Tr::levels(xb[8 + j], xb[12 + j], table);
    }
    const __m512i wh = _mm512_i32gather_epi32(w_off, xb, 1);
    const __m512 wf_lo = _mm512_cvtph_ps(_mm512_castsi512_si256(wh));
    const __m512 wf_hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(wh, 1));
    for (int t = 0; t < kT; ++t) {
      const typename W::Act* yb = y[t] + kGroup * g;
      __m512i z[8];
      for (int j = 0; j < 8; ++j) {
        const int lo = j < 4 ? j : j + 4;
        const __m512i a = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(yb[lo].qs))),
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(yb[lo + 4].qs)), 1);
        z[j] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq[j], a);
        if constexpr (Tr::kBias != 0) z[j] = _mm512_sub_epi32(z[j], _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, a));
      }
      const __m512 s = _mm512_cvtepi32_ps(block_sums<Tr::kHighX16>(z));
      const __m512i ah = _mm512_i32gather_epi32(a_off, yb, 1);
      const __m512 af_lo = _mm512_cvtph_ps(_mm512_castsi512_si256(ah));
      const __m512 af_hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(ah, 1));
      if constexpr (W::kHasMin) {
        acc0[t] = _mm512_fmadd_ps(_mm512_mul_ps(wf_lo, af_lo), _mm512_mask_permutexvar_ps(ones, kEven, spread_lo, s), acc0[t]);
        acc1[t] = _mm512_fmadd_ps(_mm512_mul_ps(wf_hi, af_hi), _mm512_mask_permutexvar_ps(ones, kEven, spread_hi, s), acc1[t]);
      } else {
        acc0[t] = _mm512_mask3_fmadd_ps(_mm512_maskz_mul_ps(kEven, wf_lo, af_lo), _mm512_permutexvar_ps(spread_lo, s),
                                        acc0[t], kEven);
        acc1[t] = _mm512_mask3_fmadd_ps(_mm512_maskz_mul_ps(kEven, wf_hi, af_hi), _mm512_permutexvar_ps(spread_hi, s),
                                        acc1[t], kEven);
      }
    }
  }
  for (int t = 0; t < kT; ++t) sum[t] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[t], acc1[t]));
}

}  // namespace wide
#endif

#ifndef FLEA_QUANT_VNNI
// ---------------------------------------------------------------- 8-block groups (AVX2)
// The AVX2 form of the group idea above: one block per 256-bit register (the 16-bit
// intermediate of maddubs keeps the signed types on the |w| * sign(a, w) trick), a hadd tree
// leaves the 8 exact block sums in the lanes of one register, and the 8 block headers are
// assembled with scalar loads (gathers are slow on several AVX2 cores). The header lanes and the
// one FMA per 4 blocks work as in the AVX-512 groups; the signed types clear the odd lanes.
namespace group8 {

constexpr int kGroup = 8;

// 8 registers of 8 int32 partials (one block each) -> the 8 block sums in block order.
inline __m256i block_sums(const __m256i* p) {
  // h0: [lane-0..3 sums of blocks 0-3 | lane-4..7 sums of blocks 0-3]; h1 the same for 4-7.
  const __m256i h0 = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
  const __m256i h1 = _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
  return _mm256_add_epi32(_mm256_permute2x128_si256(h0, h1, 0x20), _mm256_permute2x128_si256(h0, h1, 0x31));
}

// The first 4 bytes (the fp16 header) of 8 consecutive blocks as 8 dwords.
template <typename Block>
inline __m256i headers(const Block* b) {
  auto at = [&](int k) { return _mm_cvtsi32_si128(static_cast<int>(load_u32(reinterpret_cast<const uint8_t*>(b + k)))); };
  const __m128i lo = _mm_unpacklo_epi64(_mm_unpacklo_epi32(at(0), at(1)), _mm_unpacklo_epi32(at(2), at(3)));
  const __m128i hi = _mm_unpacklo_epi64(_mm_unpacklo_epi32(at(4), at(5)), _mm_unpacklo_epi32(at(6), at(7)));
  return _mm256_set_m128i(hi, lo);
}

// Blocks [0, 8 * ng) of the row; sum[t] = their dot with token t.
template <typename W, int kT>
inline void dot_groups(int64_t ng, const typename W::Block* x, const typename W::Act* const* y, float* sum) {
  const __m256i table =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4nlValues)));
  const __m256i spread_lo = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
  const __m256i spread_hi = _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7);
  // Signed types: only the fp16 scale of each header dword is wanted; the rest becomes +0.
  const __m256i keep = W::kHasMin ? _mm256_set1_epi32(-1) : _mm256_set1_epi32(0xffff);
  __m256 acc0[kT], acc1[kT];
  for (int t = 0; t < kT; ++t) acc0[t] = acc1[t] = _mm256_setzero_ps();
  for (int64_t g = 0; g < ng; ++g) {
    const typename W::Block* xb = x + kGroup * g;
    __m256i wq[kGroup];
    for (int j = 0; j < kGroup; ++j) wq[j] = W::levels(xb[j], table);
    const __m256i wh = _mm256_and_si256(headers(xb), keep);
    const __m256 wf_lo = _mm256_cvtph_ps(_mm256_castsi256_si128(wh));
    const __m256 wf_hi = _mm256_cvtph_ps(_mm256_extracti128_si256(wh, 1));
    for (int t = 0; t < kT; ++t) {
      const typename W::Act* yb = y[t] + kGroup * g;
      __m256i p[kGroup];
      for (int j = 0; j < kGroup; ++j) {
        const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(yb[j].qs));
        if constexpr (W::kHasMin) {
          p[j] = dot_u8s8(wq[j], a);
        } else {
          p[j] = dot_u8s8(_mm256_abs_epi8(wq[j]), _mm256_sign_epi8(a, wq[j]));
        }
      }
      const __m256 s = _mm256_cvtepi32_ps(block_sums(p));
      const __m256i ah = _mm256_and_si256(headers(yb), keep);
      __m256 s_lo = _mm256_permutevar8x32_ps(s, spread_lo), s_hi = _mm256_permutevar8x32_ps(s, spread_hi);
      if constexpr (W::kHasMin) {  // odd lanes carry m * s: factor 1
        s_lo = _mm256_blend_ps(s_lo, _mm256_set1_ps(1.0f), 0xaa);
        s_hi = _mm256_blend_ps(s_hi, _mm256_set1_ps(1.0f), 0xaa);
      }
      acc0[t] = _mm256_fmadd_ps(_mm256_mul_ps(wf_lo, _mm256_cvtph_ps(_mm256_castsi256_si128(ah))), s_lo, acc0[t]);
      acc1[t] = _mm256_fmadd_ps(_mm256_mul_ps(wf_hi, _mm256_cvtph_ps(_mm256_extracti128_si256(ah, 1))), s_hi, acc1[t]);
    }
  }
  for (int t = 0; t < kT; ++t) sum[t] = hsum_ps(_mm256_add_ps(acc0[t], acc1[t]));
}

}  // namespace group8
#endif

// Weight row `w` (n elements) against kT activation rows y[0..kT-1]; out[t] = dot.
template <typename W, int kT>
inline void dot_rows(int64_t n, const void* w, const typename W::Act* const* y, float* out) {
  const auto* x = static_cast<const typename W::Block*>(w);
  const int64_t nb = n / kQk0;
  const __m256i table =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4nlValues)));
  __m256 acc[2][kT];
  __m128 acc_min[kT];  // lane 1: sum of m * s (Q4_1 / Q5_1)
  for (int t = 0; t < kT; ++t) {
    acc[0][t] = acc[1][t] = _mm256_setzero_ps();
    acc_min[t] = _mm_setzero_ps();
  }
  // Q4_1 / Q5_1 tail blocks: block i into acc[0], in block order. Their d term and min term
  // nearly cancel when the activations have a common offset, so the float summation order shows
  // in the logits: the groups' order moves the reference models' NMSE vs llama.cpp from ~1e-14 to
  // up to ~1e-5, well inside the 2e-3 bound (llama.cpp itself is ~1.5e-4 from exact math). The
  // four fp16 scalars (d, m | d_a, s) convert in one instruction.
  auto min_step = [&](int64_t i) {
    if constexpr (W::kHasMin) {
      const __m256i q = W::levels(x[i], table);
      const uint32_t w_hdr = load_u32(reinterpret_cast<const uint8_t*>(&x[i]));
      for (int t = 0; t < kT; ++t) {
        const __m128 f = _mm_cvtph_ps(_mm_insert_epi32(_mm_cvtsi32_si128(static_cast<int>(w_hdr)),
                                                       static_cast<int>(load_u32(reinterpret_cast<const uint8_t*>(&y[t][i]))), 1));
        const __m128 g = _mm_movehl_ps(f, f);         // d_a, s, d_a, s
        acc_min[t] = _mm_fmadd_ps(f, g, acc_min[t]);   // lane 1: += m * s
        const __m256 dd = _mm256_broadcastss_ps(_mm_mul_ps(f, g));  // lane 0: d * d_a
        const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[t][i].qs));
        acc[0][t] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(dot_u8s8(q, a)), acc[0][t]);
      }
    }
  };
  // Signed types: block i into acc[k], dd[t] = d * d_a of token t broadcast.
  auto signed_step = [&](int64_t i, int k, const __m256* dd) {
    const __m256i q = W::levels(x[i], table);
    const __m256i aq = _mm256_abs_epi8(q);
    for (int t = 0; t < kT; ++t) {
      const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[t][i].qs));
      const __m256 p = _mm256_cvtepi32_ps(dot_u8s8(aq, _mm256_sign_epi8(a, q)));
      acc[k][t] = _mm256_fmadd_ps(dd[t], p, acc[k][t]);
    }
  };
  int64_t i = 0;
  float wide_sum[kT] = {};
#ifdef FLEA_QUANT_VNNI
  namespace grp = wide;
#else
  namespace grp = group8;
#endif
  i = nb / grp::kGroup * grp::kGroup;
  if (i > 0) grp::dot_groups<W, kT>(i / grp::kGroup, x, y, wide_sum);
  if constexpr (W::kHasMin) {
    for (; i < nb; ++i) min_step(i);
  } else {
    for (; i + 1 < nb; i += 2) {
      // One conversion for both blocks' scales: [d_i, d_a,i, d_i+1, d_a,i+1] -> products in
      // lanes 0 and 2.
      __m256 dd0[kT], dd1[kT];
      for (int t = 0; t < kT; ++t) {
        __m128i h = _mm_cvtsi32_si128(x[i].d);
        h = _mm_insert_epi16(h, y[t][i].d, 1);
        h = _mm_insert_epi16(h, x[i + 1].d, 2);
        h = _mm_insert_epi16(h, y[t][i + 1].d, 3);
        const __m128 f = _mm_cvtph_ps(h);
        const __m128 prod = _mm_mul_ps(f, _mm_movehdup_ps(f));
        dd0[t] = _mm256_broadcastss_ps(prod);
        dd1[t] = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(prod), _mm256_set1_epi32(2));
      }
      signed_step(i, 0, dd0);
      signed_step(i + 1, 1, dd1);
    }
    if (i < nb) {
      __m256 dd[kT];
      for (int t = 0; t < kT; ++t) {
        const __m128 f = _mm_cvtph_ps(_mm_insert_epi16(_mm_cvtsi32_si128(x[i].d), y[t][i].d, 1));
        dd[t] = _mm256_broadcastss_ps(_mm_mul_ps(f, _mm_movehdup_ps(f)));
      }
      signed_step(i, 0, dd);
    }
  }
  for (int t = 0; t < kT; ++t) {
    out[t] = hsum_ps(_mm256_add_ps(acc[0][t], acc[1][t])) + wide_sum[t];
    if constexpr (W::kHasMin) out[t] += _mm_cvtss_f32(_mm_movehdup_ps(acc_min[t]));
  }
}

template <typename W>
float dot_one(int64_t n, const void* w, const void* a) {
  const typename W::Act* y[1] = {static_cast<const typename W::Act*>(a)};
  float out;
  dot_rows<W, 1>(n, w, y, &out);
  return out;
}

template <typename W>
void dot_four(int64_t n, const void* w, const void* a, size_t stride, float* out) {
  const typename W::Act* y[kTok];
  token_rows(a, stride, y);
  dot_rows<W, kTok>(n, w, y, out);
}

}  // namespace q32

float dot_q4_1_q8_1(int64_t n, const void* w, const void* a) { return q32::dot_one<q32::Q4_1W>(n, w, a); }
float dot_q5_0_q8_0(int64_t n, const void* w, const void* a) { return q32::dot_one<q32::Q5_0W>(n, w, a); }
float dot_q5_1_q8_1(int64_t n, const void* w, const void* a) { return q32::dot_one<q32::Q5_1W>(n, w, a); }
float dot_iq4_nl_q8_0(int64_t n, const void* w, const void* a) { return q32::dot_one<q32::Iq4NlW>(n, w, a); }

void dot_q4_1_q8_1_x4(int64_t n, const void* w, const void* a, size_t stride, float* out) {
  q32::dot_four<q32::Q4_1W>(n, w, a, stride, out);
}
void dot_q5_0_q8_0_x4(int64_t n, const void* w, const void* a, size_t stride, float* out) {
  q32::dot_four<q32::Q5_0W>(n, w, a, stride, out);
}
void dot_q5_1_q8_1_x4(int64_t n, const void* w, const void* a, size_t stride, float* out) {
  q32::dot_four<q32::Q5_1W>(n, w, a, stride, out);
}
void dot_iq4_nl_q8_0_x4(int64_t n, const void* w, const void* a, size_t stride, float* out) {
  q32::dot_four<q32::Iq4NlW>(n, w, a, stride, out);
}

float dot_q4_0_q8_0_grouped(int64_t n, const void* w, const void* a) { return q32::dot_one<q32::Q4_0W>(n, w, a); }
float dot_q8_0_q8_0_grouped(int64_t n, const void* w, const void* a) { return q32::dot_one<q32::Q8_0W>(n, w, a); }
void dot_q4_0_q8_0_grouped_x4(int64_t n, const void* w, const void* a, size_t stride, float* out) {
  q32::dot_four<q32::Q4_0W>(n, w, a, stride, out);
}
void dot_q8_0_q8_0_grouped_x4(int64_t n, const void* w, const void* a, size_t stride, float* out) {
  q32::dot_four<q32::Q8_0W>(n, w, a, stride, out);
}

// Bit-identical to quantize_activation_q8_1 in quant_q32.cpp: the Q8_0 activation rule of
// quantize_act_q8_0 (same amax, same rounding) plus s from the exact integer sum of the levels.
void quantize_act_q8_1(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ8_1*>(dst);
  for (int64_t i = 0; i < n / kQk0; ++i, x += kQk0) {
    __m256i q;
    const float d = quantize_block_q8(x, &b[i].d, b[i].qs, &q);
    const __m256i sums = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q), _mm256_set1_epi16(1));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
    s4 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 1));
    b[i].s = fp32_to_fp16(d * static_cast<float>(_mm_cvtsi128_si32(s4)));
  }
}

}  // namespace flea::quant::FLEA_QUANT_ISA_NS
