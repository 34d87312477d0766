// The CUDA matmul's chunk code (compute/cuda/chunk_dot.h) run on the host over one weight row:
// the reference the GPU tests compare the device build with, and what cuda_chunk_test checks.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>

#include "compute/cuda/chunk_dot.h"
#include "quant/types.h"

namespace flea::test {

template <class Tr>
float chunk_row_dot(const uint8_t* w, const cuda::chunk::ActQ8* acts, int64_t n_chunks) {
  float s = 0;
  for (int64_t c = 0; c < n_chunks; ++c) s += Tr::dot(Tr::load(w, c), acts[c]);
  return s;
}

// Σ over the row's chunks of the type's chunk dot; acts[c] holds chunk c's activations.
inline float chunk_row_dot(GgmlType t, const uint8_t* w, const cuda::chunk::ActQ8* acts, int64_t n_chunks) {
  using namespace cuda::chunk;
  switch (t) {
    case GgmlType::Q4_0: return chunk_row_dot<TQ4_0>(w, acts, n_chunks);
    case GgmlType::Q4_1: return chunk_row_dot<TQ4_1>(w, acts, n_chunks);
    case GgmlType::Q5_0: return chunk_row_dot<TQ5_0>(w, acts, n_chunks);
    case GgmlType::Q5_1: return chunk_row_dot<TQ5_1>(w, acts, n_chunks);
    case GgmlType::Q8_0: return chunk_row_dot<TQ8_0>(w, acts, n_chunks);
    case GgmlType::IQ4_NL: return chunk_row_dot<TIQ4_NL>(w, acts, n_chunks);
    case GgmlType::Q2_K: return chunk_row_dot<TQ2_K>(w, acts, n_chunks);
    case GgmlType::Q3_K: return chunk_row_dot<TQ3_K>(w, acts, n_chunks);
    case GgmlType::Q4_K: return chunk_row_dot<TQ4_K>(w, acts, n_chunks);
    case GgmlType::Q5_K: return chunk_row_dot<TQ5_K>(w, acts, n_chunks);
    case GgmlType::Q6_K: return chunk_row_dot<TQ6_K>(w, acts, n_chunks);
    case GgmlType::IQ4_XS: return chunk_row_dot<TIQ4_XS>(w, acts, n_chunks);
    default: ADD_FAILURE() << "no chunk traits for " << type_info(t).name; return 0;
  }
}

}  // namespace flea::test
