// Scalar reference implementations of every block format, the quantizers, and the dispatch table.
#include "quant/quant.h"

#include <cpuid.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "flea/status.h"
#include "quant/fp16.h"
#include "quant/quant_kernels.h"
#include "quant/quant_q32.h"
#include "quant/quant_lowk.h"

namespace flea::quant {
namespace {

using internal::nearest_int;
using internal::unpack_k_scales;

// ---------------------------------------------------------------- floats

void dequantize_f32(const void* src, float* dst, int64_t n) {
  std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}
void quantize_f32(const float* src, void* dst, int64_t n) {
  std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}
void dequantize_f16(const void* src, float* dst, int64_t n) {
  const auto* h = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(h[i]);
}
void quantize_f16(const float* src, void* dst, int64_t n) {
  auto* h = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) h[i] = fp32_to_fp16(src[i]);
}
void dequantize_bf16(const void* src, float* dst, int64_t n) {
  const auto* h = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(h[i]);
}
void quantize_bf16(const float* src, void* dst, int64_t n) {
  auto* h = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) h[i] = fp32_to_bf16(src[i]);
}

// The float dots accumulate in double so the scalar path is a trustworthy reference.
float dot_f32_scalar(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const float*>(w);
  const auto* y = static_cast<const float*>(a);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * y[i];
  return static_cast<float>(sum);
}
float dot_f16_scalar(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const uint16_t*>(w);
  const auto* y = static_cast<const uint16_t*>(a);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(fp16_to_fp32(x[i])) * fp16_to_fp32(y[i]);
  return static_cast<float>(sum);
}
float dot_bf16_scalar(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const uint16_t*>(w);
  const auto* y = static_cast<const uint16_t*>(a);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(bf16_to_fp32(x[i])) * bf16_to_fp32(y[i]);
  return static_cast<float>(sum);
}

// ---------------------------------------------------------------- Q4_0

void dequantize_q4_0(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ4_0*>(src);
  for (int64_t i = 0; i < n / kQk0; ++i, dst += kQk0) {
    const float d = fp16_to_fp32(b[i].d);
    for (int j = 0; j < kQk0 / 2; ++j) {
      dst[j] = d * ((b[i].qs[j] & 0x0f) - 8);
      dst[j + kQk0 / 2] = d * ((b[i].qs[j] >> 4) - 8);
    }
  }
}

