// LLaMA-architecture hyperparameters read from GGUF metadata and checked against the tensor table.
#pragma once

#include <cstdint>
#include <string>

#include "flea/status.h"
#include "gguf/gguf.h"

namespace flea {

struct LlamaHparams {
  int64_t n_vocab = 0;
  int64_t n_ctx_train = 0;
  int64_t n_embd = 0;
  int64_t n_ff = 0;
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t n_rot = 0;          // rotary dimensions per head (rope.dimension_count)
  double rope_freq_base = 10000.0;
  double rope_freq_scale = 1.0;
  double rms_eps = 1e-5;
  bool tied_embeddings = false;  // no output.weight: token_embd is the output matrix

  int64_t head_dim() const { return n_embd / n_head; }
  int64_t n_embd_kv() const { return head_dim() * n_head_kv; }
  int64_t n_gqa() const { return n_head / n_head_kv; }
};

// Reads and validates the hyperparameters: architecture is llama, required keys present with sane
// values, heads divide, block_count agrees with the blk.N tensors present, and every tensor's shape
// agrees with the metadata. Errors name the key or tensor, the value and what was expected.
StatusOr<LlamaHparams> llama_hparams(const gguf::File& file);

std::string describe(const LlamaHparams& hp);

}  // namespace flea
