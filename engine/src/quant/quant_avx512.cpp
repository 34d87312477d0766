// AVX-512 kernels: the k-quants use the shared 256-bit kernels with VNNI's fused multiply-adds
// (on Zen 4 a 512-bit op costs two 256-bit ones, so the win is the fused instruction, not the
// width); the 32-element formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) take 16 blocks at a time
// on 512-bit registers (quant_x86_q32_impl.h), which amortizes their per-block scale work; the
// float formats use 512-bit loads, F16 conversion and BF16 dots.
// GCC 12 warns about _mm512_undefined_* inside its own avx512fintrin.h (a known false positive).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define FLEA_QUANT_ISA_NS avx512
#define FLEA_QUANT_VNNI 1
#include "quant/quant_x86_impl.h"
#include "quant/quant_x86_q32_impl.h"
#include "quant/quant_x86_lowk_impl.h"

namespace flea::quant::avx512 {
namespace {

float dot_f32_512(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const float*>(w);
  const auto* y = static_cast<const float*>(a);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(y + i + 16), acc1);
  }
  float sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  for (; i < n; ++i) sum += x[i] * y[i];
  return sum;
}

inline __m512 load_f16x16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

float dot_f16_512(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const uint16_t*>(w);
  const auto* y = static_cast<const uint16_t*>(a);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(load_f16x16(x + i), load_f16x16(y + i), acc0);
    acc1 = _mm512_fmadd_ps(load_f16x16(x + i + 16), load_f16x16(y + i + 16), acc1);
  }
  float sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  for (; i < n; ++i) sum += fp16_to_fp32(x[i]) * fp16_to_fp32(y[i]);
  return sum;
}

// vdpbf16ps: 32 bf16 pairs per instruction, products summed in fp32.
float dot_bf16_512(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const uint16_t*>(w);
  const auto* y = static_cast<const uint16_t*>(a);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    acc0 = _mm512_dpbf16_ps(acc0, (__m512bh)_mm512_loadu_si512(x + i), (__m512bh)_mm512_loadu_si512(y + i));
    acc1 = _mm512_dpbf16_ps(acc1, (__m512bh)_mm512_loadu_si512(x + i + 32),
                            (__m512bh)_mm512_loadu_si512(y + i + 32));
  }
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_dpbf16_ps(acc0, (__m512bh)_mm512_loadu_si512(x + i), (__m512bh)_mm512_loadu_si512(y + i));
  }
  float sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  for (; i < n; ++i) sum += bf16_to_fp32(x[i]) * bf16_to_fp32(y[i]);
  return sum;
}

}  // namespace
}  // namespace flea::quant::avx512

namespace flea::quant::internal {

const KernelSet& avx512_kernels() {
  static const KernelSet k{avx512::dot_q4_0_q8_0_grouped, avx512::dot_q8_0_q8_0_grouped, avx512::dot_q4_k_q8_k,
                           avx512::dot_q5_k_q8_k, avx512::dot_q6_k_q8_k, avx512::dot_f16_512,
                           avx512::dot_bf16_512,  avx512::dot_f32_512,
                           avx512::dot_q4_0_q8_0_grouped_x4, avx512::dot_q8_0_q8_0_grouped_x4, avx512::dot_q4_k_q8_k_x4,
                           avx512::dot_q6_k_q8_k_x4, avx512::quantize_act_q8_0,
                           avx512::quantize_act_q8_k,
                           avx512::dot_q4_1_q8_1, avx512::dot_q5_0_q8_0, avx512::dot_q5_1_q8_1,
                           avx512::dot_iq4_nl_q8_0, avx512::dot_q4_1_q8_1_x4, avx512::dot_q5_0_q8_0_x4,
                           avx512::dot_q5_1_q8_1_x4, avx512::dot_iq4_nl_q8_0_x4, avx512::quantize_act_q8_1,
                           avx512::dot_q2_k_q8_k, avx512::dot_q3_k_q8_k, avx512::dot_iq4_xs_q8_k,
                           avx512::dot_q2_k_q8_k_x4, avx512::dot_q3_k_q8_k_x4, avx512::dot_iq4_xs_q8_k_x4};
  return k;
}

}  // namespace flea::quant::internal
