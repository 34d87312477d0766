// The LLaMA-family forward pass (llama, qwen2: see the architecture table in llama_hparams.cpp),
// top to bottom like the math. One call evaluates a batch of T tokens (a pipeline stage runs the
// part of it its LayerSlice names: embed, some of the layers, the head):
//
//   x = embed(tokens)                                  (T, E)
//   for each layer:
//     h = rmsnorm(x) * attn_norm                       (T, E)
//     q, k, v = h Wq (+ bq), h Wk (+ bk), h Wv (+ bv)  (T, E), (T, KV), (T, KV)  biases: qwen2
//     rope(q), rope(k) at their positions (pairing and frequencies per architecture); k, v cached
//     x += softmax(q k^T / sqrt(d) + causal mask) v Wo  (T, E)
//     h = rmsnorm(x) * ffn_norm
//     x += (silu(h Wgate) * (h Wup)) Wdown             (T, E)
//   logits = (rmsnorm(x) * output_norm) Wout           (T, V)
//
// E = n_embd, KV = n_embd_kv (grouped-query attention shares each K/V head across n_gqa query
// heads), F = n_ff, V = n_vocab. Weights come from a WeightProvider one layer at a time.
#include "model/llama.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "flea/clock.h"
#include "compute/cpu/matmul.h"
#include "compute/cpu/thread_pool.h"
#include "quant/quant.h"

namespace flea {
namespace {

cpu::WeightView view(const gguf::TensorInfo& t, const uint8_t* data) {
  return cpu::WeightView{t.type, t.ne[0], t.n_rows(), data};
}

// out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w, for each of the T rows of width n.
void rmsnorm(const float* x, const float* w, float* out, int64_t T, int64_t n, float eps) {
  for (int64_t t = 0; t < T; ++t) {
    const float* xr = x + t * n;
    double ss = 0.0;
    for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float scale = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(n)) + eps);
    float* o = out + t * n;
    if (w == nullptr) {  // no weight (Llama 4's QK norm); out may alias x
      for (int64_t i = 0; i < n; ++i) o[i] = xr[i] * scale;
    } else {
      for (int64_t i = 0; i < n; ++i) o[i] = xr[i] * scale * w[i];
    }
  }
}

// RoPE: within each head, pair i of the first n_rot values is rotated by the angle
// pos[t] * freq_scale * base^(-2i / n_rot) / freq_factors[i] (factors from rope_freqs.weight, 1 without
// it). kNorm pairs (x[2i], x[2i+1]) (GGUF llama), kNeox pairs (x[i], x[i + n_rot/2]) (qwen2).
void rope(float* x, int64_t T, int64_t n_heads, int64_t head_dim, int64_t n_rot, const int64_t* pos,
          float freq_base, float freq_scale, RopeType type, const float* freq_factors) {
  const float theta_scale = std::pow(freq_base, -2.0f / static_cast<float>(n_rot));
  const int64_t half = n_rot / 2;
  const int64_t stride = type == RopeType::kNeox ? 1 : 2;       // distance between pair starts
  const int64_t partner = type == RopeType::kNeox ? half : 1;   // offset of the second element
  for (int64_t t = 0; t < T; ++t) {
    float theta_base = static_cast<float>(pos[t]);
    for (int64_t i = 0; i < half; ++i) {
      const float theta = freq_scale * (freq_factors ? theta_base / freq_factors[i] : theta_base);
      const float c = std::cos(theta), s = std::sin(theta);
      for (int64_t h = 0; h < n_heads; ++h) {
        float* p = x + (t * n_heads + h) * head_dim + i * stride;
        const float x0 = p[0], x1 = p[partner];
        p[0] = x0 * c - x1 * s;
        p[partner] = x0 * s + x1 * c;
      }
      theta_base *= theta_scale;
    }
  }
}

// rows[t] += bias for each of the T rows of width n (Qwen2's q/k/v projections).
void add_bias(float* rows, const float* bias, int64_t T, int64_t n) {
  if (bias == nullptr) return;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < n; ++i) rows[t * n + i] += bias[i];
}

