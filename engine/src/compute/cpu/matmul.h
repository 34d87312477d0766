// Quantized matrix x activations on the CPU: out = W x for one token (generation) or a batch
// (prompt processing), with W in any compute-supported ggml type.
#pragma once

#include <cstdint>

#include "compute/cpu/thread_pool.h"
#include "quant/types.h"

namespace flea::cpu {

// Row-major rows of `cols` elements in ggml row layout (a GGUF tensor of shape [cols, rows]).
struct WeightView {
  GgmlType type;
  int64_t cols;
  int64_t rows;
  const uint8_t* data;
};

// out[t * rows + r] = dot(W row r, x[t * cols .. +cols]) for t in [0, n_tokens).
// x: (n_tokens, cols) floats; out: (n_tokens, rows). Activations are quantized once to the
// type's vec_dot_type; rows are split across `pool` (nullptr = calling thread only) in tiles that
// are each loaded once and reused for every token of the batch.
void matmul(const WeightView& w, const float* x, int64_t n_tokens, float* out, ThreadPool* pool);

// Dequantize row r of w into dst (cols floats): the token-embedding lookup.
void dequantize_row(const WeightView& w, int64_t r, float* dst);

}  // namespace flea::cpu
