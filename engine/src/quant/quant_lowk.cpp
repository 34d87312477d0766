// Scalar reference code of Q2_K, Q3_K and IQ4_XS: dequantize, error-minimising quantizers and the
// integer dot products against Q8_K activations that the SIMD kernels must reproduce.
#include "quant/quant_lowk.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/fp16.h"
#include "quant/quant.h"
#include "quant/quant_kernels.h"

namespace flea::quant::internal {
namespace {

// 2-bit level of element e (0..255) in the Q2_K / Q3_K `qs` layout: 128-element halves; within
// half h, element 32s + l sits in bits 2s..2s+1 of qs[32h + l].
inline int low2(const uint8_t* qs, int e) {
  return (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
}

// Writes 256 two-bit levels (0..3) into the `qs` layout above.
void pack_low2(const uint8_t* q, uint8_t* qs) {
  for (int h = 0; h < 2; ++h) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t* p = q + 128 * h + l;
      qs[32 * h + l] = static_cast<uint8_t>((p[0] & 3) | ((p[32] & 3) << 2) | ((p[64] & 3) << 4) | ((p[96] & 3) << 6));
    }
  }
}

// Least-squares a, b for x ≈ a * A + b * B over n points; false when the system is singular.
bool solve_2x2(const float* x, const float* A, const float* B, int n, double* a, double* b) {
  double aa = 0, ab = 0, bb = 0, ax = 0, bx = 0;
  for (int i = 0; i < n; ++i) {
    aa += static_cast<double>(A[i]) * A[i];
    ab += static_cast<double>(A[i]) * B[i];
    bb += static_cast<double>(B[i]) * B[i];
    ax += static_cast<double>(A[i]) * x[i];
    bx += static_cast<double>(B[i]) * x[i];
  }
  const double det = aa * bb - ab * ab;
  if (!(det > 1e-12 * aa * bb) || aa == 0 || bb == 0) return false;
  *a = (ax * bb - bx * ab) / det;
  *b = (bx * aa - ax * ab) / det;
  return true;
}

// ---------------------------------------------------------------- Q2_K

// Fits x ≈ scale * q - min to 16 values (q in 0..3, scale > 0, min >= 0): several starting
// scales, each refined by least squares on its own rounding and re-rounded; least squared error wins.
void fit_q2_sub_block(const float* x, float* scale_out, float* min_out) {
  constexpr int kN = 16, kMax = 3;
  float lo = x[0], hi = x[0];
  for (int i = 1; i < kN; ++i) { lo = std::min(lo, x[i]); hi = std::max(hi, x[i]); }
  lo = std::min(lo, 0.0f);  // the min is subtracted, so it cannot lift the floor above 0
  if (hi <= lo) {
    *scale_out = 0;
    *min_out = -lo;
    return;
  }
  double best_err = INFINITY, best_a = (hi - lo) / kMax, best_b = lo;
  for (int step = -12; step <= 12; ++step) {
    double a = (hi - lo) / (kMax + 0.08 * step), b = lo;
    for (int iter = 0; iter < 3; ++iter) {
      int q[kN];
      double sq = 0, sqq = 0, sx = 0, sqx = 0;
      for (int i = 0; i < kN; ++i) {
        q[i] = std::clamp(nearest_int(static_cast<float>((x[i] - b) / a)), 0, kMax);
        sq += q[i]; sqq += q[i] * q[i]; sx += x[i]; sqx += q[i] * x[i];
      }
      const double det = kN * sqq - sq * sq;
      double na = a, nb = b;
      if (det > 0) {
        na = (kN * sqx - sq * sx) / det;
        nb = (sx - na * sq) / kN;
      }
      if (nb > 0) {  // min must be >= 0: refit the scale alone with b = 0
        nb = 0;
        na = sqq > 0 ? sqx / sqq : 0;
      }
      if (!(na > 0)) break;
      a = na;
      b = nb;
      double err = 0;
      for (int i = 0; i < kN; ++i) {
        const int l = std::clamp(nearest_int(static_cast<float>((x[i] - b) / a)), 0, kMax);
        err += (a * l + b - x[i]) * (a * l + b - x[i]);
      }
      if (err < best_err) { best_err = err; best_a = a; best_b = b; }
    }
  }
  *scale_out = static_cast<float>(best_a);
  *min_out = static_cast<float>(-best_b);
}

// ---------------------------------------------------------------- Q3_K / IQ4_XS helpers

// Symmetric fit x ≈ s * v(q) for n values, where v(q) is one of the `levels` (sorted ascending);
// the signed extreme is tried at both ends of the level range, each start refined by least
// squares. Returns s (0 for an all-zero input).
float fit_symmetric(const float* x, int n, const int8_t* levels, int n_levels) {
  float amax = 0, max = 0;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) { amax = std::fabs(x[i]); max = x[i]; }
  }
  if (amax == 0) return 0;
  // Level nearest to v: binary search over the midpoints of consecutive levels (ties go up).
  float mid[15];
  for (int k = 0; k + 1 < n_levels; ++k) mid[k] = 0.5f * (levels[k] + levels[k + 1]);
  auto nearest_level = [&](float v) {
    int lo = 0, hi = n_levels - 1;  // answer in [lo, hi]
    while (lo < hi) {
      const int m = (lo + hi) / 2;
      if (v < mid[m]) hi = m; else lo = m + 1;
    }
    return levels[lo];
  };
  double sxx = 0;
  for (int i = 0; i < n; ++i) sxx += static_cast<double>(x[i]) * x[i];
  // Each pass rounds to levels for s, then moves s to the least-squares scale of those levels,
  // whose error is sxx - sxv^2 / svv.
  double best_err = INFINITY, best_s = max / levels[0];
  for (const int end : {static_cast<int>(levels[0]), static_cast<int>(levels[n_levels - 1])}) {
    for (int step = -10; step <= 10; ++step) {
      double s = max / (end * (1.0 + 0.025 * step));
      for (int iter = 0; iter < 2; ++iter) {
        const float inv = static_cast<float>(1.0 / s);
        double sxv = 0, svv = 0;
        for (int i = 0; i < n; ++i) {
          const int v = nearest_level(x[i] * inv);
          sxv += static_cast<double>(x[i]) * v;
          svv += v * v;
        }
        if (svv == 0 || sxv == 0) break;
        s = sxv / svv;
        const double err = sxx - sxv * sxv / svv;
        if (err < best_err) { best_err = err; best_s = s; }
      }
    }
  }
  return static_cast<float>(best_s);
}

