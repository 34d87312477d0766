// Internal to quant/: scalar dequantize / quantize / reference dot of the four 32-element types
// Q4_1, Q5_0, Q5_1 and IQ4_NL (defined in quant_q32.cpp). Their dot products take Q8_0
// activations, so the min term of Q4_1 / Q5_1 is m * d_a * (sum of the activation's levels).
#pragma once

#include <cstdint>

namespace flea::quant::internal {

void dequantize_q4_1(const void* src, float* dst, int64_t n);
void dequantize_q5_0(const void* src, float* dst, int64_t n);
void dequantize_q5_1(const void* src, float* dst, int64_t n);
void dequantize_iq4_nl(const void* src, float* dst, int64_t n);

void quantize_q4_1(const float* src, void* dst, int64_t n);
void quantize_q5_0(const float* src, void* dst, int64_t n);
void quantize_q5_1(const float* src, void* dst, int64_t n);
void quantize_iq4_nl(const float* src, void* dst, int64_t n);

float dot_q4_1_q8_0_scalar(int64_t n, const void* w, const void* a);
float dot_q5_0_q8_0_scalar(int64_t n, const void* w, const void* a);
float dot_q5_1_q8_0_scalar(int64_t n, const void* w, const void* a);
float dot_iq4_nl_q8_0_scalar(int64_t n, const void* w, const void* a);

}  // namespace flea::quant::internal