// "F32 F16 ...": every type the CPU kernels cover, from the quant table.
std::string computable_type_names() {
  std::string names;
  for (uint32_t id = 0; id < 64; ++id) {
    const TypeInfo* t = type_info(id);
    if (t && quant::ops(t->type)) names += std::string(names.empty() ? "" : " ") + t->name;
  }
  return names;
}

float silu(float x) { return x / (1.0f + std::exp(-x)); }

}  // namespace

void ForwardStats::reset(int64_t n_layer) {
  acquire_ns.assign(static_cast<size_t>(n_layer), 0);
  compute_ns.assign(static_cast<size_t>(n_layer), 0);
  expert_rows.assign(static_cast<size_t>(n_layer), {});
  forward_calls = 0;
}

StatusOr<std::unique_ptr<Model>> Model::open(const std::string& path) {
  auto m = std::make_unique<Model>();
  FLEA_ASSIGN_OR_RETURN(m->file, gguf::read_file(path));
  FLEA_ASSIGN_OR_RETURN(m->hp, llama_hparams(m->file));
  for (const auto& t : m->file.tensors) {
    if (quant::ops(t.type) == nullptr) {
      return unimplemented(path + ": tensor '" + t.name + "' has type " + type_info(t.type).name +
                           ", which this engine cannot compute (supported: " + computable_type_names() + ")");
    }
  }
  FLEA_ASSIGN_OR_RETURN(m->layout, model_layout(m->file, static_cast<int>(m->hp.n_layer)));
  return m;
}

int32_t argmax(const float* logits, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) if (logits[i] > logits[best]) best = i;
  return static_cast<int32_t>(best);
}

Session::Session(const Model& model, WeightProvider* weights, cpu::ThreadPool* pool, int64_t n_ctx, int n_seq,
                 bool bound_chunked_kv, cpu::KvType kv_type, const LayerSlice& slice)
    : model_(model), slice_(slice), weights_(weights), pool_(pool), n_ctx_(n_ctx), n_past_(static_cast<size_t>(std::max(1, n_seq)), 0),
      kv_type_(kv_type) {
  const auto& hp = model_.hp;
  slice_.end = slice_.end_or(static_cast<int>(hp.n_layer));
  FLEA_CHECK(slice_.begin >= 0 && slice_.begin < slice_.end && slice_.end <= hp.n_layer, "Session: empty layer slice");
  kv_slots_.assign(static_cast<size_t>(hp.n_layer), n_ctx);
  k_cache_.resize(static_cast<size_t>(hp.n_layer));
  v_cache_.resize(static_cast<size_t>(hp.n_layer));
  for (int64_t il = 0; il < hp.n_layer; ++il) {
    // A chunked layer never looks back past the start of its chunk: attn_chunk positions suffice.
    if (bound_chunked_kv && hp.attn_chunk > 0 && hp.uses_rope(il) && hp.attn_chunk < n_ctx) {
      kv_slots_[static_cast<size_t>(il)] = hp.attn_chunk;
      chunk_bounded_ = true;
    }
    if (!slice_.owns(static_cast<int>(il), static_cast<int>(hp.n_layer))) continue;  // another stage's layer
    const size_t cache = static_cast<size_t>(kv_slots_[static_cast<size_t>(il)] * hp.n_embd_kv()) * n_past_.size() *
                         cpu::kv_type_bytes(kv_type_);
    k_cache_[static_cast<size_t>(il)].assign(cache, 0);
    v_cache_[static_cast<size_t>(il)].assign(cache, 0);
  }
  stats_.reset(hp.n_layer);
}

uint64_t session_kv_bytes(const LlamaHparams& hp, int64_t n_ctx, int n_seq, cpu::KvType kv_type) {
  uint64_t b = 0;
  for (int64_t il = 0; il < hp.n_layer; ++il) {
    const int64_t slots = hp.attn_chunk > 0 && hp.uses_rope(il) && hp.attn_chunk < n_ctx ? hp.attn_chunk : n_ctx;
    b += 2 * static_cast<uint64_t>(slots * hp.n_embd_kv()) * static_cast<uint64_t>(std::max(1, n_seq)) *
         cpu::kv_type_bytes(kv_type);
  }
  return b;
}