// Quantizes sub-block scales (signed) to six bits l in -32..31 with d = max_scale / -32 (the
// signed extreme gets -32), as the Q3_K and IQ4_XS headers store them. Returns d as stored (fp16).
uint16_t quantize_signed_scales(const float* scales, int n, int* l) {
  float amax = 0, max = 0;
  for (int j = 0; j < n; ++j) {
    if (std::fabs(scales[j]) > amax) { amax = std::fabs(scales[j]); max = scales[j]; }
  }
  if (amax == 0) {
    for (int j = 0; j < n; ++j) l[j] = 0;
    return fp32_to_fp16(0.0f);
  }
  const float iscale = -32.f / max;
  for (int j = 0; j < n; ++j) l[j] = std::clamp(nearest_int(iscale * scales[j]), -32, 31);
  return fp32_to_fp16(1 / iscale);
}

constexpr int8_t kQ3Levels[8] = {-4, -3, -2, -1, 0, 1, 2, 3};

// Index of the IQ4 level nearest to v (binary search over the midpoints; ties go up).
int iq4_index(float v) {
  int lo = 0, hi = 15;
  while (lo < hi) {
    const int m = (lo + hi) / 2;
    if (v < 0.5f * (kIq4nlValues[m] + kIq4nlValues[m + 1])) hi = m; else lo = m + 1;
  }
  return lo;
}

}  // namespace

