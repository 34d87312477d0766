// AVX-512 attention kernels: 16 query vectors per register (attention_x86_impl.h).
// GCC 12 warns about _mm512_undefined_* inside its own avx512fintrin.h (a known false positive).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define FLEA_ATTN_ISA_NS avx512
#define FLEA_ATTN_WIDTH 16
#include "compute/cpu/attention_x86_impl.h"

namespace flea::cpu::internal {

const AttentionKernels& attention_avx512() {
  static const AttentionKernels k{avx512::block, avx512::single, 4 * avx512::kW};
  return k;
}

}  // namespace flea::cpu::internal
