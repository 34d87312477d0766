// AVX2 + FMA + F16C attention kernels: 8 query vectors per register (attention_x86_impl.h).
#define FLEA_ATTN_ISA_NS avx2
#define FLEA_ATTN_WIDTH 8
#include "compute/cpu/attention_x86_impl.h"

namespace flea::cpu::internal {

const AttentionKernels& attention_avx2() {
  static const AttentionKernels k{avx2::block, avx2::single, 4 * avx2::kW};
  return k;
}

}  // namespace flea::cpu::internal