// The format's reference rule: d = (signed value of largest magnitude) / -8, so that value maps
// to q = 0 exactly and the other side gets the extra level.
void quantize_q4_0(const float* src, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ4_0*>(dst);
  for (int64_t i = 0; i < n / kQk0; ++i, src += kQk0) {
    float amax = 0, max = 0;
    for (int j = 0; j < kQk0; ++j) {
      if (std::fabs(src[j]) > amax) { amax = std::fabs(src[j]); max = src[j]; }
    }
    const float d = max / -8;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    b[i].d = fp32_to_fp16(d);
    for (int j = 0; j < kQk0 / 2; ++j) {
      const int q0 = std::min(15, static_cast<int>(static_cast<int8_t>(src[j] * id + 8.5f)));
      const int q1 = std::min(15, static_cast<int>(static_cast<int8_t>(src[j + 16] * id + 8.5f)));
      b[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

float dot_q4_0_q8_0_scalar(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ4_0*>(w);
  const auto* y = static_cast<const BlockQ8_0*>(a);
  float sum = 0;
  for (int64_t i = 0; i < n / kQk0; ++i) {
    int32_t s = 0;
    for (int j = 0; j < kQk0 / 2; ++j) {
      s += ((x[i].qs[j] & 0x0f) - 8) * y[i].qs[j];
      s += ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + 16];
    }
    sum += fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d) * static_cast<float>(s);
  }
  return sum;
}

// ---------------------------------------------------------------- Q8_0

void dequantize_q8_0(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ8_0*>(src);
  for (int64_t i = 0; i < n / kQk0; ++i, dst += kQk0) {
    const float d = fp16_to_fp32(b[i].d);
    for (int j = 0; j < kQk0; ++j) dst[j] = d * b[i].qs[j];
  }
}

// Weights (model files): d = amax / 127, q = round-half-away(x / d), as llama-quantize writes.
void quantize_q8_0(const float* src, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ8_0*>(dst);
  for (int64_t i = 0; i < n / kQk0; ++i, src += kQk0) {
    float amax = 0;
    for (int j = 0; j < kQk0; ++j) amax = std::max(amax, std::fabs(src[j]));
    const float d = amax / 127.f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    b[i].d = fp32_to_fp16(d);
    for (int j = 0; j < kQk0; ++j) b[i].qs[j] = static_cast<int8_t>(std::round(src[j] * id));
  }
}

// Activations: what llama.cpp's x86 CPU backend does at run time: id = 127 / amax and
// round-half-even (the SIMD rounding mode), d stored as fp16(amax / 127).
void quantize_activation_q8_0(const float* src, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ8_0*>(dst);
  int32_t sum;
  for (int64_t i = 0; i < n / kQk0; ++i, src += kQk0) internal::quantize_block_q8(src, &b[i].d, b[i].qs, &sum);
}

float dot_q8_0_q8_0_scalar(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ8_0*>(w);
  const auto* y = static_cast<const BlockQ8_0*>(a);
  float sum = 0;
  for (int64_t i = 0; i < n / kQk0; ++i) {
    int32_t s = 0;
    for (int j = 0; j < kQk0; ++j) s += x[i].qs[j] * y[i].qs[j];
    sum += fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d) * static_cast<float>(s);
  }
  return sum;
}

// ---------------------------------------------------------------- k-quant helpers

// Fits value ≈ scale * q - min (q in 0..nmax, min >= 0) to n values by trying several starting
// scales, each refined by least squares on its own rounding; returns the fit with least squared
// error. q receives the levels.
void fit_affine(const float* x, int n, int nmax, float* scale_out, float* min_out, uint8_t* q) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < n; ++i) { lo = std::min(lo, x[i]); hi = std::max(hi, x[i]); }
  lo = std::min(lo, 0.0f);  // the format's min is subtracted, so it cannot raise the floor
  if (hi <= lo) {
    for (int i = 0; i < n; ++i) q[i] = 0;
    *scale_out = 0;
    *min_out = -lo;
    return;
  }
  float best_err = INFINITY, best_scale = 0, best_min = 0;
  uint8_t trial[32];
  for (int step = -10; step <= 10; ++step) {
    const float scale0 = (hi - lo) / (nmax + 0.1f * step);
    if (scale0 <= 0) continue;
    for (int i = 0; i < n; ++i) {
      trial[i] = static_cast<uint8_t>(std::clamp(nearest_int((x[i] - lo) / scale0), 0, nmax));
    }
    // Least squares for x ≈ a * q + b over this assignment.
    double sq = 0, sqq = 0, sx = 0, sqx = 0;
    for (int i = 0; i < n; ++i) {
      sq += trial[i]; sqq += trial[i] * trial[i]; sx += x[i]; sqx += trial[i] * x[i];
    }
    const double det = n * sqq - sq * sq;
    double a = scale0, b = lo;
    if (det > 0) {
      a = (n * sqx - sq * sx) / det;
      b = (sx - a * sq) / n;
    }
    if (b > 0) {  // min must be >= 0: refit the scale alone with b = 0
      b = 0;
      a = sqq > 0 ? sqx / sqq : 0;
    }
    if (a <= 0) continue;
    double err = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(nearest_int(static_cast<float>((x[i] - b) / a)), 0, nmax);
      const double diff = a * l + b - x[i];
      err += diff * diff;
    }
    if (err < best_err) { best_err = err; best_scale = static_cast<float>(a); best_min = static_cast<float>(-b); }
  }
  if (!(best_scale > 0)) { best_scale = (hi - lo) / nmax; best_min = -lo; }
  *scale_out = best_scale;
  *min_out = best_min;
  for (int i = 0; i < n; ++i) {
    q[i] = static_cast<uint8_t>(std::clamp(nearest_int((x[i] + best_min) / best_scale), 0, nmax));
  }
}

