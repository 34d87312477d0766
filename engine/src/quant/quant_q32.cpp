// Scalar reference code of the 32-element formats Q4_1, Q5_0, Q5_1 and IQ4_NL: dequantize,
// round-to-nearest quantizers (for synthetic models and tests), the dot products (against Q8_0
// activations, Q8_1 for Q4_1 / Q5_1) that the SIMD kernels in quant_x86_q32_impl.h are checked
// against, and the Q8_1 activation quantizer.
#include "quant/quant_q32.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/fp16.h"
#include "quant/quant.h"
#include "quant/quant_kernels.h"

namespace flea::quant::internal {
namespace {

// The 5-bit level of element j (0..31): low 4 bits from the Q4_0 nibble layout, fifth bit from
// bit j of the little-endian qh word.
inline int q5_level(const uint8_t* qs, uint32_t qh, int j) {
  const int low = j < 16 ? (qs[j] & 0x0f) : (qs[j - 16] >> 4);
  return low | static_cast<int>(((qh >> j) & 1u) << 4);
}

inline uint32_t load_qh(const uint8_t* qh) {
  uint32_t v;
  std::memcpy(&v, qh, 4);  // little-endian on every target this engine builds for
  return v;
}

// Packs 32 levels (0..31) into nibbles (element j low, j + 16 high) and a fifth-bit word.
void pack_q5(const uint8_t* q, uint8_t* qs, uint8_t* qh) {
  uint32_t h = 0;
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>((q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4));
  for (int j = 0; j < 32; ++j) h |= static_cast<uint32_t>(q[j] >> 4) << j;
  std::memcpy(qh, &h, 4);
}

// Affine fit value = d * q + m, q in 0..nmax, for the Q4_1 / Q5_1 quantizers: m = block minimum,
// d spans the range; the levels are rounded against the stored (fp16) d and m so that what is
// decoded is what was aimed at.
void quantize_affine(const float* x, int nmax, uint16_t* d_out, uint16_t* m_out, uint8_t* q) {
  float lo = x[0], hi = x[0];
  for (int j = 1; j < kQk0; ++j) { lo = std::min(lo, x[j]); hi = std::max(hi, x[j]); }
  *d_out = fp32_to_fp16((hi - lo) / nmax);
  *m_out = fp32_to_fp16(lo);
  const float d = fp16_to_fp32(*d_out), m = fp16_to_fp32(*m_out);
  const float id = d != 0 ? 1.0f / d : 0.0f;
  for (int j = 0; j < kQk0; ++j) q[j] = static_cast<uint8_t>(std::clamp(nearest_int((x[j] - m) * id), 0, nmax));
}

// Midpoints between adjacent IQ4_NL levels.
struct Iq4nlMidpoints {
  float v[15];
};
constexpr Iq4nlMidpoints iq4nl_midpoints() {
  Iq4nlMidpoints m{};
  for (int k = 0; k < 15; ++k) m.v[k] = (kIq4nlValues[k] + kIq4nlValues[k + 1]) * 0.5f;
  return m;
}
constexpr Iq4nlMidpoints kIq4nlMid = iq4nl_midpoints();

// Index of the IQ4_NL level nearest to v (ties to the lower level): the number of midpoints v
// exceeds. Branch-free, so the quantizer's scale search is not bound by the compare-and-branch
// latency chain of a binary search.
inline int nearest_iq4nl(float v) {
  int idx = 0;
  for (float m : kIq4nlMid.v) idx += v > m;
  return idx;
}

}  // namespace

// ---------------------------------------------------------------- Q4_1

void dequantize_q4_1(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ4_1*>(src);
  for (int64_t i = 0; i < n / kQk0; ++i, dst += kQk0) {
    const float d = fp16_to_fp32(b[i].d), m = fp16_to_fp32(b[i].m);
    for (int j = 0; j < kQk0 / 2; ++j) {
      dst[j] = d * (b[i].qs[j] & 0x0f) + m;
      dst[j + kQk0 / 2] = d * (b[i].qs[j] >> 4) + m;
    }
  }
}

void quantize_q4_1(const float* src, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ4_1*>(dst);
  for (int64_t i = 0; i < n / kQk0; ++i, src += kQk0) {
    uint8_t q[kQk0];
    quantize_affine(src, 15, &b[i].d, &b[i].m, q);
    for (int j = 0; j < kQk0 / 2; ++j) b[i].qs[j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
  }
}

// sum_j (d q_j + m) * d_a a_j = d d_a sum q_j a_j + m s, with s = d_a sum a_j from the Q8_1 block.
float dot_q4_1_q8_1_scalar(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ4_1*>(w);
  const auto* y = static_cast<const BlockQ8_1*>(a);
  float sum = 0;
  for (int64_t i = 0; i < n / kQk0; ++i) {
    int32_t s = 0;
    for (int j = 0; j < kQk0 / 2; ++j) {
      s += (x[i].qs[j] & 0x0f) * y[i].qs[j] + (x[i].qs[j] >> 4) * y[i].qs[j + 16];
    }
    sum += fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d) * static_cast<float>(s) +
           fp16_to_fp32(x[i].m) * fp16_to_fp32(y[i].s);
  }
  return sum;
}

// ---------------------------------------------------------------- Q5_0

void dequantize_q5_0(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ5_0*>(src);
  for (int64_t i = 0; i < n / kQk0; ++i, dst += kQk0) {
    const float d = fp16_to_fp32(b[i].d);
    const uint32_t qh = load_qh(b[i].qh);
    for (int j = 0; j < kQk0; ++j) dst[j] = d * (q5_level(b[i].qs, qh, j) - 16);
  }
}

// As Q4_0: the signed value of largest magnitude maps to level 0 (d = max / -16) exactly, and the
// other side gets the extra level.
void quantize_q5_0(const float* src, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ5_0*>(dst);
  for (int64_t i = 0; i < n / kQk0; ++i, src += kQk0) {
    float amax = 0, max = 0;
    for (int j = 0; j < kQk0; ++j) {
      if (std::fabs(src[j]) > amax) { amax = std::fabs(src[j]); max = src[j]; }
    }
    b[i].d = fp32_to_fp16(max / -16);
    const float d = fp16_to_fp32(b[i].d);
    const float id = d != 0 ? 1.0f / d : 0.0f;
    uint8_t q[kQk0];
    for (int j = 0; j < kQk0; ++j) q[j] = static_cast<uint8_t>(std::clamp(nearest_int(src[j] * id) + 16, 0, 31));
    pack_q5(q, b[i].qs, b[i].qh);
  }
}

float dot_q5_0_q8_0_scalar(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ5_0*>(w);
  const auto* y = static_cast<const BlockQ8_0*>(a);
  float sum = 0;
  for (int64_t i = 0; i < n / kQk0; ++i) {
    const uint32_t qh = load_qh(x[i].qh);
    int32_t s = 0;
    for (int j = 0; j < kQk0; ++j) s += (q5_level(x[i].qs, qh, j) - 16) * y[i].qs[j];
    sum += fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d) * static_cast<float>(s);
  }
  return sum;
}

