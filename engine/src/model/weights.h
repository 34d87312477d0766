// The seam between the forward pass and residency: the forward pass asks for a layer's weights
// right before it computes the layer and gives them back right after. Whether the bytes were
// resident all along, streamed from disk with prefetch, or mapped is the provider's business.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "flea/status.h"
#include "gguf/gguf.h"

namespace flea {

// The biases are optional (null in the layout when the file has none; only some architectures have
// them). A layer's feed-forward is either dense (ffn_gate/up/down) or a mixture of experts (router
// ffn_gate_inp plus the 3-D ffn_{gate,up,down}_exps, expert outermost, and in Llama 4 a shared expert
// ffn_{gate,up,down}_shexp); the other set is null.
// Norms and biases are small F32 vectors that stay resident; the matrices stream.
enum class LayerTensor : int {
  kAttnNorm = 0, kAttnQ, kAttnK, kAttnV, kAttnOutput, kFfnNorm, kFfnGate, kFfnUp, kFfnDown,
  kAttnQBias, kAttnKBias, kAttnVBias,
  kFfnGateInp, kFfnGateExps, kFfnUpExps, kFfnDownExps,
  kFfnGateShexp, kFfnUpShexp, kFfnDownShexp,  // Llama 4's shared expert (MoE layers)
};
constexpr int kLayerTensorCount = 19;
// "attn_norm", "attn_q", ... as in `blk.N.<name>` ("attn_q.bias" for the biases).
const char* layer_tensor_name(LayerTensor t);
// Full GGUF name of a layer tensor: "blk.3.attn_q.weight", "blk.3.attn_q.bias".
std::string layer_tensor_gguf_name(int il, LayerTensor t);
// Norms and biases: small F32 vectors kept resident next to the globals instead of streaming.
bool is_resident_vector(int t);
bool is_bias(LayerTensor t);
// Tensors a layer may lack: the biases, and whichever feed-forward set (dense or experts) it does
// not use. llama_hparams checks that each layer has a complete set.
bool is_optional(LayerTensor t);

enum class GlobalTensor : int { kTokenEmbd = 0, kOutputNorm, kOutput, kRopeFreqs };
constexpr int kGlobalTensorCount = 4;

// Where each tensor of the model lives in the file. `output` may be null (tied embeddings),
// `rope_freqs` and the layer biases when the file has none.
struct ModelLayout {
  std::array<const gguf::TensorInfo*, kGlobalTensorCount> globals{};
  std::vector<std::array<const gguf::TensorInfo*, kLayerTensorCount>> layers;
  // Byte totals, for planners and reports.
  uint64_t global_bytes() const;
  uint64_t layer_bytes(int il) const;
};

// Finds every LLaMA tensor in `file` (validated by llama_hparams in model/llama.h first).
StatusOr<ModelLayout> model_layout(const gguf::File& file, int n_layer);

// One stage of a pipeline over processes (pipeline/): this process computes layers [begin, end)
// only, the embedding with `embed` (the first stage) and the output head with `head` (the last).
// Everything else belongs to other processes: the residency plan marks those layers kElsewhere
// and the provider never reads their bytes, nor the globals the stage does not use. The default is the
// whole model.
struct LayerSlice {
  int begin = 0;
  int end = -1;  // -1 = n_layer
  bool embed = true;
  bool head = true;
  int end_or(int n_layer) const { return end < 0 ? n_layer : end; }
  bool owns(int il, int n_layer) const { return il >= begin && il < end_or(n_layer); }
  bool whole(int n_layer) const { return begin == 0 && end_or(n_layer) == n_layer && embed && head; }
};

struct LayerWeights {
  std::array<const uint8_t*, kLayerTensorCount> data{};  // tensor bytes, valid until release()
  const uint8_t* operator[](LayerTensor t) const { return data[static_cast<int>(t)]; }
};

// One expert's three matrices: slab e of ffn_gate_exps, ffn_up_exps and ffn_down_exps.
struct ExpertSlabs {
  const uint8_t* gate = nullptr;
  const uint8_t* up = nullptr;
  const uint8_t* down = nullptr;
};

class WeightProvider {
 public:
  virtual ~WeightProvider() = default;
  // Bytes of a global tensor (token_embd, output_norm, output); resident for the provider's life.
  virtual const uint8_t* global(GlobalTensor t) = 0;
  // Blocks until layer `il` is staged; pointers stay valid until release(il).
  virtual StatusOr<LayerWeights> acquire(int il) = 0;
  // The forward pass is done with layer `il`; the provider may evict it.
  virtual void release(int il) = 0;
  virtual std::string name() const = 0;

  // Expert-granular residency. A MoE layer whose LayerWeights has null ffn_*_exps streams its
  // experts one by one: after routing, the forward pass asks for the experts it needs, at most
  // expert_capacity(il) at a time (in groups when a batch routes to more), computes them and gives
  // them back with release_experts(il) (release(il) also gives back any still held). `out[i]` are
  // the slabs of `ids[i]`, valid until then. Providers that keep whole layers never get asked.
  virtual int expert_capacity(int il) const { return 0; }
  virtual Status acquire_experts(int il, const std::vector<int>& ids, std::vector<ExpertSlabs>* out) {
    return unimplemented("this weight provider does not stream experts (layer " + std::to_string(il) + ")");
  }
  virtual void release_experts(int il) {}

  // Blocks until no read is queued or in flight. Measurement boundaries call it so a prefetch that
  // straddles the boundary is counted on one side every time; resident weights have nothing to wait for.
  virtual void wait_idle() {}
};

}  // namespace flea