uint64_t session_scratch_bytes(const LlamaHparams& hp, int64_t n_rows, int64_t n_logit_rows) {
  const int64_t F = std::max(hp.n_ff, hp.n_ff_exp);
  // x xn q att (E each), k v (KV each), gate up (F each), router (n_expert), expert rows (E).
  const int64_t per_row = 5 * hp.n_embd + 2 * hp.n_embd_kv() + 2 * F + hp.n_expert;
  return static_cast<uint64_t>(n_rows * per_row + n_logit_rows * hp.n_vocab) * sizeof(float);
}

uint64_t Session::kv_cache_bytes() const {
  uint64_t b = 0;
  for (size_t il = 0; il < k_cache_.size(); ++il) b += k_cache_[il].size() + v_cache_[il].size();
  return b;
}

Status Session::truncate(int seq, int64_t n_past) {
  if (seq < 0 || seq >= n_seq()) return out_of_range("truncate: sequence " + std::to_string(seq) + " does not exist");
  if (n_past < 0 || n_past > n_past_[static_cast<size_t>(seq)]) {
    return out_of_range("truncate: " + std::to_string(n_past) + " is not in [0, " +
                        std::to_string(n_past_[static_cast<size_t>(seq)]) + "]");
  }
  // A bounded chunked cache holds only the newest chunk: going back into an earlier chunk would need
  // positions it has overwritten.
  const int64_t chunk = model_.hp.attn_chunk;
  if (chunk_bounded_ && n_past / chunk != (n_past_[static_cast<size_t>(seq)] - 1) / chunk && n_past % chunk != 0)
    return unimplemented("truncate: back to position " + std::to_string(n_past) + " crosses an attention chunk (" +
                         std::to_string(chunk) + " positions) whose keys the chunk-bounded KV cache no longer holds");
  n_past_[static_cast<size_t>(seq)] = n_past;
  return ok_status();
}

Status Session::eval(const std::vector<int32_t>& tokens, std::vector<float>* logits, bool all_logits) {
  std::vector<BatchRow> rows(tokens.size());
  for (size_t t = 0; t < tokens.size(); ++t) rows[t] = {0, tokens[t]};
  return eval_batch(rows, logits, all_logits);
}

void Session::ensure_scratch(int64_t T) {
  if (T <= scratch_tokens_) return;
  const auto& hp = model_.hp;
  const auto n = [&](int64_t w) { return static_cast<size_t>(T * w); };
  x_.resize(n(hp.n_embd));
  xn_.resize(n(hp.n_embd));
  q_.resize(n(hp.n_embd));
  k_.resize(n(hp.n_embd_kv()));
  v_.resize(n(hp.n_embd_kv()));
  att_.resize(n(hp.n_embd));
  gate_.resize(n(std::max(hp.n_ff, hp.n_ff_exp)));
  up_.resize(n(std::max(hp.n_ff, hp.n_ff_exp)));
  scratch_tokens_ = T;
}

