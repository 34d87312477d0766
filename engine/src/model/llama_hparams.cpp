#include <cstdio>
#include <set>
#include <sstream>

#include "model/llama.h"
#include "model/weights.h"

namespace flea {
namespace {

Status bad(const gguf::File& f, const std::string& what, const std::string& value,
           const std::string& expected) {
  return invalid_argument(f.path + ": invalid LLaMA model: " + what + " = " + value + " (expected " +
                          expected + ")");
}

StatusOr<int64_t> positive_int(const gguf::File& f, const std::string& key, int64_t max) {
  FLEA_ASSIGN_OR_RETURN(int64_t v, f.get_int(key));
  if (v <= 0 || v > max) return bad(f, "'" + key + "'", std::to_string(v), "1.." + std::to_string(max));
  return v;
}

std::string shape_string(const gguf::TensorInfo& t) {
  std::string s = "[";
  for (uint32_t d = 0; d < t.n_dims; ++d) s += (d ? ", " : "") + std::to_string(t.ne[d]);
  return s + "]";
}

Status expect_shape(const gguf::File& f, const std::string& name, std::initializer_list<int64_t> shape) {
  const gguf::TensorInfo* t = f.find_tensor(name);
  if (!t) return bad(f, "tensor '" + name + "'", "missing", "present");
  std::vector<int64_t> want(shape);
  bool ok = t->n_dims == want.size();
  for (size_t d = 0; ok && d < want.size(); ++d) ok = t->ne[d] == want[d];
  if (!ok) {
    std::string w = "[";
    for (size_t d = 0; d < want.size(); ++d) w += (d ? ", " : "") + std::to_string(want[d]);
    return bad(f, "tensor '" + name + "' shape", shape_string(*t), w + "] from the metadata");
  }
  return ok_status();
}

}  // namespace

StatusOr<LlamaHparams> llama_hparams(const gguf::File& f) {
  FLEA_ASSIGN_OR_RETURN(std::string arch, f.get_string("general.architecture"));
  if (arch != "llama") return bad(f, "'general.architecture'", "\"" + arch + "\"", "\"llama\"");
  constexpr int64_t kMaxDim = 1 << 20;
  LlamaHparams hp;
  FLEA_ASSIGN_OR_RETURN(hp.n_embd, positive_int(f, "llama.embedding_length", kMaxDim));
  FLEA_ASSIGN_OR_RETURN(hp.n_ff, positive_int(f, "llama.feed_forward_length", 4 * kMaxDim));
  FLEA_ASSIGN_OR_RETURN(hp.n_layer, positive_int(f, "llama.block_count", 4096));
  FLEA_ASSIGN_OR_RETURN(hp.n_head, positive_int(f, "llama.attention.head_count", 16384));
  hp.n_head_kv = hp.n_head;
  if (f.find("llama.attention.head_count_kv")) {
    FLEA_ASSIGN_OR_RETURN(hp.n_head_kv, positive_int(f, "llama.attention.head_count_kv", 16384));
  }
  hp.n_ctx_train = 2048;
  if (f.find("llama.context_length")) {
    FLEA_ASSIGN_OR_RETURN(hp.n_ctx_train, positive_int(f, "llama.context_length", 1 << 24));
  }
  if (hp.n_embd % hp.n_head != 0) {
    return bad(f, "'llama.attention.head_count'", std::to_string(hp.n_head),
               "a divisor of embedding_length " + std::to_string(hp.n_embd));
  }
  if (hp.n_head % hp.n_head_kv != 0) {
    return bad(f, "'llama.attention.head_count_kv'", std::to_string(hp.n_head_kv),
               "a divisor of head_count " + std::to_string(hp.n_head));
  }
  hp.n_rot = hp.head_dim();
  if (f.find("llama.rope.dimension_count")) {
    FLEA_ASSIGN_OR_RETURN(hp.n_rot, f.get_int("llama.rope.dimension_count"));
    if (hp.n_rot <= 0 || hp.n_rot > hp.head_dim() || hp.n_rot % 2 != 0) {
      return bad(f, "'llama.rope.dimension_count'", std::to_string(hp.n_rot),
                 "an even number in 2.." + std::to_string(hp.head_dim()) + " (the head dimension)");
    }
  }
  if (f.find("llama.rope.freq_base")) {
    FLEA_ASSIGN_OR_RETURN(hp.rope_freq_base, f.get_float("llama.rope.freq_base"));
    if (!(hp.rope_freq_base > 0)) return bad(f, "'llama.rope.freq_base'", std::to_string(hp.rope_freq_base), "> 0");
  }
  if (f.find("llama.rope.scale_linear")) {
    FLEA_ASSIGN_OR_RETURN(double s, f.get_float("llama.rope.scale_linear"));
    if (!(s > 0)) return bad(f, "'llama.rope.scale_linear'", std::to_string(s), "> 0");
    hp.rope_freq_scale = 1.0 / s;
  }
  if (f.find("llama.attention.layer_norm_rms_epsilon")) {
    FLEA_ASSIGN_OR_RETURN(hp.rms_eps, f.get_float("llama.attention.layer_norm_rms_epsilon"));
    if (!(hp.rms_eps > 0 && hp.rms_eps < 1)) {
      return bad(f, "'llama.attention.layer_norm_rms_epsilon'", std::to_string(hp.rms_eps), "in (0, 1)");
    }
  }

  const gguf::TensorInfo* embd = f.find_tensor("token_embd.weight");
  if (!embd) return bad(f, "tensor 'token_embd.weight'", "missing", "present");
  if (embd->n_dims != 2) return bad(f, "tensor 'token_embd.weight' n_dims", std::to_string(embd->n_dims), "2");
  hp.n_vocab = embd->ne[1];
  if (const gguf::Value* toks = f.find("tokenizer.ggml.tokens")) {
    if (toks->type == gguf::ValueType::ARRAY && static_cast<int64_t>(toks->array_size()) != hp.n_vocab) {
      return bad(f, "'tokenizer.ggml.tokens' length", std::to_string(toks->array_size()),
                 std::to_string(hp.n_vocab) + " (token_embd.weight rows)");
    }
  }
  hp.tied_embeddings = f.find_tensor("output.weight") == nullptr;

  // block_count must match the blk.N tensors present.
  std::set<int64_t> layers_present;
  for (const auto& t : f.tensors) {
    int64_t il = -1;
    if (std::sscanf(t.name.c_str(), "blk.%ld.", &il) == 1) layers_present.insert(il);
  }
  const int64_t max_layer = layers_present.empty() ? -1 : *layers_present.rbegin();
  if (max_layer + 1 != hp.n_layer || static_cast<int64_t>(layers_present.size()) != hp.n_layer) {
    return bad(f, "'llama.block_count'", std::to_string(hp.n_layer),
               std::to_string(layers_present.size()) + " layers found in the tensor table (blk.0..blk." +
                   std::to_string(max_layer) + ")");
  }

  const int64_t E = hp.n_embd, KV = hp.n_embd_kv(), F = hp.n_ff, V = hp.n_vocab;
  FLEA_RETURN_IF_ERROR(expect_shape(f, "token_embd.weight", {E, V}));
  FLEA_RETURN_IF_ERROR(expect_shape(f, "output_norm.weight", {E}));
  if (!hp.tied_embeddings) FLEA_RETURN_IF_ERROR(expect_shape(f, "output.weight", {E, V}));
  for (int64_t il = 0; il < hp.n_layer; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    FLEA_RETURN_IF_ERROR(expect_shape(f, p + "attn_norm.weight", {E}));
    FLEA_RETURN_IF_ERROR(expect_shape(f, p + "attn_q.weight", {E, E}));
    FLEA_RETURN_IF_ERROR(expect_shape(f, p + "attn_k.weight", {E, KV}));
    FLEA_RETURN_IF_ERROR(expect_shape(f, p + "attn_v.weight", {E, KV}));
    FLEA_RETURN_IF_ERROR(expect_shape(f, p + "attn_output.weight", {E, E}));
    FLEA_RETURN_IF_ERROR(expect_shape(f, p + "ffn_norm.weight", {E}));
    FLEA_RETURN_IF_ERROR(expect_shape(f, p + "ffn_gate.weight", {E, F}));
    FLEA_RETURN_IF_ERROR(expect_shape(f, p + "ffn_up.weight", {E, F}));
    FLEA_RETURN_IF_ERROR(expect_shape(f, p + "ffn_down.weight", {F, E}));
  }
  // Norms are applied as float vectors; anything else is not a LLaMA file we can run.
  for (const auto& t : f.tensors) {
    if (t.name.find("_norm.weight") != std::string::npos && t.type != GgmlType::F32) {
      return bad(f, "tensor '" + t.name + "' type", type_info(t.type).name, "F32");
    }
  }
  return hp;
}

std::string describe(const LlamaHparams& hp) {
  std::ostringstream os;
  os << "n_vocab=" << hp.n_vocab << " n_embd=" << hp.n_embd << " n_ff=" << hp.n_ff
     << " n_layer=" << hp.n_layer << " n_head=" << hp.n_head << " n_head_kv=" << hp.n_head_kv
     << " head_dim=" << hp.head_dim() << " n_rot=" << hp.n_rot << " rope_base=" << hp.rope_freq_base
     << " rms_eps=" << hp.rms_eps << (hp.tied_embeddings ? " tied" : "");
  return os.str();
}

const char* layer_tensor_name(LayerTensor t) {
  static const char* const kNames[kLayerTensorCount] = {
      "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"};
  return kNames[static_cast<int>(t)];
}

StatusOr<ModelLayout> model_layout(const gguf::File& f, int n_layer) {
  ModelLayout m;
  static const char* const kGlobals[kGlobalTensorCount] = {"token_embd.weight", "output_norm.weight",
                                                           "output.weight"};
  for (int g = 0; g < kGlobalTensorCount; ++g) {
    m.globals[g] = f.find_tensor(kGlobals[g]);
    if (!m.globals[g] && g != static_cast<int>(GlobalTensor::kOutput)) {
      return not_found(f.path + ": missing tensor '" + kGlobals[g] + "'");
    }
  }
  m.layers.resize(static_cast<size_t>(n_layer));
  for (int il = 0; il < n_layer; ++il) {
    for (int k = 0; k < kLayerTensorCount; ++k) {
      const std::string name = "blk." + std::to_string(il) + "." +
                               layer_tensor_name(static_cast<LayerTensor>(k)) + ".weight";
      m.layers[il][k] = f.find_tensor(name);
      if (!m.layers[il][k]) return not_found(f.path + ": missing tensor '" + name + "'");
    }
  }
  return m;
}

uint64_t ModelLayout::global_bytes() const {
  uint64_t b = 0;
  for (const auto* t : globals) if (t) b += t->n_bytes;
  return b;
}

uint64_t ModelLayout::layer_bytes(int il) const {
  uint64_t b = 0;
  for (const auto* t : layers[static_cast<size_t>(il)]) b += t->n_bytes;
  return b;
}

}  // namespace flea
