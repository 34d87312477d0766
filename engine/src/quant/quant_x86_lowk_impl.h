// x86 dot kernels of Q2_K, Q3_K and IQ4_XS against Q8_K, shared by quant_avx2.cpp and
// quant_avx512.cpp (included after quant_x86_impl.h, whose helpers they use; FLEA_QUANT_VNNI
// turns madd_acc into vpdpwssd). Levels are unpacked to bytes with shifts and masks (IQ4_XS through
// a pshufb table), multiplied with the activations by vpmaddubsw (every pair sum fits int16) and
// scaled per 16/32 elements by an int16 multiply-add; Q2_K's mins and Q3_K's -4 offset go through
// the activation block sums. Each kernel is written once for NT activation rows, so the 4-token
// form does per token exactly what the 1-token form does and their results are bit-identical.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quant/quant.h"
#include "quant/quant_x86_impl.h"

namespace flea::quant::FLEA_QUANT_ISA_NS {
namespace lowk {

// pshufb masks over a vector holding 8 int16 scales in each 128-bit lane: mask k (0..3) gives
// lanes 0-7 = scale 2k, lanes 8-15 = scale 2k + 1, matching a vpmaddubsw result over 32 bytes
// whose halves belong to consecutive 16-element sub-blocks.
inline __m256i scale_pair_mask(int k) {
  const char a = static_cast<char>(4 * k), b = static_cast<char>(4 * k + 1);
  const char c = static_cast<char>(4 * k + 2), d = static_cast<char>(4 * k + 3);
  return _mm256_setr_epi8(a, b, a, b, a, b, a, b, a, b, a, b, a, b, a, b,
                          c, d, c, d, c, d, c, d, c, d, c, d, c, d, c, d);
}

// 16 int16 scales (one per 16-element sub-block) -> two vectors with scales 0-7 resp. 8-15 in both
// 128-bit lanes, ready for scale_pair_mask.
inline void split_scales(__m256i sc16, __m256i* lo, __m256i* hi) {
  *lo = _mm256_permute2x128_si256(sc16, sc16, 0x00);
  *hi = _mm256_permute2x128_si256(sc16, sc16, 0x11);
}

inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }


// ---------------------------------------------------------------- Q2_K

template <int NT>
void q2_k_rows(int64_t n, const void* w, const BlockQ8K* const* y, float* out) {
  const auto* x = static_cast<const BlockQ2K*>(w);
  const __m256i m3 = _mm256_set1_epi8(3);
  const __m128i m4 = _mm_set1_epi8(0x0f);
  const __m256i pm[4] = {scale_pair_mask(0), scale_pair_mask(1), scale_pair_mask(2), scale_pair_mask(3)};
  __m256 acc[NT], acc_m[NT];
  for (int t = 0; t < NT; ++t) acc[t] = acc_m[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQkK; ++i) {
    prefetch_ahead(x + i);
    const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales));
    const __m256i scales = _mm256_cvtepu8_epi16(_mm_and_si128(sc8, m4));
    const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc8, 4), m4));
    __m256i sv[2];
    split_scales(scales, &sv[0], &sv[1]);
    // One integer accumulator per half: two independent multiply-add chains.
    __m256i sum2[2][NT];
    for (int t = 0; t < NT; ++t) sum2[0][t] = sum2[1][t] = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      __m256i bits = load256(x[i].qs + 32 * h);
      for (int s = 0; s < 4; ++s) {
        // Elements 128h + 32s + (0..31): sub-blocks 8h + 2s and 8h + 2s + 1.
        const __m256i q = _mm256_and_si256(bits, m3);
        bits = _mm256_srli_epi16(bits, 2);
        const __m256i sp = _mm256_shuffle_epi8(sv[h], pm[s]);
        for (int t = 0; t < NT; ++t) {
          const __m256i p = _mm256_maddubs_epi16(q, load256(y[t][i].qs + 128 * h + 32 * s));
          sum2[h][t] = madd_acc(sum2[h][t], p, sp);
        }
      }
    }
    const float xd = half_to_float(x[i].d), xdmin = half_to_float(x[i].dmin);
    __m256i sum[NT];
    for (int t = 0; t < NT; ++t) sum[t] = _mm256_add_epi32(sum2[0][t], sum2[1][t]);
    for (int t = 0; t < NT; ++t) {
      const __m256i m = _mm256_madd_epi16(mins, load256(y[t][i].bsums));
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(y[t][i].d * xd), _mm256_cvtepi32_ps(sum[t]), acc[t]);
      acc_m[t] = _mm256_fmadd_ps(_mm256_set1_ps(-y[t][i].d * xdmin), _mm256_cvtepi32_ps(m), acc_m[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum_ps(_mm256_add_ps(acc[t], acc_m[t]));
}

// ---------------------------------------------------------------- Q3_K

// The 16 six-bit scales minus 32 as int16. Bytes 0-7 hold the low nibbles (scale j < 8 in the
// low nibble of byte j, scale j >= 8 in the high nibble of byte j - 8); byte 8 + j % 4 holds the
// top two bits of scale j at bits 2 (j / 4), so 32-bit lane k of the broadcast bytes 8-11
// shifted right by 2k has them at bits 0-1 for scales 4k..4k+3.
inline __m256i q3_k_scales(const uint8_t* packed) {
  const __m128i low = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(packed));
  const __m128i m4 = _mm_set1_epi8(0x0f);
  const __m128i nibbles = _mm_unpacklo_epi64(_mm_and_si128(low, m4), _mm_and_si128(_mm_srli_epi16(low, 4), m4));
  int32_t high_bytes;
  std::memcpy(&high_bytes, packed + 8, 4);
  const __m128i high = _mm_and_si128(_mm_srlv_epi32(_mm_set1_epi32(high_bytes), _mm_setr_epi32(0, 2, 4, 6)),
                                     _mm_set1_epi8(3));
  const __m128i s8 = _mm_sub_epi8(_mm_or_si128(nibbles, _mm_slli_epi16(high, 4)), _mm_set1_epi8(32));
  return _mm256_cvtepi8_epi16(s8);
}