// Quantizes the 8 sub-block scales and mins of a Q4_K/Q5_K super-block to 6 bits each, packs
// them, and returns the per-sub-block effective (scale, min) the levels must be requantized to.
void pack_k_scales(const float* scales, const float* mins, uint16_t* d_out, uint16_t* dmin_out,
                   uint8_t* packed, float* eff_scale, float* eff_min) {
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) { max_scale = std::max(max_scale, scales[j]); max_min = std::max(max_min, mins[j]); }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  uint8_t ls[8], lm[8];
  for (int j = 0; j < 8; ++j) {
    ls[j] = static_cast<uint8_t>(std::min(63, nearest_int(inv_scale * scales[j])));
    lm[j] = static_cast<uint8_t>(std::min(63, nearest_int(inv_min * mins[j])));
  }
  std::memset(packed, 0, kKScaleBytes);
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      packed[j] = ls[j];
      packed[j + 4] = lm[j];
    } else {
      packed[j + 4] = static_cast<uint8_t>((ls[j] & 0x0f) | ((lm[j] & 0x0f) << 4));
      packed[j - 4] |= static_cast<uint8_t>((ls[j] >> 4) << 6);
      packed[j] |= static_cast<uint8_t>((lm[j] >> 4) << 6);
    }
  }
  *d_out = fp32_to_fp16(max_scale / 63.f);
  *dmin_out = fp32_to_fp16(max_min / 63.f);
  const float d = fp16_to_fp32(*d_out), dmin = fp16_to_fp32(*dmin_out);
  uint8_t sc[8], m[8];
  unpack_k_scales(packed, sc, m);
  for (int j = 0; j < 8; ++j) { eff_scale[j] = d * sc[j]; eff_min[j] = dmin * m[j]; }
}

// Levels of one super-block for value = eff_scale * q - eff_min (per 32-element sub-block).
void requantize_k(const float* x, const float* eff_scale, const float* eff_min, int nmax, uint8_t* q) {
  for (int j = 0; j < 8; ++j) {
    const float s = eff_scale[j];
    for (int l = 0; l < 32; ++l) {
      const int v = s != 0 ? nearest_int((x[32 * j + l] + eff_min[j]) / s) : 0;
      q[32 * j + l] = static_cast<uint8_t>(std::clamp(v, 0, nmax));
    }
  }
}

// ---------------------------------------------------------------- Q4_K

void dequantize_q4_k(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ4K*>(src);
  for (int64_t i = 0; i < n / kQkK; ++i) {
    const float d = fp16_to_fp32(b[i].d), dmin = fp16_to_fp32(b[i].dmin);
    uint8_t sc[8], m[8];
    unpack_k_scales(b[i].scales, sc, m);
    const uint8_t* q = b[i].qs;
    for (int c = 0; c < 4; ++c, q += 32) {
      const float d1 = d * sc[2 * c], m1 = dmin * m[2 * c];
      const float d2 = d * sc[2 * c + 1], m2 = dmin * m[2 * c + 1];
      for (int l = 0; l < 32; ++l) *dst++ = d1 * (q[l] & 0x0f) - m1;
      for (int l = 0; l < 32; ++l) *dst++ = d2 * (q[l] >> 4) - m2;
    }
  }
}

void quantize_q4_k(const float* src, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ4K*>(dst);
  for (int64_t i = 0; i < n / kQkK; ++i, src += kQkK) {
    float scales[8], mins[8], eff_scale[8], eff_min[8];
    uint8_t q[kQkK];
    for (int j = 0; j < 8; ++j) fit_affine(src + 32 * j, 32, 15, &scales[j], &mins[j], q + 32 * j);
    pack_k_scales(scales, mins, &b[i].d, &b[i].dmin, b[i].scales, eff_scale, eff_min);
    requantize_k(src, eff_scale, eff_min, 15, q);
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        b[i].qs[32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
      }
    }
  }
}