// ---------------------------------------------------------------- Q5_1

void dequantize_q5_1(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockQ5_1*>(src);
  for (int64_t i = 0; i < n / kQk0; ++i, dst += kQk0) {
    const float d = fp16_to_fp32(b[i].d), m = fp16_to_fp32(b[i].m);
    const uint32_t qh = load_qh(b[i].qh);
    for (int j = 0; j < kQk0; ++j) dst[j] = d * q5_level(b[i].qs, qh, j) + m;
  }
}

void quantize_q5_1(const float* src, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ5_1*>(dst);
  for (int64_t i = 0; i < n / kQk0; ++i, src += kQk0) {
    uint8_t q[kQk0];
    quantize_affine(src, 31, &b[i].d, &b[i].m, q);
    pack_q5(q, b[i].qs, b[i].qh);
  }
}

float dot_q5_1_q8_1_scalar(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ5_1*>(w);
  const auto* y = static_cast<const BlockQ8_1*>(a);
  float sum = 0;
  for (int64_t i = 0; i < n / kQk0; ++i) {
    const uint32_t qh = load_qh(x[i].qh);
    int32_t s = 0;
    for (int j = 0; j < kQk0; ++j) s += q5_level(x[i].qs, qh, j) * y[i].qs[j];
    sum += fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d) * static_cast<float>(s) +
           fp16_to_fp32(x[i].m) * fp16_to_fp32(y[i].s);
  }
  return sum;
}