template <int NT>
void q3_k_rows(int64_t n, const void* w, const BlockQ8K* const* y, float* out) {
  const auto* x = static_cast<const BlockQ3K*>(w);
  const __m256i m3 = _mm256_set1_epi8(3);
  const __m256i m4 = _mm256_set1_epi8(4);
  const __m256i pm[4] = {scale_pair_mask(0), scale_pair_mask(1), scale_pair_mask(2), scale_pair_mask(3)};
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQkK; ++i) {
    prefetch_ahead(x + i);
    const __m256i scales = q3_k_scales(x[i].scales);
    __m256i sv[2];
    split_scales(scales, &sv[0], &sv[1]);
    // Bit c of hmask[l] is the high bit of element 32c + l; the current one is kept at bit 2 of
    // each byte (a 16-bit shift left by 2 would lose bits 6-7 of the odd bytes, so the second
    // half starts from a shift right).
    const __m256i hmask = load256(x[i].hmask);
    // One integer accumulator per half: two independent multiply-add chains.
    __m256i sum2[2][NT];
    for (int t = 0; t < NT; ++t) sum2[0][t] = sum2[1][t] = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      __m256i bits = load256(x[i].qs + 32 * h);
      __m256i hbits = h == 0 ? _mm256_slli_epi16(hmask, 2) : _mm256_srli_epi16(hmask, 2);
      for (int s = 0; s < 4; ++s) {
        // Levels stored + 4 (0..7); the offset comes off through bsums below.
        const __m256i q = _mm256_or_si256(_mm256_and_si256(bits, m3), _mm256_and_si256(hbits, m4));
        bits = _mm256_srli_epi16(bits, 2);
        hbits = _mm256_srli_epi16(hbits, 1);
        const __m256i sp = _mm256_shuffle_epi8(sv[h], pm[s]);
        for (int t = 0; t < NT; ++t) {
          const __m256i p = _mm256_maddubs_epi16(q, load256(y[t][i].qs + 128 * h + 32 * s));
          sum2[h][t] = madd_acc(sum2[h][t], p, sp);
        }
      }
    }
    const float xd = half_to_float(x[i].d);
    __m256i sum[NT];
    for (int t = 0; t < NT; ++t) sum[t] = _mm256_add_epi32(sum2[0][t], sum2[1][t]);
    for (int t = 0; t < NT; ++t) {
      const __m256i corr = _mm256_madd_epi16(scales, load256(y[t][i].bsums));
      const __m256i s = _mm256_sub_epi32(sum[t], _mm256_slli_epi32(corr, 2));
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(y[t][i].d * xd), _mm256_cvtepi32_ps(s), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum_ps(acc[t]);
}

// ---------------------------------------------------------------- IQ4_XS

// The 8 six-bit scales minus 32 as int16, in both 128-bit lanes. Lane j takes nibble j % 2 of
// scales_l[j / 2] (a multiply by 16 lifts the low nibble of even lanes so one shift serves both)
// and bits 2j..2j+1 of scales_h (a multiply by 2^(14 - 2j) moves them to the top).
inline __m256i iq4_xs_scales(const BlockIq4Xs& b) {
  uint32_t l32;
  std::memcpy(&l32, b.scales_l, 4);
  const __m128i lb = _mm_shuffle_epi8(_mm_cvtsi32_si128(static_cast<int>(l32)),
                                      _mm_setr_epi8(0, -1, 0, -1, 1, -1, 1, -1, 2, -1, 2, -1, 3, -1, 3, -1));
  const __m128i lo = _mm_and_si128(_mm_srli_epi16(_mm_mullo_epi16(lb, _mm_setr_epi16(16, 1, 16, 1, 16, 1, 16, 1)), 4),
                                   _mm_set1_epi16(0x0f));
  const __m128i hb = _mm_mullo_epi16(_mm_set1_epi16(static_cast<int16_t>(b.scales_h)),
                                     _mm_setr_epi16(1 << 14, 1 << 12, 1 << 10, 1 << 8, 1 << 6, 1 << 4, 1 << 2, 1));
  const __m128i hi = _mm_slli_epi16(_mm_srli_epi16(hb, 14), 4);
  const __m128i s = _mm_sub_epi16(_mm_or_si128(lo, hi), _mm_set1_epi16(32));
  return _mm256_broadcastsi128_si256(s);
}

