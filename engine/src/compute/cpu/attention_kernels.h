// The per-ISA halves of attention.cpp: each kernel computes the n_gqa query heads of one KV head
// for some rows of one sequence. attention.cpp splits the batch into such tasks.
#pragma once

#include <cstdint>

#include "compute/cpu/attention.h"

namespace flea::cpu::internal {

struct AttentionKernels {
  // Rows rows[0..n) (one sequence, ascending positions) against blocks of keys with an online softmax.
  void (*block)(const AttentionBatch& b, const int64_t* rows, int64_t n, int64_t kvh);
  // One row: scores over all its keys, softmax, weighted sum of values.
  void (*single)(const AttentionBatch& b, int64_t row, int64_t kvh);
  // Query vectors a block task is sized for (block rows = max(1, this / n_gqa)).
  int64_t block_queries;
};

const AttentionKernels& attention_scalar();
const AttentionKernels& attention_avx2();
const AttentionKernels& attention_avx512();

}  // namespace flea::cpu::internal
