// Deterministic synthetic LLaMA-family GGUF models at real shapes (`flea synth`): LLaMA 1/2,
// Llama 3 (rope_freqs.weight from the Llama 3.1 rope scaling) and Qwen2 (q/k/v biases, NeoX rope).
//
// The tensor table (names, GGUF shapes, order) follows llama.cpp's LLaMA files and the per-tensor
// type mix follows llama.cpp's quantizer (llama_tensor_get_type) for the chosen file type, so file
// sizes match real models. Weights are random but shaped like trained ones: every matrix element has
// mean ~0 and std ~1/sqrt(fan_in), token embeddings std ~1, norm weights 1 ± 0.1, so a forward pass
// stays finite with varying logits. Quantized blocks are written directly (random quants plus
// chosen scale fields); nothing is quantized from floats (except the token embedding blocks that an
// expert skew shifts, below). Every block's bytes are a pure function of (seed, tensor name, block
// index, skew), so output does not depend on chunking or threads, and the file is streamed in chunks:
// memory stays a few tens of MB at any model size.
//
// Expert skew (SynthOptions::expert_skew = S > 0, MoE shapes only): routing that behaves like a
// trained model's, with a few popular experts per layer, instead of the uniform routing of a noise
// router. Every token embedding row gets the same small component along a fixed seeded direction m
// (0.1 of the rows' rms, so the residual stream carries a part all tokens share into every layer),
// and each MoE layer's router row of expert e gets S * z_e * v, where v is m after that layer's
// ffn_norm weight, scaled so that the shared part of xn gives v . xn ~= 1 at every depth (the
// router's noise logits have std ~1), and z_e = -ln(rank_e) centred over the experts: a log-Zipf
// bias whose rank order is a seeded permutation per layer. Only token_embd (requantized) and
// ffn_gate_inp change, the file records S as flea.synth.expert_skew, and S = 0 writes exactly the
// bytes of a file without the option. Consecutive tokens share experts through the popularity alone
// (no topic structure): README.md has the measured figures.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "flea/status.h"
#include "gguf/gguf.h"
#include "quant/types.h"

namespace flea::synth {

struct SynthShape {
  std::string name = "custom";
  int64_t n_embd = 0;
  int64_t n_ff = 0;
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t n_vocab = 0;
  int64_t n_ctx = 2048;            // llama.context_length
  double rope_freq_base = 10000.0;
  double rms_eps = 1e-5;
  bool tied = false;               // no output.weight; token_embd doubles as the output matrix
  std::string arch = "llama";      // general.architecture (and the metadata key prefix): llama, qwen2
  bool qkv_bias = false;           // blk.N.attn_{q,k,v}.bias (qwen2)
  // Llama 3.1 rope scaling, written as rope_freqs.weight (factor 0: no tensor). The factors are
  // computed from these the way llama.cpp's converter does (see rope_freq_factors).
  double rope_scaling_factor = 0.0;
  double rope_low_freq_factor = 1.0;
  double rope_high_freq_factor = 4.0;
  int64_t rope_original_ctx = 8192;
  // Mixture of experts (n_expert 0: dense). MoE layers are those with (il + 1) % moe_every == 0; their
  // experts have feed-forward size n_ff_exp (n_ff stays the dense layers' size); llama4 adds a shared
  // expert. Routing of random weights is uniform-ish: the router is noise like every other matrix.
  int64_t n_expert = 0;
  int64_t n_expert_used = 0;
  int64_t n_ff_exp = 0;
  int64_t moe_every = 1;
  bool shared_expert = false;

  bool is_moe_layer(int64_t il) const { return n_expert > 0 && (il + 1) % moe_every == 0; }

  int64_t head_dim() const { return n_head > 0 ? n_embd / n_head : 0; }
  int64_t n_embd_kv() const { return head_dim() * n_head_kv; }
};

// Presets: tiny, pub, 1b, 7b, 13b, 70b, llama3-8b, llama3-70b, qwen2.5-7b, moe-tiny, mixtral-8x7b,
// llama4-tiny, llama4-scout. NotFound (listing the names) otherwise.
StatusOr<SynthShape> synth_preset(const std::string& name);
std::vector<std::string> synth_preset_names();
// InvalidArgument naming the field when a shape cannot form a valid llama.cpp LLaMA model.
Status validate_shape(const SynthShape& shape);

enum class FileType {
  F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K,
  IQ4_NL, IQ4_XS,
};
StatusOr<FileType> parse_file_type(const std::string& name);
const char* file_type_name(FileType t);
std::vector<std::string> file_type_names();
uint32_t llama_ftype_id(FileType t);  // general.file_type: llama.cpp's LLAMA_FTYPE_MOSTLY_* number

struct SynthTensor {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> ne;  // GGUF order, ne[0] first
  bool is_norm = false;     // 1 + 0.1·noise instead of zero-mean noise
  float stddev = 0.0f;      // target element std (zero-mean tensors)
  std::vector<float> values;  // fixed contents (rope_freqs.weight) instead of noise
  // Added to element i's noise: offset[i % offset.size()] (a multiple of ne[0]; set by the expert skew).
  std::vector<float> offset;
};

// The Llama 3.1 per-frequency rope divisors for head_dim/2 pairs: 1 for wavelengths below
// original_ctx / high_freq_factor, `factor` above original_ctx / low_freq_factor, a smooth blend
// in between (llama.cpp's convert_hf_to_gguf.py, LlamaModel.generate_extra_tensors, as a fact).
std::vector<float> rope_freq_factors(const SynthShape& shape);

// The tensor table in file order with llama.cpp's type choice for `type`.
StatusOr<std::vector<SynthTensor>> synth_tensor_plan(const SynthShape& shape, FileType type);
// The SentencePiece-style vocab: <unk>, <s>, </s>, <0x00>..<0xFF>, then made-up pieces.
std::vector<std::string> synth_vocab(int64_t n_vocab);
// A GGUF file's vocabulary (every tokenizer.* key), read with `flea synth --vocab FILE` to replace the
// synthetic one, so text round-trips through a real tokenizer. Its token count must equal n_vocab.
struct VocabSource {
  std::string path;
  int64_t n_tokens = 0;
  std::vector<std::pair<std::string, gguf::Value>> kvs;  // in file order
};
StatusOr<VocabSource> read_vocab_source(const std::string& path);

struct SynthOptions {
  SynthShape shape;
  FileType file_type = FileType::Q4_K_M;
  std::string out_path;
  uint64_t seed = 0;
  // >= 0, MoE shapes only: log-Zipf expert popularity (see the top of this file); 0 = noise router.
  double expert_skew = 0.0;
  std::string model_name;  // general.name; "flea-synth-<shape name>" when empty
  const VocabSource* vocab = nullptr;  // tokenizer.* keys to copy instead of the synthetic vocab
  int threads = 2;         // generator threads besides the writing thread (0 = generate inline)
  const std::atomic<bool>* cancel = nullptr;  // when set and true, stop with kCancelled
};

struct SynthProgress {
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;
  double elapsed_s = 0.0;
};
using ProgressFn = std::function<void(const SynthProgress&)>;

// Metadata key (FLOAT32) recording SynthOptions::expert_skew; written only when it is > 0.
inline constexpr const char* kExpertSkewKey = "flea.synth.expert_skew";

// Exact size of the file synth_model would write, computed without writing anything.
StatusOr<uint64_t> synth_planned_bytes(const SynthOptions& options);
// Writes the model to options.out_path (via a temporary name; nothing is left behind on error).
Status synth_model(const SynthOptions& options, const ProgressFn& progress = nullptr);

}  // namespace flea::synth
