// Batched quantized matmul on AMX-INT8 tiles (Intel Sapphire Rapids and later).
//
// For prompt processing (many activation rows against the same weights) the tile unit computes
// 16x16 int32 blocks of level products (TDPBSSD) at a rate the AVX-512 VNNI dots cannot: the
// weights of 16 rows are unpacked once per call into int8 levels with one float scale (and, for the
// affine types, one float min) per sub-block, the activations quantized as the VNNI path does
// (Q8_0 / Q8_1 / Q8_K, so the integer parts are llama.cpp's) are laid out in the tiles' 4-byte
// column groups, and each sub-block's 16x16 integer block is scaled into float accumulators:
//   out[t][r] = sum_s sw[r][s] * sa[t][s] * I[r][t][s] + mw[r][s] * asum[t][s]
// (I = integer dot of sub-block s; asum = the activation sub-block's value sum, for the mins).
// Results equal the VNNI kernels' up to float summation order (not bit-identical).
#pragma once

#include <cstddef>
#include <cstdint>

#include "compute/cpu/matmul.h"
#include "compute/cpu/thread_pool.h"
#include "quant/types.h"

namespace flea::cpu::amx {

// The CPU has AMX-TILE and AMX-INT8 (CPUID.7.0:EDX bits 24, 25), the AVX-512 level the epilogue
// uses, and Linux granted this process the tile state (arch_prctl ARCH_REQ_XCOMP_PERM, Linux 5.16+).
bool available();
// "granted", or why not: "no amx_tile/amx_int8 in CPUID", "no AVX-512", "arch_prctl: ...".
const char* availability();

// Whether cpu::matmul uses the tiles for batches: available(), the AVX-512 level in force (not
// lowered by quant::force_simd_level) and not switched off, either by set_enabled(false) or by
// FLEA_AMX=0 (or off) in the environment (read once).
bool enabled();
// Tests and benchmarks force either path; returns the previous setting of the switch. Not
// thread-safe with running matmuls.
bool set_enabled(bool on);

// Whether the tile kernel handles weights of type t (the types whose blocks are int8 levels with
// per-sub-block scales: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q4_K, Q5_K, Q6_K, IQ4_XS).
bool supports(GgmlType t);

// Batches of at least this many rows of weights of type t go to the tiles; smaller ones run the
// VNNI dots, which win there (quant_bench matmul4096 vs matmul4096_amx, user CPU, 1 thread, 4096 x
// 4096: at 8 rows the tiles take 0.55-0.69x the dots' time for Q8_0, Q4_0, Q5_K, IQ4_XS but
// 1.15x (Q4_K) and 1.37x (Q6_K); at 16 rows 0.35-0.66x for all of them).
constexpr int64_t kMinTokens = 8;
int64_t min_tokens(GgmlType t);

// out[t * rows + r] = dot(W row r, x_t) for n_tokens rows of activations `act`, already quantized
// to quant::ops(w.type)->vec_dot_type (act_row_bytes apart). Requires enabled() && supports(w.type).
void matmul(const WeightView& w, const uint8_t* act, size_t act_row_bytes, int64_t n_tokens, float* out,
            ThreadPool* pool);

}  // namespace flea::cpu::amx
