#include <cmath>
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

constexpr ArchInfo kArchs[] = {
    // name      rope              q/k/v biases         rope_freqs.weight    experts: gating        shared  NoPE every, chunk, QK norm
    {"llama", RopeType::kNorm, Presence::kOptional, Presence::kOptional, MoeGating::kSoftmaxRenorm, false, 0, 0, false},
    {"qwen2", RopeType::kNeox, Presence::kRequired, Presence::kAbsent, MoeGating::kNone, false, 0, 0, false},
    {"llama4", RopeType::kNorm, Presence::kAbsent, Presence::kOptional, MoeGating::kSigmoidOnInput, true, 4, 8192, true},
};

const char* rope_type_name(RopeType t) { return t == RopeType::kNeox ? "neox" : "norm"; }

const ArchInfo* arch_info(const std::string& name) {
  for (const ArchInfo& a : kArchs)
    if (name == a.name) return &a;
  return nullptr;
}

std::string supported_archs() {
  std::string s;
  for (const ArchInfo& a : kArchs) s += std::string(s.empty() ? "" : ", ") + a.name;
  return s;
}

StatusOr<LlamaHparams> llama_hparams(const gguf::File& f) {
  FLEA_ASSIGN_OR_RETURN(std::string arch, f.get_string("general.architecture"));
  LlamaHparams hp;
  hp.arch = arch_info(arch);
  if (!hp.arch) {
    return unimplemented(f.path + ": general.architecture = \"" + arch +
                         "\" is not an architecture this engine runs (supported: " + supported_archs() + ")");
  }
  hp.rope_type = hp.arch->rope_type;
  const std::string k = arch + ".";  // every hyperparameter key lives under the architecture's name
  // Mixture-of-experts files keep the dense key names and add the expert counts; an architecture
  // without experts in the table must not be computed as if its FFN were dense.
  if (f.find(k + "expert_count")) {
    FLEA_ASSIGN_OR_RETURN(hp.n_expert, f.get_int(k + "expert_count"));
    if (hp.n_expert < 0 || hp.n_expert > 1024) return bad(f, "'" + k + "expert_count'", std::to_string(hp.n_expert), "0..1024");
  }
  if (hp.n_expert > 0) {
    if (hp.arch->gating == MoeGating::kNone) {
      return unimplemented(f.path + ": mixture-of-experts model (" + k + "expert_count = " + std::to_string(hp.n_expert) +
                           "); this engine runs experts for: llama, llama4");
    }
    FLEA_ASSIGN_OR_RETURN(hp.n_expert_used, positive_int(f, k + "expert_used_count", hp.n_expert));
    hp.gating = hp.arch->gating;
    hp.shared_expert = hp.arch->shared_expert;
    if (f.find(k + "interleave_moe_layer_step")) {
      FLEA_ASSIGN_OR_RETURN(hp.moe_every, positive_int(f, k + "interleave_moe_layer_step", 4096));
    }
  }
  hp.nope_every = hp.arch->nope_every;
  hp.attn_chunk = hp.arch->attn_chunk;
  // llama.cpp leaves Llama 4's QK norm out for the 128-expert model (Maverick).
  hp.qk_norm = hp.arch->qk_norm && hp.n_expert != 128;
  // Llama 4 files with attention.sliding_window = 0 (all layers full attention) follow other rules.
  if (hp.attn_chunk > 0 && f.find(k + "attention.sliding_window")) {
    return unimplemented(f.path + ": '" + k + "attention.sliding_window' is set; this engine runs " + hp.arch->name +
                         " with llama.cpp's default chunked attention only (no such key)");
  }
  constexpr int64_t kMaxDim = 1 << 20;
  FLEA_ASSIGN_OR_RETURN(hp.n_embd, positive_int(f, k + "embedding_length", kMaxDim));
  FLEA_ASSIGN_OR_RETURN(hp.n_ff, positive_int(f, k + "feed_forward_length", 4 * kMaxDim));
  hp.n_ff_exp = hp.n_ff;  // Mixtral: the experts have the model's feed-forward size
  if (hp.n_expert > 0 && f.find(k + "expert_feed_forward_length")) {
    FLEA_ASSIGN_OR_RETURN(hp.n_ff_exp, positive_int(f, k + "expert_feed_forward_length", 4 * kMaxDim));
  }
  FLEA_ASSIGN_OR_RETURN(hp.n_layer, positive_int(f, k + "block_count", 4096));
  FLEA_ASSIGN_OR_RETURN(hp.n_head, positive_int(f, k + "attention.head_count", 16384));
  hp.n_head_kv = hp.n_head;
  if (f.find(k + "attention.head_count_kv")) {
    FLEA_ASSIGN_OR_RETURN(hp.n_head_kv, positive_int(f, k + "attention.head_count_kv", 16384));
  }
  hp.n_ctx_train = 2048;
  if (f.find(k + "context_length")) {
    FLEA_ASSIGN_OR_RETURN(hp.n_ctx_train, positive_int(f, k + "context_length", 1 << 24));
  }
  if (hp.n_embd % hp.n_head != 0) {
    return bad(f, "'" + k + "attention.head_count'", std::to_string(hp.n_head),
               "a divisor of embedding_length " + std::to_string(hp.n_embd));
  }
  if (hp.n_head % hp.n_head_kv != 0) {
    return bad(f, "'" + k + "attention.head_count_kv'", std::to_string(hp.n_head_kv),
               "a divisor of head_count " + std::to_string(hp.n_head));
  }
  // The forward pass assumes head_dim = embedding_length / head_count; a file that says otherwise
  // (attention.key_length) would be computed with the wrong head size.
  for (const char* len_key : {"attention.key_length", "attention.value_length"}) {
    if (f.find(k + len_key)) {
      FLEA_ASSIGN_OR_RETURN(int64_t len, f.get_int(k + len_key));
      if (len != hp.head_dim()) {
        return unimplemented(f.path + ": '" + k + len_key + "' = " + std::to_string(len) +
                             " differs from embedding_length / head_count = " + std::to_string(hp.head_dim()) +
                             "; this engine supports head_dim = embedding_length / head_count only");
      }
    }
  }
  hp.n_rot = hp.head_dim();
  if (f.find(k + "rope.dimension_count")) {
    FLEA_ASSIGN_OR_RETURN(hp.n_rot, f.get_int(k + "rope.dimension_count"));
    if (hp.n_rot <= 0 || hp.n_rot > hp.head_dim() || hp.n_rot % 2 != 0) {
      return bad(f, "'" + k + "rope.dimension_count'", std::to_string(hp.n_rot),
                 "an even number in 2.." + std::to_string(hp.head_dim()) + " (the head dimension)");
    }
  }
  if (f.find(k + "rope.freq_base")) {
    FLEA_ASSIGN_OR_RETURN(hp.rope_freq_base, f.get_float(k + "rope.freq_base"));
    if (!(hp.rope_freq_base > 0)) return bad(f, "'" + k + "rope.freq_base'", std::to_string(hp.rope_freq_base), "> 0");
  }
  if (f.find(k + "rope.scale_linear")) {
    FLEA_ASSIGN_OR_RETURN(double s, f.get_float(k + "rope.scale_linear"));
    if (!(s > 0)) return bad(f, "'" + k + "rope.scale_linear'", std::to_string(s), "> 0");
    hp.rope_freq_scale = 1.0 / s;
  }
  // rope.scaling.type: "none" and "linear" (angle / factor) are what this rope computes; YaRN and
  // the like change the angles and the attention scale, so such files are refused, not mis-run.
  if (f.find(k + "rope.scaling.type")) {
    FLEA_ASSIGN_OR_RETURN(std::string type, f.get_string(k + "rope.scaling.type"));
    if (type == "linear") {
      if (f.find(k + "rope.scaling.factor")) {
        FLEA_ASSIGN_OR_RETURN(double factor, f.get_float(k + "rope.scaling.factor"));
        if (!(factor > 0)) return bad(f, "'" + k + "rope.scaling.factor'", std::to_string(factor), "> 0");
        hp.rope_freq_scale = 1.0 / factor;
      }
    } else if (type != "none") {
      return unimplemented(f.path + ": '" + k + "rope.scaling.type' = \"" + type +
                           "\" is not supported (supported: none, linear; Llama 3.1 scaling comes as rope_freqs.weight)");
    }
  }
  if (f.find(k + "attention.layer_norm_rms_epsilon")) {
    FLEA_ASSIGN_OR_RETURN(hp.rms_eps, f.get_float(k + "attention.layer_norm_rms_epsilon"));
    if (!(hp.rms_eps > 0 && hp.rms_eps < 1)) {
      return bad(f, "'" + k + "attention.layer_norm_rms_epsilon'", std::to_string(hp.rms_eps), "in (0, 1)");
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
    return bad(f, "'" + k + "block_count'", std::to_string(hp.n_layer),
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
    if (hp.is_moe_layer(il)) {
      const int64_t X = hp.n_expert, FX = hp.n_ff_exp;
      FLEA_RETURN_IF_ERROR(expect_shape(f, p + "ffn_gate_inp.weight", {E, X}));
      FLEA_RETURN_IF_ERROR(expect_shape(f, p + "ffn_gate_exps.weight", {E, FX, X}));
      FLEA_RETURN_IF_ERROR(expect_shape(f, p + "ffn_up_exps.weight", {E, FX, X}));
      FLEA_RETURN_IF_ERROR(expect_shape(f, p + "ffn_down_exps.weight", {FX, E, X}));
      if (hp.shared_expert) {
        FLEA_RETURN_IF_ERROR(expect_shape(f, p + "ffn_gate_shexp.weight", {E, FX}));
        FLEA_RETURN_IF_ERROR(expect_shape(f, p + "ffn_up_shexp.weight", {E, FX}));
        FLEA_RETURN_IF_ERROR(expect_shape(f, p + "ffn_down_shexp.weight", {FX, E}));
      }
    } else {
      FLEA_RETURN_IF_ERROR(expect_shape(f, p + "ffn_gate.weight", {E, F}));
      FLEA_RETURN_IF_ERROR(expect_shape(f, p + "ffn_up.weight", {E, F}));
      FLEA_RETURN_IF_ERROR(expect_shape(f, p + "ffn_down.weight", {F, E}));
    }
    // Biases come as a set: all three or none.
    const int n_bias = (f.find_tensor(p + "attn_q.bias") != nullptr) + (f.find_tensor(p + "attn_k.bias") != nullptr) +
                       (f.find_tensor(p + "attn_v.bias") != nullptr);
    if (n_bias != 0 && n_bias != 3) return bad(f, "layer " + std::to_string(il) + " q/k/v biases", std::to_string(n_bias) + " of 3", "all three or none");
    if (il == 0) hp.qkv_bias = n_bias == 3;
    if ((n_bias == 3) != hp.qkv_bias) return bad(f, "tensor '" + p + "attn_q.bias'", hp.qkv_bias ? "missing" : "present", "as in layer 0");
    if (hp.qkv_bias) {
      FLEA_RETURN_IF_ERROR(expect_shape(f, p + "attn_q.bias", {E}));
      FLEA_RETURN_IF_ERROR(expect_shape(f, p + "attn_k.bias", {KV}));
      FLEA_RETURN_IF_ERROR(expect_shape(f, p + "attn_v.bias", {KV}));
    }
  }
  if (hp.qkv_bias && hp.arch->qkv_bias == Presence::kAbsent)
    return bad(f, "tensor 'blk.0.attn_q.bias'", "present", std::string("absent in a '") + hp.arch->name + "' model");
  if (!hp.qkv_bias && hp.arch->qkv_bias == Presence::kRequired)
    return bad(f, "tensor 'blk.0.attn_q.bias'", "missing", std::string("present in a '") + hp.arch->name + "' model");
  hp.rope_freqs = f.find_tensor("rope_freqs.weight") != nullptr;
  if (hp.rope_freqs && hp.arch->rope_freqs == Presence::kAbsent)
    return bad(f, "tensor 'rope_freqs.weight'", "present", std::string("absent in a '") + hp.arch->name + "' model");
  if (hp.rope_freqs) {
    FLEA_RETURN_IF_ERROR(expect_shape(f, "rope_freqs.weight", {hp.n_rot / 2}));
    if (f.find_tensor("rope_freqs.weight")->type != GgmlType::F32)
      return bad(f, "tensor 'rope_freqs.weight' type", type_info(f.find_tensor("rope_freqs.weight")->type).name, "F32");
  }
  // Any other blk.N tensor (experts, routers, extra norms) belongs to a variant this forward pass
  // does not compute.
  for (const auto& t : f.tensors) {
    int64_t il = -1;
    int consumed = 0;
    if (std::sscanf(t.name.c_str(), "blk.%ld.%n", &il, &consumed) != 1 || consumed == 0) continue;
    bool known = false;
    for (int lt = 0; lt < kLayerTensorCount && !known; ++lt) {
      const auto which = static_cast<LayerTensor>(lt);
      const bool shared = which >= LayerTensor::kFfnGateShexp;
      const bool expert_tensor = which >= LayerTensor::kFfnGateInp;
      const bool dense_ffn = which == LayerTensor::kFfnGate || which == LayerTensor::kFfnUp || which == LayerTensor::kFfnDown;
      const bool moe = hp.is_moe_layer(il);
      if ((moe && dense_ffn) || (!moe && expert_tensor) || (shared && !hp.shared_expert)) continue;  // not this layer's set
      known = t.name == layer_tensor_gguf_name(static_cast<int>(il), which);
    }
    if (!known) {
      return unimplemented(f.path + ": tensor '" + t.name + "' is not part of a " +
                           (hp.is_moe_layer(il) ? "mixture-of-experts " : "dense ") + hp.arch->name +
                           " layer this engine computes");
    }
  }
  // Norms and biases are applied as float vectors; anything else is not a file we can run.
  for (const auto& t : f.tensors) {
    const bool vector = t.name.find("_norm.weight") != std::string::npos ||
                        t.name.compare(t.name.size() - std::min<size_t>(5, t.name.size()), 5, ".bias") == 0;
    if (vector && t.type != GgmlType::F32) {
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
     << " rms_eps=" << hp.rms_eps << " arch=" << (hp.arch ? hp.arch->name : "?")
     << " rope=" << rope_type_name(hp.rope_type) << (hp.rope_freqs ? " rope_freqs" : "")
     << (hp.qkv_bias ? " qkv_bias" : "") << (hp.tied_embeddings ? " tied" : "");
  if (hp.n_expert > 0) {
    os << " experts=" << hp.n_expert_used << "/" << hp.n_expert << " n_ff_exp=" << hp.n_ff_exp;
    if (hp.moe_every > 1) os << " moe_every=" << hp.moe_every;
    if (hp.shared_expert) os << " shared_expert";
  }
  if (hp.nope_every > 0) os << " nope_every=" << hp.nope_every << " chunk=" << hp.attn_chunk << (hp.qk_norm ? " qk_norm" : "");
  return os.str();
}

const char* layer_tensor_name(LayerTensor t) {
  static const char* const kNames[kLayerTensorCount] = {
      "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down",
      "attn_q.bias", "attn_k.bias", "attn_v.bias", "ffn_gate_inp", "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps",
      "ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp"};
  return kNames[static_cast<int>(t)];
}

std::string layer_tensor_gguf_name(int il, LayerTensor t) {
  const std::string name = layer_tensor_name(t);
  const bool bias = name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
  return "blk." + std::to_string(il) + "." + name + (bias ? "" : ".weight");
}

bool is_bias(LayerTensor t) {
  return t == LayerTensor::kAttnQBias || t == LayerTensor::kAttnKBias || t == LayerTensor::kAttnVBias;
}

bool is_optional(LayerTensor t) {
  return is_bias(t) || t == LayerTensor::kFfnGate || t == LayerTensor::kFfnUp || t == LayerTensor::kFfnDown ||
         t >= LayerTensor::kFfnGateInp;
}

float LlamaHparams::attn_temperature(int64_t il, int64_t pos) const {
  if (uses_rope(il) || nope_every == 0) return 1.0f;
  return 1.0f + 0.1f * std::log(std::floor((static_cast<float>(pos) + 1.0f) / 8192.0f) + 1.0f);
}

bool is_resident_vector(int t) {
  const auto lt = static_cast<LayerTensor>(t);
  return lt == LayerTensor::kAttnNorm || lt == LayerTensor::kFfnNorm || is_bias(lt);
}

StatusOr<ModelLayout> model_layout(const gguf::File& f, int n_layer) {
  ModelLayout m;
  static const char* const kGlobals[kGlobalTensorCount] = {"token_embd.weight", "output_norm.weight",
                                                           "output.weight", "rope_freqs.weight"};
  for (int g = 0; g < kGlobalTensorCount; ++g) {
    m.globals[g] = f.find_tensor(kGlobals[g]);
    if (!m.globals[g] && g != static_cast<int>(GlobalTensor::kOutput) && g != static_cast<int>(GlobalTensor::kRopeFreqs)) {
      return not_found(f.path + ": missing tensor '" + kGlobals[g] + "'");
    }
  }
  m.layers.resize(static_cast<size_t>(n_layer));
  for (int il = 0; il < n_layer; ++il) {
    for (int k = 0; k < kLayerTensorCount; ++k) {
      const std::string name = layer_tensor_gguf_name(il, static_cast<LayerTensor>(k));
      m.layers[il][k] = f.find_tensor(name);
      if (!m.layers[il][k] && !is_optional(static_cast<LayerTensor>(k)))
        return not_found(f.path + ": missing tensor '" + name + "'");
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
  for (const auto* t : layers[static_cast<size_t>(il)])
    if (t) b += t->n_bytes;
  return b;
}

}  // namespace flea