// Integer dot of one k-quant super-block's levels with Q8_K: sum_j sc[j] * dot_j - mins term.
float dot_q4_k_q8_k_scalar(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ4K*>(w);
  const auto* y = static_cast<const BlockQ8K*>(a);
  float sum = 0;
  for (int64_t i = 0; i < n / kQkK; ++i) {
    uint8_t sc[8], m[8];
    unpack_k_scales(x[i].scales, sc, m);
    int32_t sum_q = 0, sum_m = 0;
    for (int c = 0; c < 4; ++c) {
      int32_t lo = 0, hi = 0;
      for (int l = 0; l < 32; ++l) {
        lo += (x[i].qs[32 * c + l] & 0x0f) * y[i].qs[64 * c + l];
        hi += (x[i].qs[32 * c + l] >> 4) * y[i].qs[64 * c + 32 + l];
      }
      sum_q += sc[2 * c] * lo + sc[2 * c + 1] * hi;
    }
    for (int j = 0; j < 8; ++j) sum_m += m[j] * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
    sum += y[i].d * (fp16_to_fp32(x[i].d) * sum_q - fp16_to_fp32(x[i].dmin) * sum_m);
  }
  return sum;
}

// ---------------------------------------------------------------- Q5_K

void dequantize_q5_k(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ5K*>(src);
  for (int64_t i = 0; i < n / kQkK; ++i) {
    const float d = fp16_to_fp32(b[i].d), dmin = fp16_to_fp32(b[i].dmin);
    uint8_t sc[8], m[8];
    unpack_k_scales(b[i].scales, sc, m);
    const uint8_t* q = b[i].qs;
    for (int c = 0; c < 4; ++c, q += 32) {
      const float d1 = d * sc[2 * c], m1 = dmin * m[2 * c];
      const float d2 = d * sc[2 * c + 1], m2 = dmin * m[2 * c + 1];
      const uint8_t u1 = static_cast<uint8_t>(1u << (2 * c)), u2 = static_cast<uint8_t>(2u << (2 * c));
      for (int l = 0; l < 32; ++l) *dst++ = d1 * ((q[l] & 0x0f) + (b[i].qh[l] & u1 ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) *dst++ = d2 * ((q[l] >> 4) + (b[i].qh[l] & u2 ? 16 : 0)) - m2;
    }
  }
}

void quantize_q5_k(const float* src, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ5K*>(dst);
  for (int64_t i = 0; i < n / kQkK; ++i, src += kQkK) {
    float scales[8], mins[8], eff_scale[8], eff_min[8];
    uint8_t q[kQkK];
    for (int j = 0; j < 8; ++j) fit_affine(src + 32 * j, 32, 31, &scales[j], &mins[j], q + 32 * j);
    pack_k_scales(scales, mins, &b[i].d, &b[i].dmin, b[i].scales, eff_scale, eff_min);
    requantize_k(src, eff_scale, eff_min, 31, q);
    std::memset(b[i].qh, 0, sizeof(b[i].qh));
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        const uint8_t lo = q[64 * c + l], hi = q[64 * c + 32 + l];
        b[i].qs[32 * c + l] = static_cast<uint8_t>((lo & 0x0f) | ((hi & 0x0f) << 4));
        b[i].qh[l] |= static_cast<uint8_t>(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
      }
    }
  }
}

float dot_q5_k_q8_k_scalar(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ5K*>(w);
  const auto* y = static_cast<const BlockQ8K*>(a);
  float sum = 0;
  for (int64_t i = 0; i < n / kQkK; ++i) {
    uint8_t sc[8], m[8];
    unpack_k_scales(x[i].scales, sc, m);
    int32_t sum_q = 0, sum_m = 0;
    for (int c = 0; c < 4; ++c) {
      int32_t lo = 0, hi = 0;
      for (int l = 0; l < 32; ++l) {
        const int h = x[i].qh[l] >> (2 * c);
        lo += ((x[i].qs[32 * c + l] & 0x0f) | ((h & 1) << 4)) * y[i].qs[64 * c + l];
        hi += ((x[i].qs[32 * c + l] >> 4) | ((h & 2) << 3)) * y[i].qs[64 * c + 32 + l];
      }
      sum_q += sc[2 * c] * lo + sc[2 * c + 1] * hi;
    }
    for (int j = 0; j < 8; ++j) sum_m += m[j] * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
    sum += y[i].d * (fp16_to_fp32(x[i].d) * sum_q - fp16_to_fp32(x[i].dmin) * sum_m);
  }
  return sum;
}

