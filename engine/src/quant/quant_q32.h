// Internal to quant/: scalar dequantize / quantize / reference dot of the four 32-element types
// Q4_1, Q5_0, Q5_1 and IQ4_NL (defined in quant_q32.cpp), and the Q8_1 activation quantizer.
// Q5_0 and IQ4_NL dot Q8_0 activations; Q4_1 and Q5_1 dot Q8_1, whose s = fp16(d * sum(qs))
// gives their min term m * s as llama.cpp computes it (with Q8_0 and m * d_a * sum(qs) instead,
// the fp16 rounding of d against the unrounded d inside llama.cpp's s left logit NMSE ~2e-4 and
// one prompt at 96% top-1 on the reference models).
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

float dot_q4_1_q8_1_scalar(int64_t n, const void* w, const void* a);
float dot_q5_0_q8_0_scalar(int64_t n, const void* w, const void* a);
float dot_q5_1_q8_1_scalar(int64_t n, const void* w, const void* a);
float dot_iq4_nl_q8_0_scalar(int64_t n, const void* w, const void* a);

// Activations for Q4_1 / Q5_1: levels and d exactly as the Q8_0 activation rule, plus s.
void quantize_activation_q8_1(const float* src, void* dst, int64_t n);

}  // namespace flea::quant::internal
