// x86 attention kernels shared by attention_avx2.cpp and attention_avx512.cpp. Each includes this
// once with FLEA_ATTN_ISA_NS (its namespace) and FLEA_ATTN_WIDTH (8 or 16 floats per register),
// compiled with its own ISA flags.
//
// Block kernel (prompt processing): the nq = rows x n_gqa query vectors of one KV head are held
// transposed, QT (D, NQ), so that a score tile S (keys, NQ) is built by broadcasting one key element
// against NQ/W query registers (no horizontal sums); the softmax statistics (running max m, sum l)
// and the transposed output OT (D, NQ) are then updated a register of queries at a time. Each block
// of kBlockKeys keys is converted from the cache once per task.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "compute/cpu/attention_kernels.h"

namespace flea::cpu::FLEA_ATTN_ISA_NS {
namespace {

#if FLEA_ATTN_WIDTH == 16
using V = __m512;
constexpr int64_t kW = 16;
inline V vzero() { return _mm512_setzero_ps(); }
inline V vset1(float x) { return _mm512_set1_ps(x); }
inline V vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, V x) { _mm512_storeu_ps(p, x); }
inline V vfma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
inline V vfnma(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); }  // c - a b
inline V vmul(V a, V b) { return _mm512_mul_ps(a, b); }
inline V vadd(V a, V b) { return _mm512_add_ps(a, b); }
inline V vsub(V a, V b) { return _mm512_sub_ps(a, b); }
inline V vmax(V a, V b) { return _mm512_max_ps(a, b); }
inline V vmin(V a, V b) { return _mm512_min_ps(a, b); }
inline float vsum(V x) { return _mm512_reduce_add_ps(x); }
inline float vhmax(V x) { return _mm512_reduce_max_ps(x); }
inline V vload_f16(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
inline V vround(V x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// 2^n for integral n in [-126, 127].
inline V vpow2i(V n) {
  const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
  return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
}
inline V vzero_where_below(V x, V lo, V r) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ), r); }
inline V vzero_where_neg_inf(V x) {
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-INFINITY), _CMP_EQ_OQ), x, _mm512_setzero_ps());
}
#elif FLEA_ATTN_WIDTH == 8
using V = __m256;
constexpr int64_t kW = 8;
inline V vzero() { return _mm256_setzero_ps(); }
inline V vset1(float x) { return _mm256_set1_ps(x); }
inline V vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, V x) { _mm256_storeu_ps(p, x); }
inline V vfma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V vfnma(V a, V b, V c) { return _mm256_fnmadd_ps(a, b, c); }
inline V vmul(V a, V b) { return _mm256_mul_ps(a, b); }
inline V vadd(V a, V b) { return _mm256_add_ps(a, b); }
inline V vsub(V a, V b) { return _mm256_sub_ps(a, b); }
inline V vmax(V a, V b) { return _mm256_max_ps(a, b); }
inline V vmin(V a, V b) { return _mm256_min_ps(a, b); }
inline float vsum(V x) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float vhmax(V x) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline V vload_f16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline V vround(V x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline V vpow2i(V n) {
  const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
  return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
}
inline V vzero_where_below(V x, V lo, V r) { return _mm256_and_ps(r, _mm256_cmp_ps(x, lo, _CMP_GE_OQ)); }
inline V vzero_where_neg_inf(V x) {
  return _mm256_blendv_ps(x, _mm256_setzero_ps(), _mm256_cmp_ps(x, _mm256_set1_ps(-INFINITY), _CMP_EQ_OQ));
}
#else
#error "FLEA_ATTN_WIDTH must be 8 or 16"
#endif

// e^x for x <= 88, 0 below -87.3 (so -inf gives exactly 0): x = n ln2 + r with |r| <= ln2 / 2,
// e^r by its degree-6 Taylor polynomial (relative error < 2e-7 on that range), times 2^n.
inline V vexp(V x) {
  const V lo = vset1(-87.33f);
  const V xc = vmax(vmin(x, vset1(88.0f)), lo);
  const V n = vround(vmul(xc, vset1(1.44269504088896341f)));
  V r = vfnma(n, vset1(0.693359375f), xc);       // ln2 split in two for an exact n * ln2_hi
  r = vfnma(n, vset1(-2.12194440e-4f), r);
  V p = vset1(1.0f / 720);
  p = vfma(p, r, vset1(1.0f / 120));
  p = vfma(p, r, vset1(1.0f / 24));
  p = vfma(p, r, vset1(1.0f / 6));
  p = vfma(p, r, vset1(0.5f));
  p = vfma(p, r, vset1(1.0f));
  p = vfma(p, r, vset1(1.0f));
  return vzero_where_below(x, lo, vmul(p, vpow2i(n)));
}

constexpr int64_t kBlockKeys = 32;
constexpr int kMaxVec = 4;  // query registers per pass of the score and output loops

// Head kvh of position p of sequence seq, as D floats: F32 rows are returned in place, F16 rows are
// converted into tmp.
const float* head_row(const AttentionBatch& b, const void* base, int32_t seq, int64_t p, int64_t kvh, float* tmp) {
  const int64_t D = b.head_dim;
  const int64_t off = ((seq * b.cache.slots + p % b.cache.slots) * b.n_head_kv + kvh) * D;
  if (b.cache.type == KvType::kF32) return static_cast<const float*>(base) + off;
  const uint16_t* h = static_cast<const uint16_t*>(base) + off;
  int64_t d = 0;
  for (; d + kW <= D; d += kW) vstore(tmp + d, vload_f16(h + d));
  for (; d < D; ++d) tmp[d] = _cvtsh_ss(h[d]);
  return tmp;
}

// S[j, vb*W ..] = sum_d K[j, d] QT[d, vb*W ..] for the NV query registers from vb, j < nk.
template <int NV>
void block_scores(const float* QT, int64_t NQ, int64_t vb, const float* K, int64_t nk, int64_t D, float* S) {
  const float* qt = QT + vb * kW;
  int64_t j = 0;
  for (; j + 2 <= nk; j += 2) {  // two keys at a time: 2 NV independent accumulators
    V a0[NV], a1[NV];
    for (int v = 0; v < NV; ++v) a0[v] = a1[v] = vzero();
    const float* k0 = K + j * D;
    const float* k1 = k0 + D;
    for (int64_t d = 0; d < D; ++d) {
      const V b0 = vset1(k0[d]), b1 = vset1(k1[d]);
      for (int v = 0; v < NV; ++v) {
        const V q = vload(qt + d * NQ + v * kW);
        a0[v] = vfma(b0, q, a0[v]);
        a1[v] = vfma(b1, q, a1[v]);
      }
    }
    for (int v = 0; v < NV; ++v) {
      vstore(S + j * NQ + vb * kW + v * kW, a0[v]);
      vstore(S + (j + 1) * NQ + vb * kW + v * kW, a1[v]);
    }
  }
  if (j < nk) {
    V a0[NV];
    for (int v = 0; v < NV; ++v) a0[v] = vzero();
    const float* k0 = K + j * D;
    for (int64_t d = 0; d < D; ++d) {
      const V b0 = vset1(k0[d]);
      for (int v = 0; v < NV; ++v) a0[v] = vfma(b0, vload(qt + d * NQ + v * kW), a0[v]);
    }
    for (int v = 0; v < NV; ++v) vstore(S + j * NQ + vb * kW + v * kW, a0[v]);
  }
}

// OT[d, vb*W ..] += sum_j Vr[j, d] P[j, vb*W ..] for the NV query registers from vb.
template <int NV>
void block_accumulate(float* OT, int64_t NQ, int64_t vb, const float* P, const float* Vr, int64_t nk, int64_t D) {
  int64_t d = 0;
  for (; d + 2 <= D; d += 2) {  // two output dims at a time: 2 NV independent accumulators
    V o0[NV], o1[NV];
    float* ot0 = OT + d * NQ + vb * kW;
    float* ot1 = ot0 + NQ;
    for (int v = 0; v < NV; ++v) {
      o0[v] = vload(ot0 + v * kW);
      o1[v] = vload(ot1 + v * kW);
    }
    for (int64_t j = 0; j < nk; ++j) {
      const V b0 = vset1(Vr[j * D + d]), b1 = vset1(Vr[j * D + d + 1]);
      for (int v = 0; v < NV; ++v) {
        const V p = vload(P + j * NQ + vb * kW + v * kW);
        o0[v] = vfma(b0, p, o0[v]);
        o1[v] = vfma(b1, p, o1[v]);
      }
    }
    for (int v = 0; v < NV; ++v) {
      vstore(ot0 + v * kW, o0[v]);
      vstore(ot1 + v * kW, o1[v]);
    }
  }
  if (d < D) {
    V o0[NV];
    float* ot0 = OT + d * NQ + vb * kW;
    for (int v = 0; v < NV; ++v) o0[v] = vload(ot0 + v * kW);
    for (int64_t j = 0; j < nk; ++j) {
      const V b0 = vset1(Vr[j * D + d]);
      for (int v = 0; v < NV; ++v) o0[v] = vfma(b0, vload(P + j * NQ + vb * kW + v * kW), o0[v]);
    }
    for (int v = 0; v < NV; ++v) vstore(ot0 + v * kW, o0[v]);
  }
}

template <void (*F1)(const float*, int64_t, int64_t, const float*, int64_t, int64_t, float*),
          void (*F2)(const float*, int64_t, int64_t, const float*, int64_t, int64_t, float*),
          void (*F3)(const float*, int64_t, int64_t, const float*, int64_t, int64_t, float*),
          void (*F4)(const float*, int64_t, int64_t, const float*, int64_t, int64_t, float*)>
void for_query_registers(int64_t nvec, const float* a, int64_t NQ, const float* c, int64_t nk, int64_t D, float* out) {
  for (int64_t vb = 0; vb < nvec; vb += kMaxVec) {
    switch (std::min<int64_t>(kMaxVec, nvec - vb)) {
      case 1: F1(a, NQ, vb, c, nk, D, out); break;
      case 2: F2(a, NQ, vb, c, nk, D, out); break;
      case 3: F3(a, NQ, vb, c, nk, D, out); break;
      default: F4(a, NQ, vb, c, nk, D, out); break;
    }
  }
}

// block_accumulate with the argument order of for_query_registers (P, Vr in, OT out).
template <int NV>
void block_accumulate_to(const float* P, int64_t NQ, int64_t vb, const float* Vr, int64_t nk, int64_t D, float* OT) {
  block_accumulate<NV>(OT, NQ, vb, P, Vr, nk, D);
}

void block(const AttentionBatch& b, const int64_t* rows, int64_t n, int64_t kvh) {
  const int64_t D = b.head_dim, G = b.n_head / b.n_head_kv, HD = b.n_head * D;
  const int64_t nq = n * G, nvec = (nq + kW - 1) / kW, NQ = nvec * kW;
  thread_local std::vector<float> buf;
  thread_local std::vector<int64_t> qfirst, qpos;
  buf.resize(static_cast<size_t>(2 * D * NQ + kBlockKeys * NQ + 2 * kBlockKeys * D + 2 * NQ));
  float* QT = buf.data();            // (D, NQ) scaled queries, transposed
  float* OT = QT + D * NQ;           // (D, NQ) unnormalised outputs, transposed
  float* S = OT + D * NQ;            // (kBlockKeys, NQ) scores, then probabilities
  float* Kb = S + kBlockKeys * NQ;   // (kBlockKeys, D) the block's keys
  float* Vb = Kb + kBlockKeys * D;   // (kBlockKeys, D) the block's values
  float* m = Vb + kBlockKeys * D;    // [NQ] running max
  float* l = m + NQ;                 // [NQ] running sum
  qfirst.resize(static_cast<size_t>(NQ));
  qpos.resize(static_cast<size_t>(NQ));

  // Query i is head kvh * G + i % G of row rows[i / G]; padding queries copy the last one.
  for (int64_t i = 0; i < NQ; ++i) {
    const int64_t qi = std::min(i, nq - 1), row = rows[qi / G];
    const float* q = b.q + row * HD + (kvh * G + qi % G) * D;
    for (int64_t d = 0; d < D; ++d) QT[d * NQ + i] = q[d] * b.scale;
    qfirst[static_cast<size_t>(i)] = b.first[row];
    qpos[static_cast<size_t>(i)] = b.pos[row];
  }
  std::fill(OT, OT + D * NQ, 0.0f);
  std::fill(m, m + NQ, -INFINITY);
  std::fill(l, l + NQ, 0.0f);
  const int64_t k_begin = *std::min_element(qfirst.begin(), qfirst.end());
  const int64_t k_end = *std::max_element(qpos.begin(), qpos.end()) + 1;
  const int64_t max_first = *std::max_element(qfirst.begin(), qfirst.end());
  const int64_t min_pos = *std::min_element(qpos.begin(), qpos.end());
  const int32_t seq = b.seq[rows[0]];

  for (int64_t p0 = k_begin; p0 < k_end; p0 += kBlockKeys) {
    const int64_t nk = std::min(kBlockKeys, k_end - p0);
    for (int64_t j = 0; j < nk; ++j) {
      const float* kr = head_row(b, b.cache.k, seq, p0 + j, kvh, Kb + j * D);
      if (kr != Kb + j * D) std::memcpy(Kb + j * D, kr, static_cast<size_t>(D) * sizeof(float));
      const float* vr = head_row(b, b.cache.v, seq, p0 + j, kvh, Vb + j * D);
      if (vr != Vb + j * D) std::memcpy(Vb + j * D, vr, static_cast<size_t>(D) * sizeof(float));
    }
    for_query_registers<block_scores<1>, block_scores<2>, block_scores<3>, block_scores<4>>(nvec, QT, NQ, Kb, nk, D, S);
    if (p0 < max_first || p0 + nk - 1 > min_pos) {  // some query does not see some key of this block
      for (int64_t j = 0; j < nk; ++j) {
        for (int64_t i = 0; i < NQ; ++i) {
          if (p0 + j < qfirst[static_cast<size_t>(i)] || p0 + j > qpos[static_cast<size_t>(i)]) S[j * NQ + i] = -INFINITY;
        }
      }
    }
    // Online softmax: m' = max(m, max_j s_j), rescale l and OT by e^(m - m'), add e^(s_j - m').
    for (int64_t v = 0; v < nvec; ++v) {
      V bm = vset1(-INFINITY);
      for (int64_t j = 0; j < nk; ++j) bm = vmax(bm, vload(S + j * NQ + v * kW));
      const V m_old = vload(m + v * kW);
      const V m_new = vmax(m_old, bm);
      const V m_use = vzero_where_neg_inf(m_new);  // no key seen yet: every term is 0 anyway
      const V alpha = vexp(vsub(m_old, m_use));
      V sum = vzero();
      for (int64_t j = 0; j < nk; ++j) {
        const V p = vexp(vsub(vload(S + j * NQ + v * kW), m_use));
        vstore(S + j * NQ + v * kW, p);
        sum = vadd(sum, p);
      }
      vstore(l + v * kW, vfma(vload(l + v * kW), alpha, sum));
      vstore(m + v * kW, m_new);
      for (int64_t d = 0; d < D; ++d) vstore(OT + d * NQ + v * kW, vmul(vload(OT + d * NQ + v * kW), alpha));
    }
    for_query_registers<block_accumulate_to<1>, block_accumulate_to<2>, block_accumulate_to<3>, block_accumulate_to<4>>(
        nvec, S, NQ, Vb, nk, D, OT);
  }

  for (int64_t i = 0; i < nq; ++i) {
    const float inv = 1.0f / l[i];
    float* out = b.out + rows[i / G] * HD + (kvh * G + i % G) * D;
    for (int64_t d = 0; d < D; ++d) out[d] = OT[d * NQ + i] * inv;
  }
}

float dot(const float* x, const float* y, int64_t n) {
  V a0 = vzero(), a1 = vzero();
  int64_t i = 0;
  for (; i + 2 * kW <= n; i += 2 * kW) {
    a0 = vfma(vload(x + i), vload(y + i), a0);
    a1 = vfma(vload(x + i + kW), vload(y + i + kW), a1);
  }
  if (i + kW <= n) {
    a0 = vfma(vload(x + i), vload(y + i), a0);
    i += kW;
  }
  float s = vsum(vadd(a0, a1));
  for (; i < n; ++i) s += x[i] * y[i];
  return s;
}

// y[0..n) += a x[0..n)
void axpy(float a, const float* x, float* y, int64_t n) {
  const V va = vset1(a);
  int64_t i = 0;
  for (; i + kW <= n; i += kW) vstore(y + i, vfma(va, vload(x + i), vload(y + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}

// Token generation: each key and value row is converted once for the n_gqa query heads.
void single(const AttentionBatch& b, int64_t row, int64_t kvh) {
  const int64_t D = b.head_dim, G = b.n_head / b.n_head_kv, HD = b.n_head * D;
  const int64_t first = b.first[row], n = b.pos[row] - first + 1;
  const int32_t seq = b.seq[row];
  thread_local std::vector<float> score, tmp, acc;
  score.resize(static_cast<size_t>(G * n));  // (G, n)
  tmp.resize(static_cast<size_t>(D));
  acc.assign(static_cast<size_t>(G * D), 0.0f);
  const float* q = b.q + row * HD + kvh * G * D;  // the G heads are consecutive
  for (int64_t j = 0; j < n; ++j) {
    const float* kr = head_row(b, b.cache.k, seq, first + j, kvh, tmp.data());
    for (int64_t g = 0; g < G; ++g) score[static_cast<size_t>(g * n + j)] = dot(q + g * D, kr, D) * b.scale;
  }
  std::vector<float> inv(static_cast<size_t>(G));
  for (int64_t g = 0; g < G; ++g) {
    float* s = &score[static_cast<size_t>(g * n)];
    V vm = vset1(-INFINITY);
    int64_t j = 0;
    for (; j + kW <= n; j += kW) vm = vmax(vm, vload(s + j));
    float mx = vhmax(vm);
    for (; j < n; ++j) mx = std::max(mx, s[j]);
    const V vmx = vset1(mx);
    V vs = vzero();
    for (j = 0; j + kW <= n; j += kW) {
      const V e = vexp(vsub(vload(s + j), vmx));
      vstore(s + j, e);
      vs = vadd(vs, e);
    }
    double sum = vsum(vs);
    for (; j < n; ++j) {
      s[j] = std::exp(s[j] - mx);
      sum += s[j];
    }
    inv[static_cast<size_t>(g)] = static_cast<float>(1.0 / sum);
  }
  for (int64_t j = 0; j < n; ++j) {
    const float* vr = head_row(b, b.cache.v, seq, first + j, kvh, tmp.data());
    for (int64_t g = 0; g < G; ++g) axpy(score[static_cast<size_t>(g * n + j)], vr, &acc[static_cast<size_t>(g * D)], D);
  }
  for (int64_t g = 0; g < G; ++g) {
    float* out = b.out + row * HD + (kvh * G + g) * D;
    for (int64_t d = 0; d < D; ++d) out[d] = acc[static_cast<size_t>(g * D + d)] * inv[static_cast<size_t>(g)];
  }
}

}  // namespace
}  // namespace flea::cpu::FLEA_ATTN_ISA_NS