// ---------------------------------------------------------------- Q6_K

// Level (0..63) of element e (0..255) of a Q6_K block: 128-element halves; within a half,
// quarter k of 32 takes its low nibble from ql[(k & 1) * 32 + l] (low for k < 2, high otherwise)
// and its top 2 bits from qh[l] bits 2k..2k+1.
inline int q6_level(const BlockQ6K& b, int e) {
  const int half = e / 128, k = (e % 128) / 32, l = e % 32;
  const uint8_t lbyte = b.ql[64 * half + (k & 1) * 32 + l];
  const int low = k < 2 ? (lbyte & 0x0f) : (lbyte >> 4);
  const int high = (b.qh[32 * half + l] >> (2 * k)) & 3;
  return low | (high << 4);
}

void dequantize_q6_k(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ6K*>(src);
  for (int64_t i = 0; i < n / kQkK; ++i, dst += kQkK) {
    const float d = fp16_to_fp32(b[i].d);
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = b[i].ql + 64 * half;
      const uint8_t* qh = b[i].qh + 32 * half;
      const int8_t* sc = b[i].scales + 8 * half;
      float* y = dst + 128 * half;
      for (int l = 0; l < 32; ++l) {
        const int g = l / 16;  // 16-element group within each 32-element quarter
        y[l] = d * sc[g] * (((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) - 32);
        y[l + 32] = d * sc[g + 2] * (((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32);
        y[l + 64] = d * sc[g + 4] * (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
        y[l + 96] = d * sc[g + 6] * (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
      }
    }
  }
}

void quantize_q6_k(const float* src, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ6K*>(dst);
  for (int64_t i = 0; i < n / kQkK; ++i, src += kQkK) {
    // Per 16-element group: symmetric scale with q in -32..31, searched around max / -32.
    float scales[16];
    for (int g = 0; g < 16; ++g) {
      const float* x = src + 16 * g;
      float amax = 0, max = 0;
      for (int l = 0; l < 16; ++l) if (std::fabs(x[l]) > amax) { amax = std::fabs(x[l]); max = x[l]; }
      scales[g] = 0;
      if (amax == 0) continue;
      double best_err = INFINITY;
      for (int step = -10; step <= 10; ++step) {
        const float iscale = -(32.f + 0.1f * step) / max;
        double sqx = 0, sqq = 0;
        for (int l = 0; l < 16; ++l) {
          const int q = std::clamp(nearest_int(iscale * x[l]), -32, 31);
          sqx += q * x[l]; sqq += q * q;
        }
        if (sqq == 0) continue;
        const double s = sqx / sqq;
        double err = 0;
        for (int l = 0; l < 16; ++l) {
          const int q = std::clamp(nearest_int(static_cast<float>(x[l] / s)), -32, 31);
          err += (s * q - x[l]) * (s * q - x[l]);
        }
        if (err < best_err) { best_err = err; scales[g] = static_cast<float>(s); }
      }
    }
    float max_scale = 0, amax_scale = 0;
    for (int g = 0; g < 16; ++g) {
      if (std::fabs(scales[g]) > amax_scale) { amax_scale = std::fabs(scales[g]); max_scale = scales[g]; }
    }
    std::memset(&b[i], 0, sizeof(BlockQ6K));
    if (amax_scale == 0) continue;
    const float iscale = -128.f / max_scale;
    for (int g = 0; g < 16; ++g) {
      b[i].scales[g] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[g])));
    }
    b[i].d = fp32_to_fp16(1.f / iscale);
    const float d = fp16_to_fp32(b[i].d);
    uint8_t q[kQkK];
    for (int e = 0; e < kQkK; ++e) {
      const float s = d * b[i].scales[e / 16];
      const int v = s != 0 ? nearest_int(src[e] / s) : 0;
      q[e] = static_cast<uint8_t>(std::clamp(v, -32, 31) + 32);
    }
    for (int half = 0; half < 2; ++half) {
      const uint8_t* qq = q + 128 * half;
      for (int l = 0; l < 32; ++l) {
        b[i].ql[64 * half + l] = static_cast<uint8_t>((qq[l] & 0x0f) | ((qq[l + 64] & 0x0f) << 4));
        b[i].ql[64 * half + l + 32] = static_cast<uint8_t>((qq[l + 32] & 0x0f) | ((qq[l + 96] & 0x0f) << 4));
        b[i].qh[32 * half + l] = static_cast<uint8_t>((qq[l] >> 4) | ((qq[l + 32] >> 4) << 2) |
                                                      ((qq[l + 64] >> 4) << 4) | ((qq[l + 96] >> 4) << 6));
      }
    }
  }
}

float dot_q6_k_q8_k_scalar(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ6K*>(w);
  const auto* y = static_cast<const BlockQ8K*>(a);
  float sum = 0;
  for (int64_t i = 0; i < n / kQkK; ++i) {
    int32_t s = 0;
    for (int g = 0; g < 16; ++g) {
      int32_t sg = 0;
      for (int l = 0; l < 16; ++l) sg += (q6_level(x[i], 16 * g + l) - 32) * y[i].qs[16 * g + l];
      s += x[i].scales[g] * sg;
    }
    sum += fp16_to_fp32(x[i].d) * y[i].d * static_cast<float>(s);
  }
  return sum;
}

// ---------------------------------------------------------------- dispatch

enum class Level { kScalar, kAvx2, kAvx512 };

// F16C is CPUID.1:ECX bit 29; asked directly because clang's __builtin_cpu_supports lacks "f16c".
bool cpu_has_f16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
  return (ecx >> 29) & 1u;
}