// value = d * (scales[j] & 15) * q - dmin * (scales[j] >> 4), sub-blocks of 16.
void dequantize_q2_k(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ2K*>(src);
  for (int64_t i = 0; i < n / kQkK; ++i, dst += kQkK) {
    const float d = fp16_to_fp32(b[i].d), dmin = fp16_to_fp32(b[i].dmin);
    for (int g = 0; g < 16; ++g) {  // sub-block g: elements 16g..16g+15, bits 2s of qs[32h + 16 (g odd) + l]
      const int h = g / 8, s = (g % 8) / 2;
      const uint8_t* q = b[i].qs + 32 * h + 16 * (g % 2);
      const float dl = d * (b[i].scales[g] & 0x0f), ml = dmin * (b[i].scales[g] >> 4);
      for (int l = 0; l < 16; ++l) dst[16 * g + l] = dl * ((q[l] >> (2 * s)) & 3) - ml;
    }
  }
}

void quantize_q2_k(const float* src, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ2K*>(dst);
  for (int64_t i = 0; i < n / kQkK; ++i, src += kQkK) {
    float scales[16], mins[16];
    for (int j = 0; j < 16; ++j) fit_q2_sub_block(src + 16 * j, &scales[j], &mins[j]);
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; ++j) { max_scale = std::max(max_scale, scales[j]); max_min = std::max(max_min, mins[j]); }
    int ls[16], lm[16];
    for (int j = 0; j < 16; ++j) {
      ls[j] = max_scale > 0 ? std::min(15, nearest_int(15.f * scales[j] / max_scale)) : 0;
      lm[j] = max_min > 0 ? std::min(15, nearest_int(15.f * mins[j] / max_min)) : 0;
      b[i].scales[j] = static_cast<uint8_t>(ls[j] | (lm[j] << 4));
    }
    float d = max_scale / 15.f, dmin = max_min / 15.f;
    uint8_t q[kQkK];
    // Alternate: levels for the current (d, dmin), then (d, dmin) by least squares over the whole
    // super-block for those levels (x ≈ d * ls * q - dmin * lm).
    for (int iter = 0; iter < 3; ++iter) {
      b[i].d = fp32_to_fp16(d);
      b[i].dmin = fp32_to_fp16(dmin);
      const float dq = fp16_to_fp32(b[i].d), mq = fp16_to_fp32(b[i].dmin);
      float A[kQkK], B[kQkK];
      for (int e = 0; e < kQkK; ++e) {
        const float s = dq * ls[e / 16], m = mq * lm[e / 16];
        q[e] = static_cast<uint8_t>(s > 0 ? std::clamp(nearest_int((src[e] + m) / s), 0, 3) : 0);
        A[e] = static_cast<float>(ls[e / 16] * q[e]);
        B[e] = static_cast<float>(-lm[e / 16]);
      }
      if (iter == 2) break;
      double na, nb;
      if (!solve_2x2(src, A, B, kQkK, &na, &nb) || nb < 0) {
        // No usable mins (all lm = 0, or a negative fit): refit d alone with dmin as it is.
        double sxa = 0, saa = 0;
        for (int e = 0; e < kQkK; ++e) { sxa += A[e] * (src[e] - mq * B[e]); saa += A[e] * A[e]; }
        na = saa > 0 ? sxa / saa : 0;
        nb = dmin;
      }
      if (!(na > 0)) break;
      d = static_cast<float>(na);
      dmin = static_cast<float>(nb);
    }
    pack_low2(q, b[i].qs);
  }
}

float dot_q2_k_q8_k_scalar(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ2K*>(w);
  const auto* y = static_cast<const BlockQ8K*>(a);
  float sum = 0;
  for (int64_t i = 0; i < n / kQkK; ++i) {
    int32_t sum_q = 0, sum_m = 0;
    for (int j = 0; j < 16; ++j) {
      int32_t s = 0;
      for (int l = 0; l < 16; ++l) s += low2(x[i].qs, 16 * j + l) * y[i].qs[16 * j + l];
      sum_q += (x[i].scales[j] & 0x0f) * s;
      sum_m += (x[i].scales[j] >> 4) * y[i].bsums[j];
    }
    sum += y[i].d * (fp16_to_fp32(x[i].d) * sum_q - fp16_to_fp32(x[i].dmin) * sum_m);
  }
  return sum;
}

