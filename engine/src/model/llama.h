// LLaMA-architecture hyperparameters read from GGUF metadata and checked against the tensor table.
#pragma once

#include <cstdint>
#include <string>

#include "flea/status.h"
#include "gguf/gguf.h"

namespace flea {

// How RoPE pairs the values of a head: kNorm rotates (x[2i], x[2i+1]) (GGUF `llama`), kNeox rotates
// (x[i], x[i + n_rot/2]) (GGUF `qwen2`, GPT-NeoX). The files store Q/K rows in the order their
// architecture's rope expects, so no permutation is involved.
enum class RopeType { kNorm, kNeox };
const char* rope_type_name(RopeType t);

// What is optional, required or absent per architecture: one row per GGUF `general.architecture`.
enum class Presence { kAbsent, kOptional, kRequired };
// How router logits r become expert weights.
//   kSoftmaxRenorm (Mixtral): top-k of r, w = softmax over the chosen k, applied to the expert's output.
//   kSigmoidOnInput (Llama 4): top-k of r, w = sigmoid(r), not renormalised, applied to the expert's input.
enum class MoeGating { kNone, kSoftmaxRenorm, kSigmoidOnInput };
struct ArchInfo {
  const char* name;      // general.architecture, also the metadata key prefix
  RopeType rope_type;
  Presence qkv_bias;     // blk.N.attn_{q,k,v}.bias
  Presence rope_freqs;   // rope_freqs.weight: per-frequency divisors of the rope angle (Llama 3.1+)
  MoeGating gating;      // kNone: {arch}.expert_count must be absent or 0
  bool shared_expert;    // MoE layers also run blk.N.ffn_{gate,up,down}_shexp on every token
  // Llama 4's layer pattern (0 = not used). Every `nope_every`-th layer has no rope and scales q by the
  // attention temperature; the other (rope) layers attend within chunks of `attn_chunk` positions and
  // RMS-normalise each q and k head (no weight) after the rope.
  int nope_every;
  int64_t attn_chunk;
  bool qk_norm;
};
// nullptr when the engine does not run this architecture.
const ArchInfo* arch_info(const std::string& name);
// "llama, qwen2": for error messages.
std::string supported_archs();

struct LlamaHparams {
  const ArchInfo* arch = nullptr;
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
  bool qkv_bias = false;         // the file has blk.N.attn_{q,k,v}.bias (added before the rope)
  bool rope_freqs = false;       // the file has rope_freqs.weight ([n_rot / 2] F32)
  // Mixture of experts (0 = dense): every layer routes each token to n_expert_used of n_expert
  // experts of feed-forward size n_ff, weighted by the softmax of the router logits over the chosen
  // ones (Mixtral: softmax over all, top-k, renormalised to sum 1).
  int64_t n_expert = 0;
  int64_t n_expert_used = 0;
  int64_t n_ff_exp = 0;       // feed-forward size of each expert (and shared expert); n_ff is the dense one
  int64_t moe_every = 1;      // interleave_moe_layer_step: layers il with (il + 1) % moe_every == 0 are MoE
  MoeGating gating = MoeGating::kNone;
  bool shared_expert = false;
  int nope_every = 0;
  int64_t attn_chunk = 0;
  bool qk_norm = false;

  bool is_moe_layer(int64_t il) const { return n_expert > 0 && (il + 1) % moe_every == 0; }
  bool uses_rope(int64_t il) const { return nope_every == 0 || (il + 1) % nope_every != 0; }
  // First position a query at `pos` of layer il may attend to (chunked attention), else 0.
  int64_t first_visible(int64_t il, int64_t pos) const {
    return attn_chunk > 0 && uses_rope(il) ? pos / attn_chunk * attn_chunk : 0;
  }
  // Llama 4's NoPE layers scale q by 1 + 0.1 ln(floor((pos + 1) / 8192) + 1) (llama.cpp's constants).
  float attn_temperature(int64_t il, int64_t pos) const;
  RopeType rope_type = RopeType::kNorm;