bool cpu_has_avx2() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
}
bool cpu_has_avx512() {
  return cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bf16");
}

Level best_level() {
  static const Level level = cpu_has_avx512() ? Level::kAvx512 : cpu_has_avx2() ? Level::kAvx2 : Level::kScalar;
  return level;
}

const char* level_name(Level l) {
  switch (l) {
    case Level::kAvx512: return "avx512";
    case Level::kAvx2: return "avx2";
    default: return "scalar";
  }
}

const internal::KernelSet& kernels_for(Level l) {
  switch (l) {
    case Level::kAvx512: return internal::avx512_kernels();
    case Level::kAvx2: return internal::avx2_kernels();
    default: return internal::scalar_kernels();
  }
}

VecDotX4Fn pick_x4(const internal::KernelSet& k, GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0: return k.q4_0_q8_0_x4;
    case GgmlType::Q8_0: return k.q8_0_q8_0_x4;
    case GgmlType::Q4_K: return k.q4_k_q8_k_x4;
    case GgmlType::Q6_K: return k.q6_k_q8_k_x4;
    case GgmlType::Q4_1: return k.q4_1_q8_1_x4;
    case GgmlType::Q5_0: return k.q5_0_q8_0_x4;
    case GgmlType::Q5_1: return k.q5_1_q8_1_x4;
    case GgmlType::IQ4_NL: return k.iq4_nl_q8_0_x4;
    case GgmlType::Q2_K: return k.q2_k_q8_k_x4;
    case GgmlType::Q3_K: return k.q3_k_q8_k_x4;
    case GgmlType::IQ4_XS: return k.iq4_xs_q8_k_x4;
    default: return nullptr;
  }
}

VecDotFn pick(const internal::KernelSet& k, GgmlType t) {
  switch (t) {
    case GgmlType::F32: return k.f32_f32;
    case GgmlType::F16: return k.f16_f16;
    case GgmlType::BF16: return k.bf16_bf16;
    case GgmlType::Q4_0: return k.q4_0_q8_0;
    case GgmlType::Q8_0: return k.q8_0_q8_0;
    case GgmlType::Q4_K: return k.q4_k_q8_k;
    case GgmlType::Q5_K: return k.q5_k_q8_k;
    case GgmlType::Q6_K: return k.q6_k_q8_k;
    case GgmlType::Q4_1: return k.q4_1_q8_1;
    case GgmlType::Q5_0: return k.q5_0_q8_0;
    case GgmlType::Q5_1: return k.q5_1_q8_1;
    case GgmlType::IQ4_NL: return k.iq4_nl_q8_0;
    case GgmlType::Q2_K: return k.q2_k_q8_k;
    case GgmlType::Q3_K: return k.q3_k_q8_k;
    case GgmlType::IQ4_XS: return k.iq4_xs_q8_k;
    default: return nullptr;
  }
}