// ---------------------------------------------------------------- Q3_K

// Level -4..3 of element e: two low bits as Q2_K, + 4 when bit e / 32 of hmask[e % 32] is set.
inline int q3_level(const BlockQ3K& b, int e) {
  return low2(b.qs, e) + (((b.hmask[e % 32] >> (e / 32)) & 1) << 2) - 4;
}

void dequantize_q3_k(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ3K*>(src);
  for (int64_t i = 0; i < n / kQkK; ++i, dst += kQkK) {
    const float d = fp16_to_fp32(b[i].d);
    for (int g = 0; g < 16; ++g) {  // layout as Q2_K; high bit g / 2 of hmask[16 (g odd) + l]
      const int h = g / 8, s = (g % 8) / 2, off = 16 * (g % 2);
      const uint8_t* q = b[i].qs + 32 * h + off;
      const uint8_t* hm = b[i].hmask + off;
      const float dl = d * (q3_k_scale(b[i].scales, g) - 32);
      for (int l = 0; l < 16; ++l) {
        dst[16 * g + l] = dl * (((q[l] >> (2 * s)) & 3) + (((hm[l] >> (g / 2)) & 1) << 2) - 4);
      }
    }
  }
}

void quantize_q3_k(const float* src, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ3K*>(dst);
  for (int64_t i = 0; i < n / kQkK; ++i, src += kQkK) {
    float scales[16];
    for (int j = 0; j < 16; ++j) scales[j] = fit_symmetric(src + 16 * j, 16, kQ3Levels, 8);
    int l[16];
    b[i].d = quantize_signed_scales(scales, 16, l);
    std::memset(b[i].scales, 0, sizeof(b[i].scales));
    for (int j = 0; j < 16; ++j) {
      const int ls = l[j] + 32;
      b[i].scales[j % 8] |= static_cast<uint8_t>((ls & 0x0f) << (j < 8 ? 0 : 4));
      b[i].scales[8 + j % 4] |= static_cast<uint8_t>((ls >> 4) << (2 * (j / 4)));
    }
    // Levels for the stored scales, then d by least squares for those levels, twice.
    int8_t q[kQkK];
    float d = fp16_to_fp32(b[i].d);
    for (int iter = 0; iter < 3; ++iter) {
      double sxa = 0, saa = 0;
      for (int e = 0; e < kQkK; ++e) {
        const float s = d * l[e / 16];
        q[e] = static_cast<int8_t>(s != 0 ? std::clamp(nearest_int(src[e] / s), -4, 3) : 0);
        const double A = l[e / 16] * q[e];
        sxa += A * src[e]; saa += A * A;
      }
      if (iter == 2 || saa == 0) break;
      const uint16_t d16 = fp32_to_fp16(static_cast<float>(sxa / saa));
      if (!(fp16_to_fp32(d16) * fp16_to_fp32(b[i].d) > 0)) break;  // keep the sign the scales assume
      b[i].d = d16;
      d = fp16_to_fp32(d16);
    }
    std::memset(b[i].hmask, 0, sizeof(b[i].hmask));
    uint8_t low[kQkK];
    for (int e = 0; e < kQkK; ++e) {
      const int u = q[e] + 4;  // 0..7
      low[e] = static_cast<uint8_t>(u & 3);
      b[i].hmask[e % 32] |= static_cast<uint8_t>((u >> 2) << (e / 32));
    }
    pack_low2(low, b[i].qs);
  }
}

float dot_q3_k_q8_k_scalar(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ3K*>(w);
  const auto* y = static_cast<const BlockQ8K*>(a);
  float sum = 0;
  for (int64_t i = 0; i < n / kQkK; ++i) {
    int32_t sum_q = 0;
    for (int j = 0; j < 16; ++j) {
      int32_t s = 0;
      for (int l = 0; l < 16; ++l) s += q3_level(x[i], 16 * j + l) * y[i].qs[16 * j + l];
      sum_q += (q3_k_scale(x[i].scales, j) - 32) * s;
    }
    sum += y[i].d * fp16_to_fp32(x[i].d) * static_cast<float>(sum_q);
  }
  return sum;
}

