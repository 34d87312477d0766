// x86 dot kernels shared by quant_avx2.cpp and quant_avx512.cpp. Each of those files includes
// this once, inside an anonymous namespace, compiled with its own ISA flags; with
// FLEA_QUANT_VNNI defined the int8/int16 multiply-adds use the fused AVX-512 VNNI forms
// (vpdpbusd / vpdpwssd on 256-bit registers), otherwise the AVX2 maddubs + madd + add sequence.
// Integer results are identical either way (no intermediate saturates for these formats).
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "quant/fp16.h"
#include "quant/quant.h"
#include "quant/quant_kernels.h"

namespace flea::quant::FLEA_QUANT_ISA_NS {

inline float hsum_ps(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float half_to_float(uint16_t h) { return _cvtsh_ss(h); }

// acc += sum of pairs a16 * b16 (int16 x int16 -> int32).
inline __m256i madd_acc(__m256i acc, __m256i a, __m256i b) {
#ifdef FLEA_QUANT_VNNI
  return _mm256_dpwssd_epi32(acc, a, b);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
#endif
}

// Sum of groups of 4 u8 x s8 products as int32 (callers keep every pair sum within int16).
inline __m256i dot_u8s8(__m256i u, __m256i s) {
#ifdef FLEA_QUANT_VNNI
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

// Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 / IQ4_NL: quant_x86_q32_impl.h (block groups).

// ---------------------------------------------------------------- k-quants

// pshufb masks broadcasting int16 lane k (bytes 2k, 2k+1) of a 128-bit lane to all 8 lanes.
inline __m256i broadcast_i16_lane(__m256i v, int k) {
  const __m256i mask = _mm256_set1_epi16(static_cast<int16_t>((2 * k) | ((2 * k + 1) << 8)));
  return _mm256_shuffle_epi8(v, mask);
}

// Sum over the 8 sub-blocks of mins[j] * (bsums[2j] + bsums[2j+1]) as 8 int32 partials.
inline __m256i k_mins_term(const uint8_t* mins, const int16_t* bsums) {
  const __m128i m8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(mins));
  const __m256i m16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));  // m0 m0 m1 m1 ...
  return _mm256_madd_epi16(m16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bsums)));
}

// Token generation streams each weight once, and the first loads of every super-block stalled on
// memory: fetch the block kAhead blocks on (84-210 bytes, 2-4 lines) while this one computes. On the
// development VM (2 threads, 1B models) this took tg from 19.7 to ~40 tok/s for IQ4_XS and from 27 to
// 34 for Q2_K. A prefetch past the end of the row is harmless (prefetches do not fault).
template <typename Block>
inline void prefetch_ahead(const Block* b) {
  constexpr int kAhead = 4;
  const char* p = reinterpret_cast<const char*>(b + kAhead);
  for (size_t k = 0; k < sizeof(Block); k += 64) _mm_prefetch(p + k, _MM_HINT_T0);
}

float dot_q4_k_q8_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ4K*>(w);
  const auto* y = static_cast<const BlockQ8K*>(a);
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  __m256 acc = _mm256_setzero_ps(), acc_m = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQkK; ++i) {
    prefetch_ahead(x + i);
    uint8_t sc[8], m[8];
    internal::unpack_k_scales(x[i].scales, sc, m);
    const float d = y[i].d * half_to_float(x[i].d);
    const float dmin = -y[i].d * half_to_float(x[i].dmin);
    const __m256i scales = _mm256_broadcastsi128_si256(
        _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc))));
    const uint8_t* q = x[i].qs;
    const int8_t* q8 = y[i].qs;
    __m256i sum = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c, q += 32, q8 += 64) {
      const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q));
      const __m256i lo = _mm256_and_si256(bits, m4);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
      const __m256i p_lo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8)));
      const __m256i p_hi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8 + 32)));
      sum = madd_acc(sum, p_lo, broadcast_i16_lane(scales, 2 * c));
      sum = madd_acc(sum, p_hi, broadcast_i16_lane(scales, 2 * c + 1));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sum), acc);
    acc_m = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(k_mins_term(m, y[i].bsums)), acc_m);
  }
  return hsum_ps(_mm256_add_ps(acc, acc_m));
}

