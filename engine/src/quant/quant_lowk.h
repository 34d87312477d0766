// Internal to quant/: scalar reference code of the low-bit 256-element types Q2_K, Q3_K and
// IQ4_XS (quant_lowk.cpp), for the dispatch table in quant.cpp.
#pragma once

#include <cstdint>

namespace flea::quant::internal {

void dequantize_q2_k(const void* src, float* dst, int64_t n);
void quantize_q2_k(const float* src, void* dst, int64_t n);
float dot_q2_k_q8_k_scalar(int64_t n, const void* w, const void* a);

void dequantize_q3_k(const void* src, float* dst, int64_t n);
void quantize_q3_k(const float* src, void* dst, int64_t n);
float dot_q3_k_q8_k_scalar(int64_t n, const void* w, const void* a);

void dequantize_iq4_xs(const void* src, float* dst, int64_t n);
void quantize_iq4_xs(const float* src, void* dst, int64_t n);
float dot_iq4_xs_q8_k_scalar(int64_t n, const void* w, const void* a);

// Six-bit scale j (0..15) of a Q3_K block's 12-byte scale field, 0..63 (the format subtracts 32).
inline int q3_k_scale(const uint8_t* packed, int j) {
  const int low = j < 8 ? (packed[j] & 0x0f) : (packed[j - 8] >> 4);
  const int high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
  return low | (high << 4);
}

// Six-bit scale j (0..7) of an IQ4_XS block, 0..63 (the format subtracts 32).
inline int iq4_xs_scale(uint16_t scales_h, const uint8_t* scales_l, int j) {
  return ((scales_l[j / 2] >> (4 * (j % 2))) & 0x0f) | (((scales_h >> (2 * j)) & 3) << 4);
}

}  // namespace flea::quant::internal
