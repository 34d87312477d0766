// Quantized block formats (bit-compatible with GGUF as llama.cpp writes and reads it), their
// dequantize / quantize routines and the dot-product kernels the CPU matmul runs on.
//
// One table entry per weight type (`ops(type)`): dequantize, quantize-from-float, the activation
// format its dot product wants (`vec_dot_type`) and the dot kernel for this CPU. Kernels are
// picked once at start-up from cpuid: AVX-512 (+VNNI/BF16) > AVX2 (+FMA/F16C) > scalar.
#pragma once

#include <cstddef>
#include <cstdint>

#include "quant/types.h"

namespace flea::quant {

constexpr int kQk0 = 32;   // elements per Q4_0 / Q8_0 block
constexpr int kQkK = 256;  // elements per k-quant super-block
constexpr int kKScaleBytes = 12;  // Q4_K / Q5_K: 8 six-bit scales + 8 six-bit mins

// value = d * (q - 8); qs[j] low nibble = element j, high nibble = element j + 16.
struct BlockQ4_0 {
  uint16_t d;  // fp16
  uint8_t qs[kQk0 / 2];
};
static_assert(sizeof(BlockQ4_0) == 18, "Q4_0 block is 18 bytes");

// value = d * q.
struct BlockQ8_0 {
  uint16_t d;  // fp16
  int8_t qs[kQk0];
};
static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block is 34 bytes");

// Activation format of the Q4_1 / Q5_1 dots: Q8_0 plus s = fp16(d * sum of qs), d being the
// unrounded amax / 127 (llama.cpp's rule; the min term of those dots is m * s).
struct BlockQ8_1 {
  uint16_t d;  // fp16
  uint16_t s;  // fp16
  int8_t qs[kQk0];
};
static_assert(sizeof(BlockQ8_1) == 36, "Q8_1 block is 36 bytes");

// 8 sub-blocks of 32: value = d * sc[j] * q - dmin * m[j], q in 0..15. Within each 64-element
// chunk c, qs[32c + l] holds element 64c + l in the low nibble and 64c + 32 + l in the high one.
struct BlockQ4K {
  uint16_t d;     // fp16 scale of the 6-bit sub-block scales
  uint16_t dmin;  // fp16 scale of the 6-bit sub-block mins
  uint8_t scales[kKScaleBytes];
  uint8_t qs[kQkK / 2];
};
static_assert(sizeof(BlockQ4K) == 144, "Q4_K block is 144 bytes");

// Q4_K plus a fifth bit: bit (2c) of qh[l] tops element 64c + l, bit (2c + 1) element 64c + 32 + l.
struct BlockQ5K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleBytes];
  uint8_t qh[kQkK / 8];
  uint8_t qs[kQkK / 2];
};
static_assert(sizeof(BlockQ5K) == 176, "Q5_K block is 176 bytes");

// 16 sub-blocks of 16: value = d * scales[j] * (q - 32), q in 0..63 (4 low bits in ql, 2 high in qh).
struct BlockQ6K {
  uint8_t ql[kQkK / 2];
  uint8_t qh[kQkK / 4];
  int8_t scales[kQkK / 16];
  uint16_t d;  // fp16
};
static_assert(sizeof(BlockQ6K) == 210, "Q6_K block is 210 bytes");

// value = d * q + m, q in 0..15; nibble layout as Q4_0.
struct BlockQ4_1 {
  uint16_t d;  // fp16
  uint16_t m;  // fp16
  uint8_t qs[kQk0 / 2];
};
static_assert(sizeof(BlockQ4_1) == 20, "Q4_1 block is 20 bytes");

// value = d * (q - 16), q in 0..31: low 4 bits as Q4_0, bit j of the little-endian uint32 qh is
// the fifth bit of element j.
struct BlockQ5_0 {
  uint16_t d;  // fp16
  uint8_t qh[4];
  uint8_t qs[kQk0 / 2];
};
static_assert(sizeof(BlockQ5_0) == 22, "Q5_0 block is 22 bytes");

// value = d * q + m, q in 0..31; bits as Q5_0.
struct BlockQ5_1 {
  uint16_t d;  // fp16
  uint16_t m;  // fp16
  uint8_t qh[4];
  uint8_t qs[kQk0 / 2];
};
static_assert(sizeof(BlockQ5_1) == 24, "Q5_1 block is 24 bytes");

// value = d * kIq4nlValues[q], q in 0..15; nibble layout as Q4_0.
struct BlockIq4Nl {
  uint16_t d;  // fp16
  uint8_t qs[kQk0 / 2];
};
static_assert(sizeof(BlockIq4Nl) == 18, "IQ4_NL block is 18 bytes");

// The 16 non-linear levels of IQ4_NL and IQ4_XS.
constexpr int8_t kIq4nlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                     1,    13,   25,  38,  53,  69,  89,  113};

