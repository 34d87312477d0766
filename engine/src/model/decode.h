// Decoding loops over an Evaluator: batched greedy decoding of several sequences (each streamed
// layer is fetched once per step for all of them) and greedy speculative decoding (a small draft
// model proposes k tokens; the target verifies them in one pass).
#pragma once

#include <cstdint>
#include <vector>

#include "model/llama.h"

namespace flea {

struct BatchedResult {
  std::vector<std::vector<int32_t>> tokens;  // [n_seq][n_gen]
  int64_t prompt_ns = 0;
  int64_t decode_ns = 0;  // all steps after the prompts
  int64_t steps = 0;      // forward passes after the prompts (each serves every sequence)
};

// Greedy-decodes n_gen tokens for each prompt; `s` must have n_seq() >= prompts.size().
StatusOr<BatchedResult> batched_greedy(Evaluator& s, const std::vector<std::vector<int32_t>>& prompts,
                                       int n_gen, int64_t n_vocab);

struct SpeculativeResult {
  std::vector<int32_t> tokens;  // identical to the target's own greedy continuation
  int64_t drafted = 0;          // tokens proposed by the draft
  int64_t accepted = 0;         // of those, accepted by the target
  int64_t target_passes = 0;    // target forward passes after the prompt
  int64_t draft_passes = 0;
  int64_t elapsed_ns = 0;       // after the prompts
  double acceptance_rate() const { return drafted ? static_cast<double>(accepted) / static_cast<double>(drafted) : 0.0; }
};

// Both evaluators start empty; the models must share a vocabulary of n_vocab tokens.
StatusOr<SpeculativeResult> speculative_greedy(Evaluator& target, Evaluator& draft,
                                               const std::vector<int32_t>& prompt, int n_gen, int k,
                                               int64_t n_vocab);

}  // namespace flea