struct Table {
  Level level;
  QuantOps entries[15];
};

Table make_table() {
  const internal::KernelSet& s = internal::scalar_kernels();
  Table t{best_level(),
          {
              {GgmlType::F32, dequantize_f32, quantize_f32, GgmlType::F32, nullptr, s.f32_f32, nullptr},
              {GgmlType::F16, dequantize_f16, quantize_f16, GgmlType::F16, nullptr, s.f16_f16, nullptr},
              {GgmlType::BF16, dequantize_bf16, quantize_bf16, GgmlType::BF16, nullptr, s.bf16_bf16, nullptr},
              {GgmlType::Q4_0, dequantize_q4_0, quantize_q4_0, GgmlType::Q8_0, nullptr, s.q4_0_q8_0, nullptr},
              {GgmlType::Q8_0, dequantize_q8_0, quantize_q8_0, GgmlType::Q8_0, nullptr, s.q8_0_q8_0, nullptr},
              {GgmlType::Q4_K, dequantize_q4_k, quantize_q4_k, GgmlType::Q8_K, nullptr, s.q4_k_q8_k, nullptr},
              {GgmlType::Q5_K, dequantize_q5_k, quantize_q5_k, GgmlType::Q8_K, nullptr, s.q5_k_q8_k, nullptr},
              {GgmlType::Q6_K, dequantize_q6_k, quantize_q6_k, GgmlType::Q8_K, nullptr, s.q6_k_q8_k, nullptr},
              {GgmlType::Q4_1, internal::dequantize_q4_1, internal::quantize_q4_1, GgmlType::Q8_1, nullptr, s.q4_1_q8_1, nullptr},
              {GgmlType::Q5_0, internal::dequantize_q5_0, internal::quantize_q5_0, GgmlType::Q8_0, nullptr, s.q5_0_q8_0, nullptr},
              {GgmlType::Q5_1, internal::dequantize_q5_1, internal::quantize_q5_1, GgmlType::Q8_1, nullptr, s.q5_1_q8_1, nullptr},
              {GgmlType::IQ4_NL, internal::dequantize_iq4_nl, internal::quantize_iq4_nl, GgmlType::Q8_0, nullptr, s.iq4_nl_q8_0, nullptr},
              {GgmlType::Q2_K, internal::dequantize_q2_k, internal::quantize_q2_k, GgmlType::Q8_K, nullptr,
               s.q2_k_q8_k, nullptr},
              {GgmlType::Q3_K, internal::dequantize_q3_k, internal::quantize_q3_k, GgmlType::Q8_K, nullptr,
               s.q3_k_q8_k, nullptr},
              {GgmlType::IQ4_XS, internal::dequantize_iq4_xs, internal::quantize_iq4_xs, GgmlType::Q8_K, nullptr,
               s.iq4_xs_q8_k, nullptr},
          }};
  for (QuantOps& e : t.entries) {
    e.vec_dot = pick(kernels_for(t.level), e.type);
    e.vec_dot_x4 = pick_x4(kernels_for(t.level), e.type);
  }
  return t;
}

Table& table() {
  static Table t = make_table();
  return t;
}

bool parse_level(const char* name, Level* out) {
  const std::string s = name != nullptr ? name : "";
  if (s == "scalar") { *out = Level::kScalar; return true; }
  if (s == "avx2") { *out = Level::kAvx2; return true; }
  if (s == "avx512") { *out = Level::kAvx512; return true; }
  return false;
}

}  // namespace