  int64_t head_dim() const { return n_embd / n_head; }
  int64_t n_embd_kv() const { return head_dim() * n_head_kv; }
  int64_t n_gqa() const { return n_head / n_head_kv; }
};

// Reads and validates the hyperparameters: an architecture of the table above, required keys (under
// its own prefix) present with sane values, heads divide, block_count agrees with the blk.N tensors
// present, and every tensor's shape agrees with the metadata. A file the engine would compute wrongly
// (unknown architecture, mixture of experts, a rope scaling it does not implement) is refused.
// Errors name the key or tensor, the value and what was expected.
StatusOr<LlamaHparams> llama_hparams(const gguf::File& file);

std::string describe(const LlamaHparams& hp);

}  // namespace flea

// ---- the model and a decoding session ----------------------------------------------------------

#include <algorithm>
#include <memory>
#include <vector>

#include "compute/cpu/attention.h"
#include "model/weights.h"

namespace flea {
namespace cpu { class ThreadPool; }

// An opened GGUF LLaMA model: validated header, hyperparameters and where each tensor lives.
// Holds no tensor data; a WeightProvider supplies the bytes.
struct Model {
  gguf::File file;
  LlamaHparams hp;
  ModelLayout layout;  // points into `file`: a Model is not copyable

  static StatusOr<std::unique_ptr<Model>> open(const std::string& path);
  Model() = default;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;
};

// Per-layer timings the forward pass reports (acquire = time blocked waiting for the weights).
struct ForwardStats {
  std::vector<int64_t> acquire_ns;  // [n_layer]
  std::vector<int64_t> compute_ns;  // [n_layer]
  // MoE routing: rows routed to each expert of each layer ([n_layer][n_expert], empty for dense
  // layers).
  std::vector<std::vector<int64_t>> expert_rows;
  int64_t forward_calls = 0;
  void reset(int64_t n_layer);
};

// One row of a multi-sequence batch: `token` appended to sequence `seq`.
struct BatchRow {
  int32_t seq = 0;
  int32_t token = 0;
};

// Sequences being decoded on some compute backend (CPU: Session below; CUDA: compute/cuda/).
// eval() works on sequence 0; eval_batch() mixes rows of several sequences in one pass, so each
// layer's weights are fetched once for all of them.
class Evaluator {
 public:
  virtual ~Evaluator() = default;
  // Rows of the same sequence must appear in position order; logits rows follow `rows`.
  virtual Status eval_batch(const std::vector<BatchRow>& rows, std::vector<float>* logits, bool all_logits) {
    return unimplemented("this backend decodes one sequence at a time");
  }
  // Drops positions >= n_past of sequence `seq` (speculative decoding rolls back rejected drafts).
  virtual Status truncate(int seq, int64_t n_past) { return unimplemented("truncate"); }
  virtual int n_seq() const { return 1; }
  // Evaluates `tokens` at positions n_past() .. n_past() + n - 1 in one batch and appends their keys
  // and values to the cache. With `logits` non-null it receives [n × n_vocab] (all_logits) or
  // [n_vocab] (last position only).
  virtual Status eval(const std::vector<int32_t>& tokens, std::vector<float>* logits, bool all_logits) = 0;
  // Forgets the cache: the next eval starts at position 0.
  virtual void reset() = 0;
  virtual int64_t n_past() const = 0;
  virtual int64_t n_ctx() const = 0;
  virtual ForwardStats& stats() = 0;
};

// The CPU backend: KV cache (F16 or F32, resident in host memory) plus scratch buffers.
class Session : public Evaluator {
 public:
  // Room for n_ctx positions in each of n_seq sequences. Layers with chunked attention (Llama 4's
  // rope layers) keep only attn_chunk positions, the chunk a query can see, unless
  // `bound_chunked_kv` is false (tests compare the two). Keys and values are stored as kv_type
  // (F16: rounded to nearest even, like llama.cpp's default cache). A session of one pipeline stage
  // (`slice` not the whole model) holds the cache of its own layers only and runs eval_stage().
  Session(const Model& model, WeightProvider* weights, cpu::ThreadPool* pool, int64_t n_ctx, int n_seq = 1,
          bool bound_chunked_kv = true, cpu::KvType kv_type = cpu::KvType::kF16, const LayerSlice& slice = {});
  // Bytes of K and V cache held for every layer and sequence.
  uint64_t kv_cache_bytes() const;
  cpu::KvType kv_type() const { return kv_type_; }