float dot_q5_k_q8_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ5K*>(w);
  const auto* y = static_cast<const BlockQ8K*>(a);
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  const __m256i one = _mm256_set1_epi8(1);
  __m256 acc = _mm256_setzero_ps(), acc_m = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQkK; ++i) {
    prefetch_ahead(x + i);
    uint8_t sc[8], m[8];
    internal::unpack_k_scales(x[i].scales, sc, m);
    const float d = y[i].d * half_to_float(x[i].d);
    const float dmin = -y[i].d * half_to_float(x[i].dmin);
    const __m256i scales = _mm256_broadcastsi128_si256(
        _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc))));
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qh));
    const uint8_t* q = x[i].qs;
    const int8_t* q8 = y[i].qs;
    __m256i sum = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c, q += 32, q8 += 64) {
      const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q));
      const __m256i h_lo = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4);
      const __m256i h_hi = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4);
      const __m256i lo = _mm256_or_si256(_mm256_and_si256(bits, m4), h_lo);
      const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m4), h_hi);
      const __m256i p_lo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8)));
      const __m256i p_hi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8 + 32)));
      sum = madd_acc(sum, p_lo, broadcast_i16_lane(scales, 2 * c));
      sum = madd_acc(sum, p_hi, broadcast_i16_lane(scales, 2 * c + 1));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sum), acc);
    acc_m = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(k_mins_term(m, y[i].bsums)), acc_m);
  }
  return hsum_ps(_mm256_add_ps(acc, acc_m));
}

// int16 vector with lanes 0-7 = scales[g], lanes 8-15 = scales[g + 1] (g even).
inline __m256i q6_scale_pair(__m128i scales8, int g) {
  const __m128i mask = _mm_set_epi8(g + 1, g + 1, g + 1, g + 1, g + 1, g + 1, g + 1, g + 1,
                                    g, g, g, g, g, g, g, g);
  return _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales8, mask));
}

float dot_q6_k_q8_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ6K*>(w);
  const auto* y = static_cast<const BlockQ8K*>(a);
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  const __m256i m30 = _mm256_set1_epi8(0x30);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQkK; ++i) {
    prefetch_ahead(x + i);
    const float d = y[i].d * half_to_float(x[i].d);
    const __m128i scales8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales));
    // Levels are stored +32: subtract 32 * sum_g scales[g] * bsums[g] at the end.
    const __m256i corr = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scales8),
                                           _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].bsums)));
    __m256i sum = _mm256_setzero_si256();
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = x[i].ql + 64 * half;
      const int8_t* q8 = y[i].qs + 128 * half;
      const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql));
      const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 32));
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qh + 32 * half));
      const __m256i q0 = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(h, 4), m30));
      const __m256i q1 = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(h, 2), m30));
      const __m256i q2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(h, m30));
      const __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                         _mm256_and_si256(_mm256_srli_epi16(h, 2), m30));
      const __m256i qv[4] = {q0, q1, q2, q3};
      for (int k = 0; k < 4; ++k) {
        const __m256i p = _mm256_maddubs_epi16(qv[k], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8 + 32 * k)));
        sum = madd_acc(sum, p, q6_scale_pair(scales8, 8 * half + 2 * k));
      }
    }
    sum = _mm256_sub_epi32(sum, _mm256_slli_epi32(corr, 5));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sum), acc);
  }
  return hsum_ps(acc);
}


// ---------------------------------------------------------------- 4-token kernels
// One weight row against kTok activation rows (stride bytes apart): the weight block is loaded
// and unpacked once for all tokens. Each token's arithmetic mirrors the single-token kernel op for
// op, so batched and one-at-a-time results are bit-identical.

constexpr int kTok = 4;

template <typename Block>
inline void token_rows(const void* a, size_t stride, const Block** y) {
  for (int t = 0; t < kTok; ++t) y[t] = reinterpret_cast<const Block*>(static_cast<const uint8_t*>(a) + t * stride);
}