namespace internal {
const KernelSet& scalar_kernels() {
  static const KernelSet k{dot_q4_0_q8_0_scalar, dot_q8_0_q8_0_scalar, dot_q4_k_q8_k_scalar,
                           dot_q5_k_q8_k_scalar, dot_q6_k_q8_k_scalar, dot_f16_scalar,
                           dot_bf16_scalar,      dot_f32_scalar,
                           nullptr,              nullptr,
                           nullptr,              nullptr,
                           quantize_activation_q8_0, quantize_row_q8_k,
                           internal::dot_q4_1_q8_1_scalar, internal::dot_q5_0_q8_0_scalar,
                           internal::dot_q5_1_q8_1_scalar, internal::dot_iq4_nl_q8_0_scalar,
                           nullptr, nullptr, nullptr, nullptr, internal::quantize_activation_q8_1,
                           dot_q2_k_q8_k_scalar, dot_q3_k_q8_k_scalar, dot_iq4_xs_q8_k_scalar,
                           nullptr,              nullptr,              nullptr};
  return k;
}
}  // namespace internal

const QuantOps* ops(GgmlType t) {
  for (const QuantOps& e : table().entries) {
    if (e.type == t) return &e;
  }
  return nullptr;
}

const char* simd_level() { return level_name(table().level); }
const char* best_simd_level() { return level_name(best_level()); }

void force_simd_level(const char* level) {
  Level l;
  if (!parse_level(level, &l) || l > best_level()) return;
  Table& t = table();
  t.level = l;
  for (QuantOps& e : t.entries) {
    e.vec_dot = pick(kernels_for(l), e.type);
    e.vec_dot_x4 = pick_x4(kernels_for(l), e.type);
  }
}

VecDotFn vec_dot_for_level(GgmlType t, const char* level) {
  Level l;
  if (!parse_level(level, &l) || l > best_level()) return nullptr;
  return pick(kernels_for(l), t);
}

void quantize_row_q8_k(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ8K*>(dst);
  for (int64_t i = 0; i < n / kQkK; ++i, x += kQkK) {
    float amax = 0, max = 0;
    for (int j = 0; j < kQkK; ++j) {
      if (std::fabs(x[j]) > amax) { amax = std::fabs(x[j]); max = x[j]; }
    }
    if (amax == 0) {
      std::memset(&b[i], 0, sizeof(BlockQ8K));
      continue;
    }
    // ggml's rule: the signed extreme maps to -127 (so d is negative when it is positive).
    const float iscale = -127.f / max;
    for (int j = 0; j < kQkK; ++j) b[i].qs[j] = static_cast<int8_t>(std::min(127, nearest_int(iscale * x[j])));
    for (int g = 0; g < kQkK / 16; ++g) {
      int sum = 0;
      for (int l = 0; l < 16; ++l) sum += b[i].qs[16 * g + l];
      b[i].bsums[g] = static_cast<int16_t>(sum);
    }
    b[i].d = 1 / iscale;
  }
}

void dequantize_row_q8_k(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ8K*>(src);
  for (int64_t i = 0; i < n / kQkK; ++i) {
    for (int j = 0; j < kQkK; ++j) *dst++ = b[i].d * b[i].qs[j];
  }
}

void quantize_activation(GgmlType vec_dot_type, const float* x, void* dst, int64_t n) {
  switch (vec_dot_type) {
    case GgmlType::F32: quantize_f32(x, dst, n); return;
    case GgmlType::F16: quantize_f16(x, dst, n); return;
    case GgmlType::BF16: quantize_bf16(x, dst, n); return;
    case GgmlType::Q8_0: kernels_for(table().level).act_q8_0(x, dst, n); return;
    case GgmlType::Q8_1: kernels_for(table().level).act_q8_1(x, dst, n); return;
    case GgmlType::Q8_K: kernels_for(table().level).act_q8_k(x, dst, n); return;
    default: FLEA_CHECK(false, std::string("no activation format ") + type_info(vec_dot_type).name);
  }
}

size_t activation_row_bytes(GgmlType vec_dot_type, int64_t n) {
  return row_bytes(type_info(vec_dot_type), n);
}

}  // namespace flea::quant