// ---------------------------------------------------------------- IQ4_NL

void dequantize_iq4_nl(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockIq4Nl*>(src);
  for (int64_t i = 0; i < n / kQk0; ++i, dst += kQk0) {
    const float d = fp16_to_fp32(b[i].d);
    for (int j = 0; j < kQk0 / 2; ++j) {
      dst[j] = d * kIq4nlValues[b[i].qs[j] & 0x0f];
      dst[j + kQk0 / 2] = d * kIq4nlValues[b[i].qs[j] >> 4];
    }
  }
}

// The signed extreme maps to the outermost level (-127), which fixes the scale's sign; then a
// few scales around that one are tried, each with its nearest-level assignment refitted by least
// squares (d = sum x v / sum v v), and the one with least squared error is kept. Levels are
// finally re-picked against the stored fp16 scale.
void quantize_iq4_nl(const float* src, void* dst, int64_t n) {
  auto* b = static_cast<BlockIq4Nl*>(dst);
  constexpr int kTries = 6;  // candidate extremes -127 + 3k, k in -kTries..kTries
  for (int64_t i = 0; i < n / kQk0; ++i, src += kQk0) {
    float amax = 0, max = 0;
    double sxx = 0;
    for (int j = 0; j < kQk0; ++j) {
      if (std::fabs(src[j]) > amax) { amax = std::fabs(src[j]); max = src[j]; }
      sxx += static_cast<double>(src[j]) * src[j];
    }
    if (amax == 0) {
      b[i].d = 0;
      std::memset(b[i].qs, 0x88, sizeof(b[i].qs));  // level 8 (+1) times 0
      continue;
    }
    float best_d = max / kIq4nlValues[0];
    double best_err = INFINITY;
    for (int k = -kTries; k <= kTries; ++k) {
      const float id = (kIq4nlValues[0] + 3.0f * k) / max;
      double sxv = 0, svv = 0;
      for (int j = 0; j < kQk0; ++j) {
        const int v = kIq4nlValues[nearest_iq4nl(src[j] * id)];
        sxv += static_cast<double>(src[j]) * v;
        svv += static_cast<double>(v) * v;
      }
      if (svv <= 0) continue;
      const double err = sxx - sxv * sxv / svv;  // residual of the least-squares d
      if (err < best_err) { best_err = err; best_d = static_cast<float>(sxv / svv); }
    }
    b[i].d = fp32_to_fp16(best_d);
    const float d = fp16_to_fp32(b[i].d);
    const float id = d != 0 ? 1.0f / d : 0.0f;
    for (int j = 0; j < kQk0 / 2; ++j) {
      b[i].qs[j] = static_cast<uint8_t>(nearest_iq4nl(src[j] * id) | (nearest_iq4nl(src[j + 16] * id) << 4));
    }
  }
}

float dot_iq4_nl_q8_0_scalar(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockIq4Nl*>(w);
  const auto* y = static_cast<const BlockQ8_0*>(a);
  float sum = 0;
  for (int64_t i = 0; i < n / kQk0; ++i) {
    int32_t s = 0;
    for (int j = 0; j < kQk0 / 2; ++j) {
      s += kIq4nlValues[x[i].qs[j] & 0x0f] * y[i].qs[j] + kIq4nlValues[x[i].qs[j] >> 4] * y[i].qs[j + 16];
    }
    sum += fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d) * static_cast<float>(s);
  }
  return sum;
}

// ---------------------------------------------------------------- Q8_1 activations

// As quantize_activation_q8_0 (id = 127 / amax, round half to even, d stored as fp16) plus
// s = fp16(d * sum q) with the unrounded d, as llama.cpp's x86 CPU backend computes it.
void quantize_activation_q8_1(const float* src, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ8_1*>(dst);
  for (int64_t i = 0; i < n / kQk0; ++i, src += kQk0) {
    int32_t sum;
    const float d = quantize_block_q8(src, &b[i].d, b[i].qs, &sum);
    b[i].s = fp32_to_fp16(d * static_cast<float>(sum));
  }
}

}  // namespace flea::quant::internal