  Status eval(const std::vector<int32_t>& tokens, std::vector<float>* logits, bool all_logits) override;
  Status eval_batch(const std::vector<BatchRow>& rows, std::vector<float>* logits, bool all_logits) override;
  // One pipeline stage's part of eval_batch: the rows' hidden states ([T × n_embd], row t = rows[t])
  // go through layers [slice.begin, slice.end). The first stage (slice.embed) makes them from the
  // tokens, the others read them from `hidden`; the last stage (slice.head) writes `logits` as
  // eval_batch does, the others leave the states in `hidden` for the next stage. Every stage sees the
  // same rows, so each keeps its sequences' positions itself. The whole-model slice is eval_batch.
  Status eval_stage(const std::vector<BatchRow>& rows, std::vector<float>* hidden, std::vector<float>* logits,
                    bool all_logits);
  const LayerSlice& slice() const { return slice_; }
  Status truncate(int seq, int64_t n_past) override;
  int n_seq() const override { return static_cast<int>(n_past_.size()); }
  void reset() override { std::fill(n_past_.begin(), n_past_.end(), 0); }
  int64_t n_past() const override { return n_past_[0]; }
  int64_t n_past(int seq) const { return n_past_[static_cast<size_t>(seq)]; }
  int64_t n_ctx() const override { return n_ctx_; }
  const ForwardStats& stats() const { return stats_; }
  ForwardStats& stats() override { return stats_; }

 private:
  void ensure_scratch(int64_t n_tokens);
  // The mixture-of-experts feed-forward of one layer: reads xn_, adds into x_; returns the time
  // spent blocked on experts the provider reads after routing.
  StatusOr<int64_t> moe_ffn(int64_t il, const std::array<const gguf::TensorInfo*, kLayerTensorCount>& lt, const LayerWeights& w,
               int64_t T);

  const Model& model_;
  LayerSlice slice_;  // end resolved to n_layer
  WeightProvider* weights_;
  cpu::ThreadPool* pool_;
  int64_t n_ctx_;
  std::vector<int64_t> n_past_;              // [n_seq] positions filled per sequence
  std::vector<int64_t> kv_slots_;            // [n_layer] positions each cache holds per sequence
  bool chunk_bounded_ = false;               // some layer holds fewer than n_ctx positions
  cpu::KvType kv_type_;
  // [n_layer][n_seq × slots × n_embd_kv] elements of kv_type_
  std::vector<std::vector<uint8_t>> k_cache_, v_cache_;
  std::vector<int64_t> pos_;                 // [T] position of each row of the current batch
  std::vector<int64_t> first_;               // [T] first position each row sees in the current layer
  std::vector<int32_t> seq_;                 // [T] sequence of each row
  // Scratch, sized for the largest batch seen: every buffer is [n_tokens × width].
  std::vector<float> x_, xn_, q_, k_, v_, att_, gate_, up_, scores_;
  std::vector<float> router_, expert_in_;  // MoE: (T, n_expert) logits; (rows of one expert, E) in/out
  int64_t scratch_tokens_ = 0;
  ForwardStats stats_;
};

// What a Session(n_ctx, n_seq) holds beside the weights, known before it exists (the residency
// planner sets it aside): the K/V cache, exactly what kv_cache_bytes() will report (chunk-bounded),
// and an estimate of the scratch of an eval of n_rows rows (activations, router logits) returning
// n_logit_rows rows of logits.
uint64_t session_kv_bytes(const LlamaHparams& hp, int64_t n_ctx, int n_seq, cpu::KvType kv_type = cpu::KvType::kF16);
uint64_t session_scratch_bytes(const LlamaHparams& hp, int64_t n_rows, int64_t n_logit_rows);

// Greedy argmax, lowest id on ties.
int32_t argmax(const float* logits, int64_t n);

}  // namespace flea