// Mixture of experts, per token t with h = xn[t] (router logits r = W_router h, (n_expert,)):
//   S = the n_expert_used largest r (ties: lower expert id), then by the architecture's gating
//   Mixtral (kSoftmaxRenorm):  x[t] += sum_{e in S} softmax_S(r)_e * FFN_e(h)
//   Llama 4 (kSigmoidOnInput): x[t] += sum_{e in S} FFN_e(sigmoid(r_e) h)  (+ FFN_shared(h))
// with FFN_e(v) = W_down[e] (silu(W_gate[e] v) * (W_up[e] v)). Computed expert by expert: the rows
// routed to expert e are gathered and go through its three matrices (slab e of each 3-D tensor) in one
// batch. When the provider streams experts one by one (null expert tensors in `w`), the experts
// routed to are asked for after routing, in ascending id order and in groups of at most
// expert_capacity(il); the arithmetic is the same either way. Returns the time blocked on them.
StatusOr<int64_t> Session::moe_ffn(int64_t il, const std::array<const gguf::TensorInfo*, kLayerTensorCount>& lt,
                                   const LayerWeights& w, int64_t T) {
  const auto& hp = model_.hp;
  const int64_t E = hp.n_embd, F = hp.n_ff_exp, X = hp.n_expert, K = hp.n_expert_used;
  const bool on_input = hp.gating == MoeGating::kSigmoidOnInput;
  auto info = [&](LayerTensor t) -> const gguf::TensorInfo& { return *lt[static_cast<int>(t)]; };
  router_.resize(static_cast<size_t>(T * X));
  cpu::matmul(view(info(LayerTensor::kFfnGateInp), w[LayerTensor::kFfnGateInp]), xn_.data(), T, router_.data(), pool_);
  // Per expert: the rows that chose it and their weights.
  std::vector<std::vector<int64_t>> rows(static_cast<size_t>(X));
  std::vector<std::vector<float>> weights(static_cast<size_t>(X));
  std::vector<int64_t> order(static_cast<size_t>(X));
  for (int64_t t = 0; t < T; ++t) {
    const float* r = &router_[static_cast<size_t>(t * X)];
    // Top-k of the softmax = top-k of the logits.
    for (int64_t e = 0; e < X; ++e) order[static_cast<size_t>(e)] = e;
    std::partial_sort(order.begin(), order.begin() + K, order.end(),
                      [&](int64_t a, int64_t b) { return r[a] > r[b] || (r[a] == r[b] && a < b); });
    const float top = r[order[0]];
    double sum = 0;  // softmax over the chosen k = the renormalised softmax over all
    for (int64_t j = 0; j < K; ++j) sum += std::exp(static_cast<double>(r[order[static_cast<size_t>(j)]] - top));
    for (int64_t j = 0; j < K; ++j) {
      const int64_t e = order[static_cast<size_t>(j)];
      rows[static_cast<size_t>(e)].push_back(t);
      weights[static_cast<size_t>(e)].push_back(
          on_input ? 1.0f / (1.0f + std::exp(-r[e])) : static_cast<float>(std::exp(static_cast<double>(r[e] - top)) / sum));
    }
  }
  if (static_cast<size_t>(il) < stats_.expert_rows.size()) {
    auto& count = stats_.expert_rows[static_cast<size_t>(il)];
    count.resize(static_cast<size_t>(X), 0);
    for (int64_t e = 0; e < X; ++e) count[static_cast<size_t>(e)] += static_cast<int64_t>(rows[static_cast<size_t>(e)].size());
  }
  // Expert e's matrix in a 3-D tensor: ne[1] rows (slab e), at `data`.
  auto slab = [&](LayerTensor which, const uint8_t* data) {
    const gguf::TensorInfo& t = info(which);
    return cpu::WeightView{t.type, t.ne[0], t.ne[1], data};
  };
  auto slab_bytes = [&](LayerTensor which) {
    const gguf::TensorInfo& t = info(which);
    return static_cast<size_t>(t.ne[1]) * t.row_bytes();
  };
  // out (n, E) = down(silu(gate in) * (up in)) for in (n, E); gate_/up_ are scratch.
  auto swiglu = [&](const cpu::WeightView& gate, const cpu::WeightView& up, const cpu::WeightView& down, float* in,
                    int64_t n, float* out) {
    cpu::matmul(gate, in, n, gate_.data(), pool_);  // (n, F)
    cpu::matmul(up, in, n, up_.data(), pool_);      // (n, F)
    for (int64_t i = 0; i < n * F; ++i) gate_[static_cast<size_t>(i)] = silu(gate_[static_cast<size_t>(i)]) * up_[static_cast<size_t>(i)];
    cpu::matmul(down, gate_.data(), n, out, pool_);  // (n, E)
  };
  auto run_expert = [&](int64_t e, const ExpertSlabs& sl) {
    const auto& idx = rows[static_cast<size_t>(e)];
    const auto& we = weights[static_cast<size_t>(e)];
    const int64_t n = static_cast<int64_t>(idx.size());
    expert_in_.resize(static_cast<size_t>(n * E));
    for (int64_t i = 0; i < n; ++i) {
      const float* h = &xn_[static_cast<size_t>(idx[static_cast<size_t>(i)] * E)];
      float* in = &expert_in_[static_cast<size_t>(i * E)];
      const float scale = on_input ? we[static_cast<size_t>(i)] : 1.0f;
      for (int64_t d = 0; d < E; ++d) in[d] = scale * h[d];
    }
    swiglu(slab(LayerTensor::kFfnGateExps, sl.gate), slab(LayerTensor::kFfnUpExps, sl.up),
           slab(LayerTensor::kFfnDownExps, sl.down), expert_in_.data(), n, expert_in_.data());
    for (int64_t i = 0; i < n; ++i) {
      const float scale = on_input ? 1.0f : we[static_cast<size_t>(i)];
      float* xr = &x_[static_cast<size_t>(idx[static_cast<size_t>(i)] * E)];
      const float* yr = &expert_in_[static_cast<size_t>(i * E)];
      for (int64_t d = 0; d < E; ++d) xr[d] += scale * yr[d];
    }
  };
  std::vector<int> routed;
  for (int64_t e = 0; e < X; ++e)
    if (!rows[static_cast<size_t>(e)].empty()) routed.push_back(static_cast<int>(e));
  int64_t waited_ns = 0;
  if (w[LayerTensor::kFfnGateExps] != nullptr) {
    for (int e : routed) {
      const size_t k = static_cast<size_t>(e);
      run_expert(e, {w[LayerTensor::kFfnGateExps] + k * slab_bytes(LayerTensor::kFfnGateExps),
                     w[LayerTensor::kFfnUpExps] + k * slab_bytes(LayerTensor::kFfnUpExps),
                     w[LayerTensor::kFfnDownExps] + k * slab_bytes(LayerTensor::kFfnDownExps)});
    }
  } else {
    const int cap = weights_->expert_capacity(static_cast<int>(il));
    if (cap < 1)
      return internal_error("layer " + std::to_string(il) + ": the weight provider gave no expert tensors and streams none");
    std::vector<ExpertSlabs> slabs;
    for (size_t at = 0; at < routed.size(); at += static_cast<size_t>(cap)) {
      const std::vector<int> group(routed.begin() + static_cast<std::ptrdiff_t>(at),
                                   routed.begin() + static_cast<std::ptrdiff_t>(std::min(routed.size(), at + static_cast<size_t>(cap))));
      const int64_t t0 = steady_now_ns();
      FLEA_RETURN_IF_ERROR(weights_->acquire_experts(static_cast<int>(il), group, &slabs));
      waited_ns += steady_now_ns() - t0;
      for (size_t i = 0; i < group.size(); ++i) run_expert(group[i], slabs[i]);
      weights_->release_experts(static_cast<int>(il));
    }
  }
  if (hp.shared_expert) {  // every token, unweighted
    expert_in_.resize(static_cast<size_t>(T * E));
    auto W = [&](LayerTensor which) { return view(info(which), w[which]); };
    swiglu(W(LayerTensor::kFfnGateShexp), W(LayerTensor::kFfnUpShexp), W(LayerTensor::kFfnDownShexp), xn_.data(), T,
           expert_in_.data());
    for (int64_t i = 0; i < T * E; ++i) x_[static_cast<size_t>(i)] += expert_in_[static_cast<size_t>(i)];
  }
  return waited_ns;
}