// 16 sub-blocks of 16: value = d * (scales[j] & 15) * q - dmin * (scales[j] >> 4), q in 0..3.
// Within each 128-element half h, byte qs[32h + l] holds elements 128h + 32s + l in bits 2s..2s+1.
struct BlockQ2K {
  uint8_t scales[kQkK / 16];
  uint8_t qs[kQkK / 4];
  uint16_t d;     // fp16
  uint16_t dmin;  // fp16
};
static_assert(sizeof(BlockQ2K) == 84, "Q2_K block is 84 bytes");

// 16 sub-blocks of 16: value = d * (s[j] - 32) * (q - 4 * !hbit), q (2 low bits) in qs as Q2_K,
// hbit = bit (e / 32) of hmask[e % 32]; s[j] six-bit scales packed in 12 bytes: low nibbles in
// bytes 0-7 (j < 8 low nibble of byte j, j >= 8 high nibble of byte j - 8), high 2 bits in bytes
// 8-11 (bits 2(j / 4)... of byte 8 + j % 4).
struct BlockQ3K {
  uint8_t hmask[kQkK / 8];
  uint8_t qs[kQkK / 4];
  uint8_t scales[12];
  uint16_t d;  // fp16
};
static_assert(sizeof(BlockQ3K) == 110, "Q3_K block is 110 bytes");

// 8 sub-blocks of 32: value = d * (ls[j] - 32) * kIq4nlValues[q]; ls[j] six bits, low 4 in
// scales_l (nibble j % 2 of byte j / 2), high 2 in bits 2j..2j+1 of scales_h. Within sub-block j,
// qs[16j + l] holds element 32j + l in the low nibble and 32j + 16 + l in the high one.
struct BlockIq4Xs {
  uint16_t d;  // fp16
  uint16_t scales_h;
  uint8_t scales_l[kQkK / 64];
  uint8_t qs[kQkK / 2];
};
static_assert(sizeof(BlockIq4Xs) == 136, "IQ4_XS block is 136 bytes");

// Activation format of the k-quant dot products: value = d * q; bsums[g] = sum of qs[16g..16g+15].
struct BlockQ8K {
  float d;
  int8_t qs[kQkK];
  int16_t bsums[kQkK / 16];
};
static_assert(sizeof(BlockQ8K) == 292, "Q8_K block is 292 bytes");

using DequantizeFn = void (*)(const void* src, float* dst, int64_t n);  // n multiple of block size
using QuantizeFn = void (*)(const float* src, void* dst, int64_t n);    // float -> this type's blocks
// w: n elements of the weight type, a: n elements of its vec_dot_type.
using VecDotFn = float (*)(int64_t n, const void* w, const void* a);
// One weight row against kVecDotTokens activation rows `a_stride` bytes apart: out[t] = dot(w, a_t).
// Bit-identical to calling the same level's VecDotFn per token; the batch shares weight unpacking.
using VecDotX4Fn = void (*)(int64_t n, const void* w, const void* a, size_t a_stride, float* out);
constexpr int kVecDotTokens = 4;

struct QuantOps {
  GgmlType type;
  DequantizeFn dequantize;
  QuantizeFn quantize;     // reference quantizer (error-minimising search for the k-quants)
  GgmlType vec_dot_type;   // Q8_0 for Q4_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for k-quants, F16/BF16/F32 for floats
  VecDotFn vec_dot;        // fastest kernel for this CPU (or the level forced by force_simd_level)
  VecDotFn vec_dot_scalar; // portable reference kept for tests
  VecDotX4Fn vec_dot_x4;   // batched form of vec_dot; nullptr when this type/level has none
};

// nullptr when the type has no compute support.
const QuantOps* ops(GgmlType t);
// "avx512", "avx2" or "scalar": what ops() currently dispatches to.
const char* simd_level();
// The best level this CPU supports (independent of force_simd_level).
const char* best_simd_level();
// Tests and benchmarks: "scalar", "avx2", "avx512" (a level the CPU lacks is ignored).
// Not thread-safe with concurrent ops() users; call it between runs.
void force_simd_level(const char* level);
// The dot kernel of one explicit level for `t`, or nullptr when the CPU lacks that level.
VecDotFn vec_dot_for_level(GgmlType t, const char* level);

// Quantize n floats into the activation format `vec_dot_type` (Q8_0 / Q8_1 / Q8_K / F16 / BF16 / F32),
// rounding the way llama.cpp's CPU backend does so logits agree with it.
void quantize_activation(GgmlType vec_dot_type, const float* x, void* dst, int64_t n);
size_t activation_row_bytes(GgmlType vec_dot_type, int64_t n);

// Q8_K blocks are activation-only (no weight type uses them), so they get their own entry points.
void quantize_row_q8_k(const float* x, void* dst, int64_t n);
void dequantize_row_q8_k(const void* src, float* dst, int64_t n);

}  // namespace flea::quant