void dot_q4_k_q8_k_x4(int64_t n, const void* w, const void* a, size_t stride, float* out) {
  const auto* x = static_cast<const BlockQ4K*>(w);
  const BlockQ8K* y[kTok];
  token_rows(a, stride, y);
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  __m256 acc[kTok], acc_m[kTok];
  for (int t = 0; t < kTok; ++t) acc[t] = acc_m[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQkK; ++i) {
    uint8_t sc[8], m[8];
    internal::unpack_k_scales(x[i].scales, sc, m);
    const float xd = half_to_float(x[i].d), xdmin = half_to_float(x[i].dmin);
    const __m256i scales = _mm256_broadcastsi128_si256(
        _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc))));
    __m256i sum[kTok];
    for (int t = 0; t < kTok; ++t) sum[t] = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qs + 32 * c));
      const __m256i lo = _mm256_and_si256(bits, m4);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
      const __m256i s_lo = broadcast_i16_lane(scales, 2 * c);
      const __m256i s_hi = broadcast_i16_lane(scales, 2 * c + 1);
      for (int t = 0; t < kTok; ++t) {
        const int8_t* q8 = y[t][i].qs + 64 * c;
        const __m256i p_lo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8)));
        const __m256i p_hi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8 + 32)));
        sum[t] = madd_acc(sum[t], p_lo, s_lo);
        sum[t] = madd_acc(sum[t], p_hi, s_hi);
      }
    }
    for (int t = 0; t < kTok; ++t) {
      const float d = y[t][i].d * xd;
      const float dmin = -y[t][i].d * xdmin;
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sum[t]), acc[t]);
      acc_m[t] = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(k_mins_term(m, y[t][i].bsums)), acc_m[t]);
    }
  }
  for (int t = 0; t < kTok; ++t) out[t] = hsum_ps(_mm256_add_ps(acc[t], acc_m[t]));
}

void dot_q6_k_q8_k_x4(int64_t n, const void* w, const void* a, size_t stride, float* out) {
  const auto* x = static_cast<const BlockQ6K*>(w);
  const BlockQ8K* y[kTok];
  token_rows(a, stride, y);
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  const __m256i m30 = _mm256_set1_epi8(0x30);
  __m256 acc[kTok];
  for (int t = 0; t < kTok; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQkK; ++i) {
    const float xd = half_to_float(x[i].d);
    const __m128i scales8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales));
    const __m256i scales16 = _mm256_cvtepi8_epi16(scales8);
    __m256i sum[kTok];
    for (int t = 0; t < kTok; ++t) sum[t] = _mm256_setzero_si256();
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = x[i].ql + 64 * half;
      const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql));
      const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 32));
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qh + 32 * half));
      const __m256i qv[4] = {
          _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(h, 4), m30)),
          _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(h, 2), m30)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(h, m30)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                          _mm256_and_si256(_mm256_srli_epi16(h, 2), m30))};
      for (int k = 0; k < 4; ++k) {
        const __m256i sp = q6_scale_pair(scales8, 8 * half + 2 * k);
        for (int t = 0; t < kTok; ++t) {
          const int8_t* q8 = y[t][i].qs + 128 * half + 32 * k;
          const __m256i p = _mm256_maddubs_epi16(qv[k], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8)));
          sum[t] = madd_acc(sum[t], p, sp);
        }
      }
    }
    for (int t = 0; t < kTok; ++t) {
      const __m256i corr =
          _mm256_madd_epi16(scales16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[t][i].bsums)));
      const __m256i s = _mm256_sub_epi32(sum[t], _mm256_slli_epi32(corr, 5));
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(y[t][i].d * xd), _mm256_cvtepi32_ps(s), acc[t]);
    }
  }
  for (int t = 0; t < kTok; ++t) out[t] = hsum_ps(acc[t]);
}


// ---------------------------------------------------------------- activation quantizers
// Bit-identical to the scalar rules in quant.cpp (cvtps_epi32 rounds half to even, like
// nearest_int, and every product is the same single float multiply).

inline float hmax_ps(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// 32 floats * scale -> 32 int8 (round half to even) in element order.
inline __m256i round_pack_32(const float* x, __m256 scale) {
  const __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), scale));
  const __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8), scale));
  const __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 16), scale));
  const __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 24), scale));
  const __m256i p01 = _mm256_packs_epi32(i0, i1);  // lanes interleaved by 128-bit halves
  const __m256i p23 = _mm256_packs_epi32(i2, i3);
  const __m256i p = _mm256_packs_epi16(p01, p23);
  return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// internal::quantize_block_q8 with SIMD (bit-identical): stores d as fp16 and the 32 levels, returns
// the unrounded d and the levels in *q.
inline float quantize_block_q8(const float* x, uint16_t* d_fp16, int8_t* qs, __m256i* q) {
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  __m256 m = _mm256_andnot_ps(sign_mask, _mm256_loadu_ps(x));
  for (int k = 1; k < 4; ++k) m = _mm256_max_ps(m, _mm256_andnot_ps(sign_mask, _mm256_loadu_ps(x + 8 * k)));
  const float amax = hmax_ps(m);
  const float d = amax / 127.f;
  *d_fp16 = fp32_to_fp16(d);
  const float id = amax != 0 ? 127.f / amax : 0.0f;
  *q = round_pack_32(x, _mm256_set1_ps(id));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs), *q);
  return d;
}