// ---------------------------------------------------------------- IQ4_XS

// Index 0..15 of element e: sub-block e / 32, low nibble for its first 16 elements.
inline int iq4_xs_index(const BlockIq4Xs& b, int e) {
  const uint8_t byte = b.qs[16 * (e / 32) + e % 16];
  return (e % 32) < 16 ? (byte & 0x0f) : (byte >> 4);
}

void dequantize_iq4_xs(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockIq4Xs*>(src);
  for (int64_t i = 0; i < n / kQkK; ++i, dst += kQkK) {
    const float d = fp16_to_fp32(b[i].d);
    for (int j = 0; j < 8; ++j) {
      const float dl = d * (iq4_xs_scale(b[i].scales_h, b[i].scales_l, j) - 32);
      const uint8_t* q = b[i].qs + 16 * j;
      for (int l = 0; l < 16; ++l) {
        dst[32 * j + l] = dl * kIq4nlValues[q[l] & 0x0f];
        dst[32 * j + 16 + l] = dl * kIq4nlValues[q[l] >> 4];
      }
    }
  }
}

void quantize_iq4_xs(const float* src, void* dst, int64_t n) {
  auto* b = static_cast<BlockIq4Xs*>(dst);
  for (int64_t i = 0; i < n / kQkK; ++i, src += kQkK) {
    float scales[8];
    for (int j = 0; j < 8; ++j) scales[j] = fit_symmetric(src + 32 * j, 32, kIq4nlValues, 16);
    int l[8];
    b[i].d = quantize_signed_scales(scales, 8, l);
    b[i].scales_h = 0;
    std::memset(b[i].scales_l, 0, sizeof(b[i].scales_l));
    for (int j = 0; j < 8; ++j) {
      const int ls = l[j] + 32;
      b[i].scales_l[j / 2] |= static_cast<uint8_t>((ls & 0x0f) << (4 * (j % 2)));
      b[i].scales_h = static_cast<uint16_t>(b[i].scales_h | ((ls >> 4) << (2 * j)));
    }
    uint8_t q[kQkK];
    float d = fp16_to_fp32(b[i].d);
    for (int iter = 0; iter < 3; ++iter) {
      double sxa = 0, saa = 0;
      for (int e = 0; e < kQkK; ++e) {
        const float s = d * l[e / 32];
        q[e] = static_cast<uint8_t>(s != 0 ? iq4_index(src[e] / s) : iq4_index(0.0f));
        const double A = static_cast<double>(l[e / 32]) * kIq4nlValues[q[e]];
        sxa += A * src[e]; saa += A * A;
      }
      if (iter == 2 || saa == 0) break;
      const uint16_t d16 = fp32_to_fp16(static_cast<float>(sxa / saa));
      if (!(fp16_to_fp32(d16) * fp16_to_fp32(b[i].d) > 0)) break;
      b[i].d = d16;
      d = fp16_to_fp32(d16);
    }
    for (int j = 0; j < 8; ++j) {
      for (int k = 0; k < 16; ++k) {
        b[i].qs[16 * j + k] = static_cast<uint8_t>(q[32 * j + k] | (q[32 * j + 16 + k] << 4));
      }
    }
  }
}

float dot_iq4_xs_q8_k_scalar(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockIq4Xs*>(w);
  const auto* y = static_cast<const BlockQ8K*>(a);
  float sum = 0;
  for (int64_t i = 0; i < n / kQkK; ++i) {
    int32_t sum_q = 0;
    for (int j = 0; j < 8; ++j) {
      int32_t s = 0;
      for (int l = 0; l < 32; ++l) s += kIq4nlValues[iq4_xs_index(x[i], 32 * j + l)] * y[i].qs[32 * j + l];
      sum_q += (iq4_xs_scale(x[i].scales_h, x[i].scales_l, j) - 32) * s;
    }
    sum += y[i].d * fp16_to_fp32(x[i].d) * static_cast<float>(sum_q);
  }
  return sum;
}

}  // namespace flea::quant::internal
