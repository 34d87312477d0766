// AVX2 + FMA + F16C dot kernels (this file alone is compiled with those ISA flags; quant.cpp only
// calls in here after cpuid says the CPU has them).
#define FLEA_QUANT_ISA_NS avx2
#include "quant/quant_x86_impl.h"
#include "quant/quant_x86_q32_impl.h"
#include "quant/quant_x86_lowk_impl.h"

namespace flea::quant::internal {

const KernelSet& avx2_kernels() {
  static const KernelSet k{avx2::dot_q4_0_q8_0_grouped, avx2::dot_q8_0_q8_0_grouped, avx2::dot_q4_k_q8_k,
                           avx2::dot_q5_k_q8_k, avx2::dot_q6_k_q8_k, avx2::dot_f16_256,
                           avx2::dot_bf16_256,  avx2::dot_f32_256,
                           avx2::dot_q4_0_q8_0_grouped_x4, avx2::dot_q8_0_q8_0_grouped_x4, avx2::dot_q4_k_q8_k_x4,
                           avx2::dot_q6_k_q8_k_x4, avx2::quantize_act_q8_0,
                           avx2::quantize_act_q8_k,
                           avx2::dot_q4_1_q8_1, avx2::dot_q5_0_q8_0, avx2::dot_q5_1_q8_1,
                           avx2::dot_iq4_nl_q8_0, avx2::dot_q4_1_q8_1_x4, avx2::dot_q5_0_q8_0_x4,
                           avx2::dot_q5_1_q8_1_x4, avx2::dot_iq4_nl_q8_0_x4, avx2::quantize_act_q8_1,
                           avx2::dot_q2_k_q8_k, avx2::dot_q3_k_q8_k, avx2::dot_iq4_xs_q8_k,
                           avx2::dot_q2_k_q8_k_x4, avx2::dot_q3_k_q8_k_x4, avx2::dot_iq4_xs_q8_k_x4};
  return k;
}

}  // namespace flea::quant::internal