template <int NT>
void iq4_xs_rows(int64_t n, const void* w, const BlockQ8K* const* y, float* out) {
  const auto* x = static_cast<const BlockIq4Xs*>(w);
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  const __m256i values = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4nlValues)));
  const __m256i pm[4] = {scale_pair_mask(0), scale_pair_mask(1), scale_pair_mask(2), scale_pair_mask(3)};
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQkK; ++i) {
    prefetch_ahead(x + i);
    const __m256i sv = iq4_xs_scales(x[i]);
    __m256i sum_lo[NT], sum_hi[NT];  // two independent multiply-add chains
    for (int t = 0; t < NT; ++t) sum_lo[t] = sum_hi[t] = _mm256_setzero_si256();
    for (int k = 0; k < 4; ++k) {
      // 32 bytes = sub-blocks 2k (bytes 0-15) and 2k + 1: low nibbles are elements 64k + 0..15
      // and 64k + 32..47, high nibbles 64k + 16..31 and 64k + 48..63; the activations are loaded
      // in that order instead of reordering the weights.
      const __m256i bits = load256(x[i].qs + 32 * k);
      const __m256i w_lo = _mm256_shuffle_epi8(values, _mm256_and_si256(bits, m4));
      const __m256i w_hi = _mm256_shuffle_epi8(values, _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4));
      const __m256i a_lo = _mm256_abs_epi8(w_lo), a_hi = _mm256_abs_epi8(w_hi);
      const __m256i sp = _mm256_shuffle_epi8(sv, pm[k]);
      for (int t = 0; t < NT; ++t) {
        const int8_t* q8 = y[t][i].qs + 64 * k;
        const __m256i y_lo = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(q8 + 32),
                                                 reinterpret_cast<const __m128i*>(q8));
        const __m256i y_hi = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(q8 + 48),
                                                 reinterpret_cast<const __m128i*>(q8 + 16));
        // |w| * (y * sign(w)): pair sums stay within 2 * 127 * 127.
        const __m256i p_lo = _mm256_maddubs_epi16(a_lo, _mm256_sign_epi8(y_lo, w_lo));
        const __m256i p_hi = _mm256_maddubs_epi16(a_hi, _mm256_sign_epi8(y_hi, w_hi));
        sum_lo[t] = madd_acc(sum_lo[t], p_lo, sp);
        sum_hi[t] = madd_acc(sum_hi[t], p_hi, sp);
      }
    }
    const float xd = half_to_float(x[i].d);
    for (int t = 0; t < NT; ++t) {
      const __m256i sum = _mm256_add_epi32(sum_lo[t], sum_hi[t]);
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(y[t][i].d * xd), _mm256_cvtepi32_ps(sum), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum_ps(acc[t]);
}

template <void (*kRows)(int64_t, const void*, const BlockQ8K* const*, float*)>
float dot_one(int64_t n, const void* w, const void* a) {
  const BlockQ8K* y[1] = {static_cast<const BlockQ8K*>(a)};
  float out;
  kRows(n, w, y, &out);
  return out;
}

template <void (*kRows)(int64_t, const void*, const BlockQ8K* const*, float*)>
void dot_x4(int64_t n, const void* w, const void* a, size_t stride, float* out) {
  const BlockQ8K* y[kTok];
  token_rows(a, stride, y);
  kRows(n, w, y, out);
}

}  // namespace lowk

inline constexpr VecDotFn dot_q2_k_q8_k = lowk::dot_one<lowk::q2_k_rows<1>>;
inline constexpr VecDotFn dot_q3_k_q8_k = lowk::dot_one<lowk::q3_k_rows<1>>;
inline constexpr VecDotFn dot_iq4_xs_q8_k = lowk::dot_one<lowk::iq4_xs_rows<1>>;
inline constexpr VecDotX4Fn dot_q2_k_q8_k_x4 = lowk::dot_x4<lowk::q2_k_rows<kTok>>;
inline constexpr VecDotX4Fn dot_q3_k_q8_k_x4 = lowk::dot_x4<lowk::q3_k_rows<kTok>>;
inline constexpr VecDotX4Fn dot_iq4_xs_q8_k_x4 = lowk::dot_x4<lowk::iq4_xs_rows<kTok>>;

}  // namespace flea::quant::FLEA_QUANT_ISA_NS