Status Session::eval_batch(const std::vector<BatchRow>& rows, std::vector<float>* logits, bool all_logits) {
  if (!slice_.whole(static_cast<int>(model_.hp.n_layer)))
    return invalid_argument("eval: this session is one pipeline stage (layers [" + std::to_string(slice_.begin) + ", " +
                            std::to_string(slice_.end) + ")); use eval_stage");
  return eval_stage(rows, nullptr, logits, all_logits);
}

Status Session::eval_stage(const std::vector<BatchRow>& rows, std::vector<float>* hidden, std::vector<float>* logits,
                           bool all_logits) {
  const auto& hp = model_.hp;
  const auto& L = model_.layout;
  const int64_t T = static_cast<int64_t>(rows.size());
  const int64_t E = hp.n_embd, KV = hp.n_embd_kv(), F = hp.n_ff, V = hp.n_vocab;
  const int64_t D = hp.head_dim(), H = hp.n_head;
  const float eps = static_cast<float>(hp.rms_eps);
  if (T == 0) return invalid_argument("eval: no tokens");
  if (!slice_.embed && (hidden == nullptr || static_cast<int64_t>(hidden->size()) != T * E))
    return invalid_argument("eval_stage: layers [" + std::to_string(slice_.begin) + ", " + std::to_string(slice_.end) +
                            ") need the " + std::to_string(T) + " x " + std::to_string(E) + " hidden states of the stage before, got " +
                            std::to_string(hidden == nullptr ? 0 : hidden->size()) + " floats");
  if (!slice_.head && hidden == nullptr) return invalid_argument("eval_stage: a stage without the head needs `hidden` for its output");
  // Each row's position: the next free one of its sequence.
  pos_.resize(static_cast<size_t>(T));
  first_.resize(static_cast<size_t>(T));
  seq_.resize(static_cast<size_t>(T));
  std::vector<int64_t> next = n_past_;
  for (int64_t t = 0; t < T; ++t) {
    const BatchRow& r = rows[static_cast<size_t>(t)];
    if (r.seq < 0 || r.seq >= n_seq()) {
      return out_of_range("eval: sequence " + std::to_string(r.seq) + " outside [0, " + std::to_string(n_seq()) + ")");
    }
    if (r.token < 0 || r.token >= V) {
      return out_of_range("token id " + std::to_string(r.token) + " outside the vocabulary [0, " +
                          std::to_string(V) + ")");
    }
    seq_[static_cast<size_t>(t)] = r.seq;
    pos_[static_cast<size_t>(t)] = next[static_cast<size_t>(r.seq)]++;
    if (pos_[static_cast<size_t>(t)] >= n_ctx_) {
      return out_of_range("eval: " + std::to_string(pos_[static_cast<size_t>(t)] + 1) +
                          " positions exceed the context of " + std::to_string(n_ctx_));
    }
  }
  // With chunk-bounded caches, rows of one sequence on both sides of a chunk boundary would overwrite
  // slots the earlier rows still attend to: the batch is evaluated in pieces that each stay inside
  // one chunk per sequence (the weights are fetched once per piece; this happens once per chunk).
  if (chunk_bounded_ && T > 1) {
    std::vector<int64_t> chunk_of(n_past_.size(), -1);
    for (int64_t t = 0; t < T; ++t) {
      const int32_t seq = rows[static_cast<size_t>(t)].seq;
      const int64_t c = pos_[static_cast<size_t>(t)] / hp.attn_chunk;
      if (chunk_of[static_cast<size_t>(seq)] < 0) chunk_of[static_cast<size_t>(seq)] = c;
      if (c == chunk_of[static_cast<size_t>(seq)]) continue;
      const std::vector<BatchRow> head(rows.begin(), rows.begin() + t), tail(rows.begin() + t, rows.end());
      std::vector<float> a, hidden_head, hidden_tail;  // the hidden states of each piece (stages)
      if (!slice_.embed) {
        hidden_head.assign(hidden->begin(), hidden->begin() + t * E);
        hidden_tail.assign(hidden->begin() + t * E, hidden->end());
      }
      std::vector<float>* hh = hidden != nullptr ? &hidden_head : nullptr;
      std::vector<float>* ht = hidden != nullptr ? &hidden_tail : nullptr;
      FLEA_RETURN_IF_ERROR(eval_stage(head, hh, logits != nullptr && all_logits ? &a : nullptr, all_logits));
      FLEA_RETURN_IF_ERROR(eval_stage(tail, ht, logits, all_logits));
      if (logits != nullptr && all_logits) logits->insert(logits->begin(), a.begin(), a.end());
      if (!slice_.head) {
        *hidden = std::move(hidden_head);
        hidden->insert(hidden->end(), hidden_tail.begin(), hidden_tail.end());
      }
      return ok_status();
    }
  }
  ensure_scratch(T);
  ++stats_.forward_calls;

  if (slice_.embed) {
    // x = embed(tokens): dequantize one row of token_embd per token.
    const cpu::WeightView embd = view(*L.globals[static_cast<int>(GlobalTensor::kTokenEmbd)],
                                      weights_->global(GlobalTensor::kTokenEmbd));
    for (int64_t t = 0; t < T; ++t) cpu::dequantize_row(embd, rows[static_cast<size_t>(t)].token, &x_[static_cast<size_t>(t * E)]);
  } else {
    std::copy(hidden->begin(), hidden->end(), x_.begin());  // x from the stage before
  }

  const float kq_scale = 1.0f / std::sqrt(static_cast<float>(D));
  const auto* freq_factors = reinterpret_cast<const float*>(weights_->global(GlobalTensor::kRopeFreqs));  // [n_rot/2] or null
  for (int64_t il = slice_.begin; il < slice_.end; ++il) {
    const int64_t t_acquire = steady_now_ns();
    FLEA_ASSIGN_OR_RETURN(LayerWeights w, weights_->acquire(static_cast<int>(il)));
    const int64_t t_compute = steady_now_ns();
    int64_t expert_wait_ns = 0;  // blocked on experts read after routing (counted as acquire time)
    const auto& lt = L.layers[static_cast<size_t>(il)];
    auto W = [&](LayerTensor which) { return view(*lt[static_cast<int>(which)], w[which]); };

    // ---- attention block
    rmsnorm(x_.data(), reinterpret_cast<const float*>(w[LayerTensor::kAttnNorm]), xn_.data(), T, E, eps);
    cpu::matmul(W(LayerTensor::kAttnQ), xn_.data(), T, q_.data(), pool_);   // (T, E)
    cpu::matmul(W(LayerTensor::kAttnK), xn_.data(), T, k_.data(), pool_);   // (T, KV)
    cpu::matmul(W(LayerTensor::kAttnV), xn_.data(), T, v_.data(), pool_);   // (T, KV)
    add_bias(q_.data(), reinterpret_cast<const float*>(w[LayerTensor::kAttnQBias]), T, E);
    add_bias(k_.data(), reinterpret_cast<const float*>(w[LayerTensor::kAttnKBias]), T, KV);
    add_bias(v_.data(), reinterpret_cast<const float*>(w[LayerTensor::kAttnVBias]), T, KV);
    if (hp.uses_rope(il)) {
      rope(q_.data(), T, H, D, hp.n_rot, pos_.data(), static_cast<float>(hp.rope_freq_base),
           static_cast<float>(hp.rope_freq_scale), hp.rope_type, freq_factors);
      rope(k_.data(), T, hp.n_head_kv, D, hp.n_rot, pos_.data(), static_cast<float>(hp.rope_freq_base),
           static_cast<float>(hp.rope_freq_scale), hp.rope_type, freq_factors);
      if (hp.qk_norm) {  // Llama 4: each head of q and k RMS-normalised, no weight
        rmsnorm(q_.data(), nullptr, q_.data(), T * H, D, eps);
        rmsnorm(k_.data(), nullptr, k_.data(), T * hp.n_head_kv, D, eps);
      }
    } else {
      for (int64_t t = 0; t < T; ++t) {  // Llama 4's NoPE layers: attention temperature on q
        const float temp = hp.attn_temperature(il, pos_[static_cast<size_t>(t)]);
        for (int64_t i = 0; i < E; ++i) q_[static_cast<size_t>(t * E + i)] *= temp;
      }
    }
    // Cache of sequence s: (slots, KV) elements of kv_type_ starting at s * slots * KV; position p of a
    // sequence lives in slot p % slots (slots = n_ctx, or the chunk when bounded).
    const int64_t slots = kv_slots_[static_cast<size_t>(il)];
    const size_t kv_row_bytes = static_cast<size_t>(KV) * cpu::kv_type_bytes(kv_type_);
    for (int64_t t = 0; t < T; ++t) {
      const size_t slot = static_cast<size_t>(seq_[static_cast<size_t>(t)] * slots + pos_[static_cast<size_t>(t)] % slots);
      cpu::store_kv(kv_type_, &k_[static_cast<size_t>(t * KV)], KV, &k_cache_[static_cast<size_t>(il)][slot * kv_row_bytes]);
      cpu::store_kv(kv_type_, &v_[static_cast<size_t>(t * KV)], KV, &v_cache_[static_cast<size_t>(il)][slot * kv_row_bytes]);
      first_[static_cast<size_t>(t)] = hp.first_visible(il, pos_[static_cast<size_t>(t)]);  // 0, or pos's chunk start
    }
    // att[t, h] = softmax over p in [first[t], pos[t]] of q[t, h] . k[p, h / G] / sqrt(D), times v[p, h / G]
    cpu::attention({T, H, hp.n_head_kv, D, kq_scale, q_.data(), seq_.data(), pos_.data(), first_.data(),
                    {kv_type_, k_cache_[static_cast<size_t>(il)].data(), v_cache_[static_cast<size_t>(il)].data(), slots},
                    att_.data()},
                   pool_);  // q, att: (T, E); caches: (n_seq, slots, KV)
    cpu::matmul(W(LayerTensor::kAttnOutput), att_.data(), T, xn_.data(), pool_);  // (T, E)
    for (int64_t i = 0; i < T * E; ++i) x_[static_cast<size_t>(i)] += xn_[static_cast<size_t>(i)];

    // ---- feed-forward block (SwiGLU; a mixture of them when the model has experts)
    rmsnorm(x_.data(), reinterpret_cast<const float*>(w[LayerTensor::kFfnNorm]), xn_.data(), T, E, eps);
    if (hp.is_moe_layer(il)) {
      // x += the chosen experts' (weighted) outputs (+ the shared expert's)
      StatusOr<int64_t> waited = moe_ffn(il, lt, w, T);
      if (!waited.ok()) {
        weights_->release(static_cast<int>(il));
        return waited.status();
      }
      expert_wait_ns = *waited;
    } else {
      cpu::matmul(W(LayerTensor::kFfnGate), xn_.data(), T, gate_.data(), pool_);  // (T, F)
      cpu::matmul(W(LayerTensor::kFfnUp), xn_.data(), T, up_.data(), pool_);      // (T, F)
      for (int64_t i = 0; i < T * F; ++i) gate_[static_cast<size_t>(i)] = silu(gate_[static_cast<size_t>(i)]) * up_[static_cast<size_t>(i)];
      cpu::matmul(W(LayerTensor::kFfnDown), gate_.data(), T, xn_.data(), pool_);  // (T, E)
      for (int64_t i = 0; i < T * E; ++i) x_[static_cast<size_t>(i)] += xn_[static_cast<size_t>(i)];
    }

    weights_->release(static_cast<int>(il));
    const int64_t t_done = steady_now_ns();
    stats_.acquire_ns[static_cast<size_t>(il)] += t_compute - t_acquire + expert_wait_ns;
    stats_.compute_ns[static_cast<size_t>(il)] += t_done - t_compute - expert_wait_ns;
  }
  n_past_ = next;
  if (!slice_.head) {
    hidden->assign(x_.begin(), x_.begin() + T * E);  // (T, E) to the next stage
    return ok_status();
  }
  if (!logits) return ok_status();

  // logits = rmsnorm(x) Wout, for every row or only the last one.
  const int64_t first = all_logits ? 0 : T - 1;
  const int64_t n_out = T - first;
  rmsnorm(&x_[static_cast<size_t>(first * E)],
          reinterpret_cast<const float*>(weights_->global(GlobalTensor::kOutputNorm)),
          &xn_[static_cast<size_t>(first * E)], n_out, E, eps);
  const GlobalTensor out_tensor = hp.tied_embeddings ? GlobalTensor::kTokenEmbd : GlobalTensor::kOutput;
  logits->resize(static_cast<size_t>(n_out * V));
  cpu::matmul(view(*L.globals[static_cast<int>(out_tensor)], weights_->global(out_tensor)),
              &xn_[static_cast<size_t>(first * E)], n_out, logits->data(), pool_);
  return ok_status();
}

}  // namespace flea
