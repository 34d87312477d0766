// Internal to quant/: the per-ISA dot kernel sets (defined in quant_avx2.cpp / quant_avx512.cpp,
// which alone are compiled with ISA flags) and small helpers shared by every level.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "quant/fp16.h"
#include "quant/quant.h"

namespace flea::quant::internal {

struct KernelSet {
  VecDotFn q4_0_q8_0;
  VecDotFn q8_0_q8_0;
  VecDotFn q4_k_q8_k;
  VecDotFn q5_k_q8_k;
  VecDotFn q6_k_q8_k;
  VecDotFn f16_f16;
  VecDotFn bf16_bf16;
  VecDotFn f32_f32;
  // 4-token forms (nullptr where the level has none).
  VecDotX4Fn q4_0_q8_0_x4;
  VecDotX4Fn q8_0_q8_0_x4;
  VecDotX4Fn q4_k_q8_k_x4;
  VecDotX4Fn q6_k_q8_k_x4;
  // Activation quantizers (bit-identical across levels).
  QuantizeFn act_q8_0;
  QuantizeFn act_q8_k;
  // 32-element formats (quant_q32.cpp, quant_x86_q32_impl.h); Q4_1 / Q5_1 take Q8_1 activations.
  VecDotFn q4_1_q8_1;
  VecDotFn q5_0_q8_0;
  VecDotFn q5_1_q8_1;
  VecDotFn iq4_nl_q8_0;
  VecDotX4Fn q4_1_q8_1_x4;
  VecDotX4Fn q5_0_q8_0_x4;
  VecDotX4Fn q5_1_q8_1_x4;
  VecDotX4Fn iq4_nl_q8_0_x4;
  QuantizeFn act_q8_1;
  // Low-bit 256-element types (quant_lowk.cpp, quant_x86_lowk_impl.h).
  VecDotFn q2_k_q8_k;
  VecDotFn q3_k_q8_k;
  VecDotFn iq4_xs_q8_k;
  VecDotX4Fn q2_k_q8_k_x4;
  VecDotX4Fn q3_k_q8_k_x4;
  VecDotX4Fn iq4_xs_q8_k_x4;
};

const KernelSet& scalar_kernels();
const KernelSet& avx2_kernels();    // call only when the CPU has AVX2+FMA+F16C
const KernelSet& avx512_kernels();  // call only when the CPU has AVX-512 F/BW/VL/VNNI/BF16

// Unpacks the 12-byte Q4_K/Q5_K scale field into 8 six-bit scales and 8 six-bit mins.
// Bytes 0-3: low 6 bits = scale 0-3, top 2 bits = high bits of scale 4-7; bytes 4-7 likewise for
// the mins; bytes 8-11: low nibble = low 4 bits of scale 4-7, high nibble = low 4 bits of min 4-7.
inline void unpack_k_scales(const uint8_t* packed, uint8_t* sc, uint8_t* m) {
  uint32_t u[3];
  std::memcpy(u, packed, 12);
  const uint32_t s03 = u[0] & 0x3f3f3f3fu;
  const uint32_t m03 = u[1] & 0x3f3f3f3fu;
  const uint32_t s47 = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
  const uint32_t m47 = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
  std::memcpy(sc, &s03, 4);
  std::memcpy(sc + 4, &s47, 4);
  std::memcpy(m, &m03, 4);
  std::memcpy(m + 4, &m47, 4);
}

// Round to nearest, ties to even (what the SIMD round instructions and ggml's nearest_int do).
inline int nearest_int(float v) {
  float shifted = v + 12582912.f;  // 1.5 * 2^23: pushes the fraction out of the mantissa
  int32_t bits;
  std::memcpy(&bits, &shifted, 4);
  return (bits & 0x007fffff) - 0x00400000;
}

// One 32-value block of a Q8_0/Q8_1 activation as llama.cpp rounds it: d = amax / 127 (stored as
// fp16 in *d_fp16), q = round-half-even(x * 127 / amax). Returns the unrounded d (Q8_1's block sum is
// fp16(d * sum q) with it) and the sum of the levels.
inline float quantize_block_q8(const float* x, uint16_t* d_fp16, int8_t* qs, int32_t* level_sum) {
  float amax = 0;
  for (int j = 0; j < kQk0; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.f;
  *d_fp16 = fp32_to_fp16(d);
  const float id = amax != 0 ? 127.f / amax : 0.0f;
  int32_t sum = 0;
  for (int j = 0; j < kQk0; ++j) {
    qs[j] = static_cast<int8_t>(nearest_int(x[j] * id));
    sum += qs[j];
  }
  *level_sum = sum;
  return d;
}

}  // namespace flea::quant::internal