void quantize_act_q8_0(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ8_0*>(dst);
  __m256i q;
  for (int64_t i = 0; i < n / kQk0; ++i, x += kQk0) quantize_block_q8(x, &b[i].d, b[i].qs, &q);
}

void quantize_act_q8_k(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ8K*>(dst);
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  for (int64_t i = 0; i < n / kQkK; ++i, x += kQkK) {
    __m256 m = _mm256_setzero_ps();
    for (int k = 0; k < kQkK / 8; ++k) m = _mm256_max_ps(m, _mm256_andnot_ps(sign_mask, _mm256_loadu_ps(x + 8 * k)));
    const float amax = hmax_ps(m);
    if (amax == 0) {
      std::memset(&b[i], 0, sizeof(BlockQ8K));
      continue;
    }
    // The first element of largest magnitude gives the sign (as the scalar scan does).
    float max = 0;
    const __m256 vamax = _mm256_set1_ps(amax);
    for (int k = 0; k < kQkK / 8; ++k) {
      const int hit = _mm256_movemask_ps(
          _mm256_cmp_ps(_mm256_andnot_ps(sign_mask, _mm256_loadu_ps(x + 8 * k)), vamax, _CMP_EQ_OQ));
      if (hit != 0) {
        max = x[8 * k + __builtin_ctz(static_cast<unsigned>(hit))];
        break;
      }
    }
    const float iscale = -127.f / max;
    const __m256 vscale = _mm256_set1_ps(iscale);
    for (int k = 0; k < kQkK / 32; ++k) {
      // nearest_int(iscale * x) never exceeds 127 in magnitude here; the pack saturates anyway.
      const __m256i q = _mm256_min_epi8(round_pack_32(x + 32 * k, vscale), _mm256_set1_epi8(127));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(b[i].qs + 32 * k), q);
      // bsums of the two 16-element groups: sign-extend to int16 and add pairs down to 2 sums.
      const __m256i s16 = _mm256_madd_epi16(
          _mm256_maddubs_epi16(_mm256_set1_epi8(1), q), _mm256_set1_epi16(1));  // 8 x int32, 4 per group
      const __m128i lo = _mm256_castsi256_si128(s16), hi = _mm256_extracti128_si256(s16, 1);
      const __m128i lo2 = _mm_hadd_epi32(lo, hi);  // g0a g0b g1a g1b
      const __m128i sums = _mm_hadd_epi32(lo2, lo2);
      b[i].bsums[2 * k] = static_cast<int16_t>(_mm_cvtsi128_si32(sums));
      b[i].bsums[2 * k + 1] = static_cast<int16_t>(_mm_extract_epi32(sums, 1));
    }
    b[i].d = 1 / iscale;
  }
}

// ---------------------------------------------------------------- floats (256-bit)

float dot_f32_256(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const float*>(w);
  const auto* y = static_cast<const float*>(a);
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int k = 0; k < 4; ++k) {
      acc[k] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8 * k), _mm256_loadu_ps(y + i + 8 * k), acc[k]);
    }
  }
  for (; i + 8 <= n; i += 8) acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), acc[0]);
  float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
  for (; i < n; ++i) sum += x[i] * y[i];
  return sum;
}

inline __m256 load_f16x8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// Dot product of two rows of 16-bit floats (F16 or BF16): widen 8 at a time with `load`, four
// independent accumulators, scalar tail with `to_f32`.
template <__m256 (*load)(const uint16_t*), float (*to_f32)(uint16_t)>
float dot_16bit_256(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const uint16_t*>(w);
  const auto* y = static_cast<const uint16_t*>(a);
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int k = 0; k < 4; ++k) {
      acc[k] = _mm256_fmadd_ps(load(x + i + 8 * k), load(y + i + 8 * k), acc[k]);
    }
  }
  for (; i + 8 <= n; i += 8) acc[0] = _mm256_fmadd_ps(load(x + i), load(y + i), acc[0]);
  float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
  for (; i < n; ++i) sum += to_f32(x[i]) * to_f32(y[i]);
  return sum;
}

float dot_f16_256(int64_t n, const void* w, const void* a) {
  return dot_16bit_256<load_f16x8, fp16_to_fp32>(n, w, a);
}

inline __m256 load_bf16x8(const uint16_t* p) {
  const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

float dot_bf16_256(int64_t n, const void* w, const void* a) {
  return dot_16bit_256<load_bf16x8, bf16_to_fp32>(n, w, a);
}

}  // namespace flea::quant::FLEA_QUANT_ISA_NS
