// CudaSession: the forward pass of model/llama.cpp on the GPU, one micro-batch at a time.
//
//   x = embed(tokens)                                   (T, E)   dequantized rows of token_embd
//   per layer: weights resident in the arena, or copied into ring slot `visit % slots` on the
//   copy stream (the compute stream waits for that copy's event; the copy waits for the event the
//   compute stream recorded when the slot's previous layer was done), then the same steps as the
//   CPU: rmsnorm, Q/K/V (K and V written straight into the VRAM cache), RoPE, attention, Wo,
//   residual, rmsnorm, gate/up, SwiGLU, down, residual.
//   With the KV cache in host memory (CudaOptions::kv "host") the layer's "VRAM cache" is one
//   working pair shared by all layers: before the layer, rows [0, n_past) of its host K and V are
//   copied in (H2D); after attention, the batch's rows [n_past, n_past + T) are copied back (D2H).
//   Both copies are on the compute stream, so they are ordered with the kernels that write and
//   read the working pair, and the next layer's copy-in cannot overtake this layer's copy-back.
//   logits = rmsnorm(x) Wout                            (rows, V)
//
// The host thread drives both streams: for each streamed visit it enqueues the compute, then
// acquires the layer `lookahead` visits ahead from the provider (blocking on its disk read),
// enqueues its H2D copies, waits for them and releases the host buffer. Prefetch 0 is a plain
// load-then-compute baseline (the host also waits for the previous compute before loading).
#include "compute/cuda/cuda_session.h"

#include <cuda_runtime.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "flea/clock.h"
#include "compute/cuda/kernels.h"
#include "compute/vram/vram_arena.h"

namespace flea {
namespace {

Status cuda_status(cudaError_t e, const std::string& what) {
  return internal_error(what + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

#define FLEA_CUDA_RETURN(expr, what)                         \
  do {                                                       \
    const cudaError_t flea_cuda_err_ = (expr);               \
    if (flea_cuda_err_ != cudaSuccess) return cuda_status(flea_cuda_err_, what); \
  } while (0)

std::string mb_str(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f MB", vram::to_mb(bytes));
  return buf;
}

// The seven matrices of a layer, in the order they are packed into a slot.
constexpr std::array<LayerTensor, 7> kMatrices = {LayerTensor::kAttnQ, LayerTensor::kAttnK, LayerTensor::kAttnV,
                                                   LayerTensor::kAttnOutput, LayerTensor::kFfnGate,
                                                   LayerTensor::kFfnUp, LayerTensor::kFfnDown};

constexpr uint64_t kBounceBytes = 32ull << 20;  // per bounce buffer (two of them)

class CudaSession final : public Evaluator {
 public:
  CudaSession(const Model& model, WeightProvider* weights, const Plan& plan, const ResidencyOptions& opts,
              int64_t n_ctx, const CudaOptions& copts)
      : model_(model), weights_(weights), plan_(plan), opts_(opts), copts_(copts), n_ctx_(n_ctx),
        arena_(static_cast<uint64_t>(std::max<int64_t>(0, opts.vram_budget_mb)) * vram::kMiB), ring_(1, 0) {
    stats_.reset(model.hp.n_layer);
  }
  ~CudaSession() override;

  Status init();
  Status eval(const std::vector<int32_t>& tokens, std::vector<float>* logits, bool all_logits) override;
  void reset() override { n_past_ = 0; }
  int64_t n_past() const override { return n_past_; }
  int64_t n_ctx() const override { return n_ctx_; }
  ForwardStats& stats() override { return stats_; }
  const CudaStats& cuda_stats() {
    sample_memory();
    return cstats_;
  }

 private:
  struct Layer {
    std::array<uint64_t, 7> offset{};  // packed offsets of kMatrices inside the layer's region
    uint64_t bytes = 0;
    uint8_t* resident = nullptr;       // arena region when resident in VRAM
    float* attn_norm = nullptr;
    float* ffn_norm = nullptr;
    std::array<float*, 3> qkv_bias{};  // (E), (KV), (KV) when the model has q/k/v biases (qwen2)
    float* k_cache = nullptr;          // (n_ctx, KV) in VRAM; the shared working pair in host mode
    float* v_cache = nullptr;
    float* host_k = nullptr;           // host mode: (n_ctx, KV) in the pinned host cache
    float* host_v = nullptr;
  };

  uint8_t* dev(uint64_t offset) const { return base_ + offset; }
  const gguf::TensorInfo& info(int il, LayerTensor t) const {
    return *model_.layout.layers[static_cast<size_t>(il)][static_cast<int>(t)];
  }
  cuda::DeviceMatrix matrix(int il, int k, const uint8_t* base) const {
    const gguf::TensorInfo& t = info(il, kMatrices[static_cast<size_t>(k)]);
    return cuda::DeviceMatrix{t.type, t.ne[0], t.n_rows(), base + layers_[static_cast<size_t>(il)].offset[static_cast<size_t>(k)]};
  }
  Status check_model() const;
  Status read_norm(const gguf::TensorInfo& t, std::vector<float>* out) const;
  Status upload_fixed();
  Status issue(int64_t visit);
  Status copy_host(uint8_t* dst, const uint8_t* src, uint64_t n);
  bool ensure_registered(const uint8_t* lo, const uint8_t* hi);
  Status forward(const int32_t* tokens, int64_t T, int64_t first_row, float* logits_out);
  cuda::Activations quantize(const float* x, int64_t T, int64_t cols, GgmlType weight_type);
  void sample_memory();

  const Model& model_;
  WeightProvider* weights_;
  const Plan& plan_;
  ResidencyOptions opts_;
  CudaOptions copts_;
  bool kv_host_ = false;  // copts_.kv == "host"
  int64_t n_ctx_;
  int64_t n_past_ = 0;
  int64_t max_batch_ = 1;
  std::vector<float> freq_factors_;  // rope_freqs.weight ([n_rot / 2]) or empty
  ForwardStats stats_;
  CudaStats cstats_;

  vram::VramArena arena_;
  vram::VramPlan vplan_;
  vram::LayerRing ring_;
  int64_t next_visit_ = 0;

  cudaStream_t compute_ = nullptr, copy_ = nullptr;
  uint8_t* base_ = nullptr;
  std::vector<Layer> layers_;
  std::vector<uint8_t*> slots_;
  std::vector<cudaEvent_t> copy_start_, copy_done_, slot_free_;
  bool events_ok_ = false;

  cuda::DeviceMatrix embd_, out_;
  float* out_norm_ = nullptr;
  // Scratch for max_batch_ tokens.
  float *x_ = nullptr, *xn_ = nullptr, *q_ = nullptr, *att_ = nullptr, *gate_ = nullptr, *up_ = nullptr;
  float* logits_ = nullptr;
  float* cos_sin_ = nullptr;
  int32_t* ids_ = nullptr;
  void* act_q_ = nullptr;
  float* act_d_ = nullptr;
  // Pinned host buffers.
  int32_t* host_ids_ = nullptr;
  float* host_cos_sin_ = nullptr;
  float* host_kv_ = nullptr;  // host mode: [n_layer][K, V](n_ctx, KV)
  std::array<uint8_t*, 2> bounce_{};
  std::array<cudaEvent_t, 2> bounce_free_{};
  int bounce_next_ = 0;
  bool use_bounce_ = false;
  std::vector<std::pair<uintptr_t, uintptr_t>> registered_;  // [begin, end) page ranges
};

CudaSession::~CudaSession() {
  if (compute_ != nullptr) cudaStreamSynchronize(compute_);
  if (copy_ != nullptr) cudaStreamSynchronize(copy_);
  for (const auto& r : registered_) cudaHostUnregister(reinterpret_cast<void*>(r.first));
  for (auto* v : {&copy_start_, &copy_done_, &slot_free_}) {
    for (cudaEvent_t e : *v) if (e != nullptr) cudaEventDestroy(e);
  }
  for (cudaEvent_t e : bounce_free_) if (e != nullptr) cudaEventDestroy(e);
  for (uint8_t* b : bounce_) if (b != nullptr) cudaFreeHost(b);
  if (host_ids_ != nullptr) cudaFreeHost(host_ids_);
  if (host_cos_sin_ != nullptr) cudaFreeHost(host_cos_sin_);
  if (host_kv_ != nullptr) cudaFreeHost(host_kv_);
  if (base_ != nullptr) cudaFree(base_);
  if (compute_ != nullptr) cudaStreamDestroy(compute_);
  if (copy_ != nullptr) cudaStreamDestroy(copy_);
}

Status CudaSession::check_model() const {
  const auto& hp = model_.hp;
  if (hp.n_expert > 0 || hp.nope_every > 0) {
    return unimplemented(std::string("--backend cuda: ") +
                         (hp.n_expert > 0 ? "mixture-of-experts models (" + std::to_string(hp.n_expert) + " experts)"
                                          : std::string(hp.arch->name) + " layers (NoPE, chunked attention)") +
                         " run on the CPU backend only (--backend cpu)");
  }
  auto check = [&](const gguf::TensorInfo& t) -> Status {
    if (!cuda::supported(t.type)) {
      return unimplemented("--backend cuda: tensor '" + t.name + "' has type " + type_info(t.type).name +
                           ", which has no CUDA kernel (supported: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 IQ4_NL Q2_K Q3_K Q4_K Q5_K Q6_K IQ4_XS)");
    }
    if (t.ne[0] % 32 != 0) {
      return unimplemented("--backend cuda: tensor '" + t.name + "' has rows of " + std::to_string(t.ne[0]) +
                           " elements; the CUDA kernels need a multiple of 32");
    }
    return ok_status();
  };
  for (const auto& lt : model_.layout.layers) {
    for (LayerTensor m : kMatrices) FLEA_RETURN_IF_ERROR(check(*lt[static_cast<int>(m)]));
    for (LayerTensor n : {LayerTensor::kAttnNorm, LayerTensor::kFfnNorm}) {
      if (lt[static_cast<int>(n)]->type != GgmlType::F32) {
        return unimplemented("--backend cuda: norm '" + lt[static_cast<int>(n)]->name + "' is not F32");
      }
    }
  }
  FLEA_RETURN_IF_ERROR(check(*model_.layout.globals[static_cast<int>(GlobalTensor::kTokenEmbd)]));
  if (!hp.tied_embeddings) FLEA_RETURN_IF_ERROR(check(*model_.layout.globals[static_cast<int>(GlobalTensor::kOutput)]));
  if (model_.layout.globals[static_cast<int>(GlobalTensor::kOutputNorm)]->type != GgmlType::F32) {
    return unimplemented("--backend cuda: output_norm is not F32");
  }
  if (hp.n_rot % 2 != 0 || hp.n_rot > hp.head_dim()) {
    return unimplemented("--backend cuda: rope dimension count " + std::to_string(hp.n_rot) + " not supported");
  }
  const int64_t max_pos = cuda::attention_max_positions(copts_.device, hp.head_dim());
  if (n_ctx_ > max_pos) {
    return unimplemented("--backend cuda: a context of " + std::to_string(n_ctx_) +
                         " positions exceeds what the attention kernel holds in shared memory (" +
                         std::to_string(max_pos) + ")");
  }
  return ok_status();
}

// Norms are read straight from the file: the provider hands them out only with a whole layer.
Status CudaSession::read_norm(const gguf::TensorInfo& t, std::vector<float>* out) const {
  out->resize(static_cast<size_t>(t.n_elements()));
  const int fd = ::open(model_.file.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return io_error(model_.file.path + ": cannot open to read '" + t.name + "': " + std::strerror(errno));
  uint64_t done = 0;
  auto* dst = reinterpret_cast<uint8_t*>(out->data());
  while (done < t.n_bytes) {
    const ssize_t n = ::pread(fd, dst + done, t.n_bytes - done, static_cast<off_t>(t.file_offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      return io_error(model_.file.path + ": short read of '" + t.name + "' at offset " +
                      std::to_string(t.file_offset + done));
    }
    done += static_cast<uint64_t>(n);
  }
  ::close(fd);
  return ok_status();
}

Status CudaSession::init() {
  const auto& hp = model_.hp;
  const auto& L = model_.layout;
  const int n_layer = static_cast<int>(hp.n_layer);
  const int64_t E = hp.n_embd, KV = hp.n_embd_kv(), F = hp.n_ff, V = hp.n_vocab;
  if (n_ctx_ <= 0) return invalid_argument("--backend cuda: n_ctx must be positive");
  if (copts_.kv != "resident" && copts_.kv != "host") {
    return invalid_argument("--backend cuda: unknown KV mode '" + copts_.kv + "' (resident or host)");
  }
  kv_host_ = copts_.kv == "host";
  int n_dev = 0;
  FLEA_CUDA_RETURN(cudaGetDeviceCount(&n_dev), "--backend cuda: cudaGetDeviceCount");
  if (copts_.device < 0 || copts_.device >= n_dev) {
    return invalid_argument("--backend cuda: device " + std::to_string(copts_.device) + " does not exist (" +
                            std::to_string(n_dev) + " found)");
  }
  FLEA_CUDA_RETURN(cudaSetDevice(copts_.device), "cudaSetDevice");
  FLEA_CUDA_RETURN(cudaFree(nullptr), "creating the CUDA context");
  cudaDeviceProp prop{};
  FLEA_CUDA_RETURN(cudaGetDeviceProperties(&prop, copts_.device), "cudaGetDeviceProperties");
  cstats_.device_name = prop.name;
  FLEA_RETURN_IF_ERROR(check_model());
  sample_memory();
  cstats_.device_used_before_mb = cstats_.device_used_peak_mb;
  // `auto` without --vram-budget-mb fits the device: its free memory now, less a margin (10%, at
  // most 1 GiB, as the host plan leaves) for the CUDA context's growth and other processes.
  if (opts_.residency == "auto" && opts_.vram_budget_mb <= 0) {
    size_t free_b = 0, total_b = 0;
    FLEA_CUDA_RETURN(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
    const uint64_t margin = host_memory_margin(free_b);
    arena_ = vram::VramArena(free_b - margin);
    cstats_.vram_budget_source = "cudaMemGetInfo free " + human_bytes(free_b) + " of " + human_bytes(total_b) +
                                 " - margin " + human_bytes(margin) + " = " + human_bytes(free_b - margin);
  } else {
    cstats_.vram_budget_source = opts_.vram_budget_mb > 0 ? "--vram-budget-mb " + std::to_string(opts_.vram_budget_mb)
                                                          : "unlimited (--residency " + opts_.residency + ")";
  }

  // ---- what goes into VRAM, and where
  max_batch_ = std::max<int64_t>(1, std::min(n_ctx_, copts_.max_batch));
  const int64_t B = max_batch_;
  const int64_t max_cols = std::max(E, F);
  vram::VramRequest req;
  const auto a = [](uint64_t n) { return vram::align_up(n); };
  const auto* embd_t = L.globals[static_cast<int>(GlobalTensor::kTokenEmbd)];
  const auto* out_t = L.globals[static_cast<int>(GlobalTensor::kOutput)];
  req.global_bytes = a(embd_t->n_bytes) + a(static_cast<uint64_t>(E) * 4) + (hp.tied_embeddings ? 0 : a(out_t->n_bytes));
  // Norms, and the q/k/v biases where the architecture has them: small F32 vectors, always resident.
  const uint64_t bias_bytes = hp.qkv_bias ? a(static_cast<uint64_t>(E) * 4) + 2 * a(static_cast<uint64_t>(KV) * 4) : 0;
  req.norm_bytes = static_cast<uint64_t>(n_layer) * (2 * a(static_cast<uint64_t>(E) * 4) + bias_bytes);
  req.kv_bytes = vram::kv_vram_bytes(n_layer, n_ctx_, KV, kv_host_);
  req.kv_host = kv_host_;
  const std::vector<uint64_t> scratch = {
      a(B * E * 4), a(B * E * 4), a(B * E * 4), a(B * E * 4), a(B * F * 4), a(B * F * 4),  // x xn q att gate up
      a(B * V * 4),                                                                      // logits
      a(static_cast<uint64_t>(B * hp.n_rot) * 4), a(B * 4),                              // cos_sin ids
      a(cuda::activation_q_bytes(GgmlType::F16, B, max_cols)),                          // act q (F16 is widest)
      a(cuda::activation_d_bytes(GgmlType::Q8_0, B, max_cols))};                        // act d (Q8_0 most blocks)
  for (uint64_t s : scratch) req.scratch_bytes += s;
  layers_.resize(static_cast<size_t>(n_layer));
  for (int il = 0; il < n_layer; ++il) {
    Layer& ly = layers_[static_cast<size_t>(il)];
    for (size_t k = 0; k < kMatrices.size(); ++k) {
      ly.offset[k] = ly.bytes;
      ly.bytes += a(info(il, kMatrices[k]).n_bytes);
    }
    req.layer_bytes.push_back(ly.bytes);
    req.may_be_resident.push_back(opts_.residency != "transient" &&
                                  plan_.layers[static_cast<size_t>(il)].placement == Placement::kResident);
  }
  req.require_all_resident = opts_.residency == "full";
  req.prefetch = std::max(0, opts_.prefetch);
  req.budget_bytes = arena_.budget_bytes();
  FLEA_ASSIGN_OR_RETURN(vplan_, vram::plan_vram(req));
  cstats_.plan = vplan_.to_string();

  // Offsets in the arena, in one pass; the arena enforces the budget a second time.
  FLEA_ASSIGN_OR_RETURN(uint64_t off_embd, arena_.reserve("token_embd", embd_t->n_bytes));
  uint64_t off_out = 0;
  if (!hp.tied_embeddings) { FLEA_ASSIGN_OR_RETURN(off_out, arena_.reserve("output", out_t->n_bytes)); }
  FLEA_ASSIGN_OR_RETURN(uint64_t off_out_norm, arena_.reserve("output_norm", static_cast<uint64_t>(E) * 4));
  const uint64_t kv_one_bytes = static_cast<uint64_t>(n_ctx_ * KV) * 4;  // one layer's K (or V)
  std::vector<std::array<uint64_t, 7>> layer_off(static_cast<size_t>(n_layer));  // norms x2, k, v, q/k/v bias
  for (int il = 0; il < n_layer; ++il) {
    auto& o = layer_off[static_cast<size_t>(il)];
    const std::string n = "layer " + std::to_string(il);
    FLEA_ASSIGN_OR_RETURN(o[0], arena_.reserve(n + " attn_norm", static_cast<uint64_t>(E) * 4));
    FLEA_ASSIGN_OR_RETURN(o[1], arena_.reserve(n + " ffn_norm", static_cast<uint64_t>(E) * 4));
    if (hp.qkv_bias) {
      FLEA_ASSIGN_OR_RETURN(o[4], arena_.reserve(n + " attn_q.bias", static_cast<uint64_t>(E) * 4));
      FLEA_ASSIGN_OR_RETURN(o[5], arena_.reserve(n + " attn_k.bias", static_cast<uint64_t>(KV) * 4));
      FLEA_ASSIGN_OR_RETURN(o[6], arena_.reserve(n + " attn_v.bias", static_cast<uint64_t>(KV) * 4));
    }
    if (kv_host_ && il > 0) {  // every layer uses layer 0's working pair
      o[2] = layer_off[0][2];
      o[3] = layer_off[0][3];
      continue;
    }
    const std::string what = kv_host_ ? "working" : n;
    FLEA_ASSIGN_OR_RETURN(o[2], arena_.reserve(what + " K cache", kv_one_bytes));
    FLEA_ASSIGN_OR_RETURN(o[3], arena_.reserve(what + " V cache", kv_one_bytes));
  }
  std::vector<uint64_t> scratch_off;
  for (size_t i = 0; i < scratch.size(); ++i) {
    FLEA_ASSIGN_OR_RETURN(uint64_t o, arena_.reserve("scratch " + std::to_string(i), scratch[i]));
    scratch_off.push_back(o);
  }
  std::vector<uint64_t> resident_off(static_cast<size_t>(n_layer), 0);
  for (int il = 0; il < n_layer; ++il) {
    if (!vplan_.resident[static_cast<size_t>(il)]) continue;
    FLEA_ASSIGN_OR_RETURN(resident_off[static_cast<size_t>(il)],
                          arena_.reserve("layer " + std::to_string(il) + " weights", layers_[static_cast<size_t>(il)].bytes));
  }
  std::vector<uint64_t> slot_off;
  for (int s = 0; s < vplan_.ring_slots; ++s) {
    FLEA_ASSIGN_OR_RETURN(uint64_t o, arena_.reserve("ring slot " + std::to_string(s), vplan_.slot_bytes));
    slot_off.push_back(o);
  }

  // ---- the one device allocation
  const uint64_t total = arena_.used_bytes();
  if (cudaMalloc(reinterpret_cast<void**>(&base_), total) != cudaSuccess) {
    base_ = nullptr;
    cudaGetLastError();  // clear the error so later calls are not affected
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    return resource_exhausted("cudaMalloc of " + mb_str(total) + " for the VRAM arena failed (" + vplan_.to_string() +
                              "); the device has " + mb_str(free_b) + " free of " + mb_str(total_b) +
                              ": lower --vram-budget-mb, use --residency auto/transient" +
                              (kv_host_ ? "" : ", --kv host") + " or a smaller context");
  }
  cstats_.arena_mb = vram::to_mb(total);
  cstats_.arena_peak_mb = vram::to_mb(arena_.peak_bytes());
  cstats_.vram_budget_mb = vram::to_mb(arena_.budget_bytes());
  cstats_.resident_layers = static_cast<int>(std::count(vplan_.resident.begin(), vplan_.resident.end(), true));
  cstats_.streamed_layers = static_cast<int>(vplan_.streamed.size());
  cstats_.ring_slots = vplan_.ring_slots;
  cstats_.lookahead = vplan_.lookahead;
  cstats_.slot_mb = vram::to_mb(vplan_.slot_bytes);
  cstats_.kv_mode = kv_host_ ? "host" : "resident";
  cstats_.kv_vram_mb = vram::to_mb(req.kv_bytes);

  embd_ = cuda::DeviceMatrix{embd_t->type, embd_t->ne[0], embd_t->n_rows(), dev(off_embd)};
  out_ = hp.tied_embeddings ? embd_ : cuda::DeviceMatrix{out_t->type, out_t->ne[0], out_t->n_rows(), dev(off_out)};
  out_norm_ = reinterpret_cast<float*>(dev(off_out_norm));
  for (int il = 0; il < n_layer; ++il) {
    Layer& ly = layers_[static_cast<size_t>(il)];
    const auto& o = layer_off[static_cast<size_t>(il)];
    ly.attn_norm = reinterpret_cast<float*>(dev(o[0]));
    ly.ffn_norm = reinterpret_cast<float*>(dev(o[1]));
    if (hp.qkv_bias)
      for (size_t b = 0; b < 3; ++b) ly.qkv_bias[b] = reinterpret_cast<float*>(dev(o[4 + b]));
    ly.k_cache = reinterpret_cast<float*>(dev(o[2]));
    ly.v_cache = reinterpret_cast<float*>(dev(o[3]));
    if (vplan_.resident[static_cast<size_t>(il)]) ly.resident = dev(resident_off[static_cast<size_t>(il)]);
  }
  x_ = reinterpret_cast<float*>(dev(scratch_off[0]));
  xn_ = reinterpret_cast<float*>(dev(scratch_off[1]));
  q_ = reinterpret_cast<float*>(dev(scratch_off[2]));
  att_ = reinterpret_cast<float*>(dev(scratch_off[3]));
  gate_ = reinterpret_cast<float*>(dev(scratch_off[4]));
  up_ = reinterpret_cast<float*>(dev(scratch_off[5]));
  logits_ = reinterpret_cast<float*>(dev(scratch_off[6]));
  cos_sin_ = reinterpret_cast<float*>(dev(scratch_off[7]));
  ids_ = reinterpret_cast<int32_t*>(dev(scratch_off[8]));
  act_q_ = dev(scratch_off[9]);
  act_d_ = reinterpret_cast<float*>(dev(scratch_off[10]));
  for (uint64_t o : slot_off) slots_.push_back(dev(o));

  // ---- streams, events, pinned host buffers
  FLEA_CUDA_RETURN(cudaStreamCreateWithFlags(&compute_, cudaStreamNonBlocking), "cudaStreamCreate (compute)");
  FLEA_CUDA_RETURN(cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking), "cudaStreamCreate (copy)");
  for (auto* v : {&copy_start_, &copy_done_, &slot_free_}) {
    v->assign(static_cast<size_t>(vplan_.ring_slots), nullptr);
    for (cudaEvent_t& e : *v) FLEA_CUDA_RETURN(cudaEventCreate(&e), "cudaEventCreate");
  }
  for (cudaEvent_t& e : bounce_free_) FLEA_CUDA_RETURN(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
  auto host_alloc = [](void** p, uint64_t n, const char* what) -> Status {
    if (cudaHostAlloc(p, n, cudaHostAllocDefault) != cudaSuccess) {
      *p = nullptr;
      cudaGetLastError();
      return resource_exhausted(std::string("cudaHostAlloc of ") + mb_str(n) + " for " + what + " failed");
    }
    return ok_status();
  };
  FLEA_RETURN_IF_ERROR(host_alloc(reinterpret_cast<void**>(&host_ids_), static_cast<uint64_t>(B) * 4, "token ids"));
  FLEA_RETURN_IF_ERROR(host_alloc(reinterpret_cast<void**>(&host_cos_sin_),
                                  static_cast<uint64_t>(B * std::max<int64_t>(2, hp.n_rot)) * 4, "RoPE angles"));
  if (kv_host_) {
    const uint64_t host_bytes = vram::kv_host_bytes(n_layer, n_ctx_, KV);
    FLEA_RETURN_IF_ERROR(host_alloc(reinterpret_cast<void**>(&host_kv_), host_bytes,
                                    "the KV cache in host memory (--kv host)"));
    cstats_.kv_host_mb = vram::to_mb(host_bytes);
    const int64_t layer_floats = n_ctx_ * KV;  // one layer's K (or V), in floats
    for (int il = 0; il < n_layer; ++il) {
      Layer& ly = layers_[static_cast<size_t>(il)];
      ly.host_k = host_kv_ + (2 * static_cast<int64_t>(il)) * layer_floats;
      ly.host_v = host_kv_ + (2 * static_cast<int64_t>(il) + 1) * layer_floats;
    }
  }
  use_bounce_ = copts_.pin == "bounce" || opts_.io.find("mmap") != std::string::npos;
  if (copts_.pin != "bounce" && use_bounce_) cstats_.pin_fallback = "--io mmap: file pages are not pinned";
  if (!vplan_.streamed.empty()) {
    for (uint8_t*& b : bounce_) {
      FLEA_RETURN_IF_ERROR(host_alloc(reinterpret_cast<void**>(&b), kBounceBytes, "the pinned bounce buffer"));
    }
    ring_ = vram::LayerRing(vplan_.ring_slots, vplan_.lookahead);
  }
  cstats_.pin_mode = use_bounce_ ? "bounce" : "registered";
  return upload_fixed();
}

Status CudaSession::upload_fixed() {
  const auto& hp = model_.hp;
  const auto& L = model_.layout;
  FLEA_CUDA_RETURN(cudaMemcpy(const_cast<uint8_t*>(embd_.data), weights_->global(GlobalTensor::kTokenEmbd),
                              L.globals[static_cast<int>(GlobalTensor::kTokenEmbd)]->n_bytes, cudaMemcpyHostToDevice),
                   "uploading token_embd");
  if (!hp.tied_embeddings) {
    FLEA_CUDA_RETURN(cudaMemcpy(const_cast<uint8_t*>(out_.data), weights_->global(GlobalTensor::kOutput),
                                L.globals[static_cast<int>(GlobalTensor::kOutput)]->n_bytes, cudaMemcpyHostToDevice),
                     "uploading output");
  }
  FLEA_CUDA_RETURN(cudaMemcpy(out_norm_, weights_->global(GlobalTensor::kOutputNorm),
                              static_cast<size_t>(hp.n_embd) * 4, cudaMemcpyHostToDevice),
                   "uploading output_norm");
  std::vector<float> norm;
  for (int il = 0; il < static_cast<int>(hp.n_layer); ++il) {
    Layer& ly = layers_[static_cast<size_t>(il)];
    FLEA_RETURN_IF_ERROR(read_norm(info(il, LayerTensor::kAttnNorm), &norm));
    FLEA_CUDA_RETURN(cudaMemcpy(ly.attn_norm, norm.data(), norm.size() * 4, cudaMemcpyHostToDevice), "uploading attn_norm");
    FLEA_RETURN_IF_ERROR(read_norm(info(il, LayerTensor::kFfnNorm), &norm));
    FLEA_CUDA_RETURN(cudaMemcpy(ly.ffn_norm, norm.data(), norm.size() * 4, cudaMemcpyHostToDevice), "uploading ffn_norm");
    if (hp.qkv_bias) {
      const LayerTensor biases[3] = {LayerTensor::kAttnQBias, LayerTensor::kAttnKBias, LayerTensor::kAttnVBias};
      for (size_t b = 0; b < 3; ++b) {
        FLEA_RETURN_IF_ERROR(read_norm(info(il, biases[b]), &norm));
        FLEA_CUDA_RETURN(cudaMemcpy(ly.qkv_bias[b], norm.data(), norm.size() * 4, cudaMemcpyHostToDevice),
                         "uploading " + info(il, biases[b]).name);
      }
    }
    if (ly.resident == nullptr) continue;
    FLEA_ASSIGN_OR_RETURN(LayerWeights w, weights_->acquire(il));
    for (size_t k = 0; k < kMatrices.size(); ++k) {
      FLEA_CUDA_RETURN(cudaMemcpy(ly.resident + ly.offset[k], w[kMatrices[k]], info(il, kMatrices[k]).n_bytes,
                                  cudaMemcpyHostToDevice),
                       "uploading layer " + std::to_string(il));
    }
    weights_->release(il);
  }
  if (const gguf::TensorInfo* ff = model_.layout.globals[static_cast<int>(GlobalTensor::kRopeFreqs)]) {
    FLEA_RETURN_IF_ERROR(read_norm(*ff, &freq_factors_));  // used on the host for the RoPE angles
  }
  sample_memory();
  return ok_status();
}

// Pins [lo, hi) in place (page-rounded, merged with overlapping earlier registrations, which the
// provider's reused staging buffers produce). False when the driver refuses.
bool CudaSession::ensure_registered(const uint8_t* lo, const uint8_t* hi) {
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  uintptr_t b = reinterpret_cast<uintptr_t>(lo) / page * page;
  uintptr_t e = (reinterpret_cast<uintptr_t>(hi) + page - 1) / page * page;
  for (const auto& r : registered_) {
    if (r.first <= b && e <= r.second) return true;
  }
  // Merge with every overlapping range; nothing is in flight from them (each copy is waited for).
  std::vector<std::pair<uintptr_t, uintptr_t>> keep;
  for (const auto& r : registered_) {
    if (r.second > b && r.first < e) {
      cudaHostUnregister(reinterpret_cast<void*>(r.first));
      cstats_.registered_bytes -= r.second - r.first;
      b = std::min(b, r.first);
      e = std::max(e, r.second);
    } else {
      keep.push_back(r);
    }
  }
  registered_ = std::move(keep);
  const cudaError_t err = cudaHostRegister(reinterpret_cast<void*>(b), e - b, cudaHostRegisterDefault);
  if (err != cudaSuccess) {
    cudaGetLastError();
    cstats_.pin_fallback = std::string("cudaHostRegister of ") + mb_str(e - b) + " failed (" + cudaGetErrorName(err) +
                           "): streaming through the pinned bounce buffer";
    return false;
  }
  registered_.emplace_back(b, e);
  cstats_.registered_bytes += e - b;
  return true;
}

// Host-to-device on the copy stream: straight from pinned memory, or through the two bounce buffers.
Status CudaSession::copy_host(uint8_t* dst, const uint8_t* src, uint64_t n) {
  if (!use_bounce_) {
    FLEA_CUDA_RETURN(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, copy_), "cudaMemcpyAsync (layer H2D)");
    return ok_status();
  }
  for (uint64_t done = 0; done < n;) {
    const uint64_t len = std::min(kBounceBytes, n - done);
    const int b = bounce_next_;
    bounce_next_ ^= 1;
    FLEA_CUDA_RETURN(cudaEventSynchronize(bounce_free_[static_cast<size_t>(b)]), "waiting for a bounce buffer");
    std::memcpy(bounce_[static_cast<size_t>(b)], src + done, len);
    FLEA_CUDA_RETURN(cudaMemcpyAsync(dst + done, bounce_[static_cast<size_t>(b)], len, cudaMemcpyHostToDevice, copy_),
                     "cudaMemcpyAsync (bounce H2D)");
    FLEA_CUDA_RETURN(cudaEventRecord(bounce_free_[static_cast<size_t>(b)], copy_), "cudaEventRecord");
    done += len;
  }
  return ok_status();
}

Status CudaSession::issue(int64_t visit) {
  const int il = vplan_.streamed[static_cast<size_t>(visit % static_cast<int64_t>(vplan_.streamed.size()))];
  const int slot = ring_.slot(visit);
  const size_t s = static_cast<size_t>(slot);
  if (ring_.lookahead() == 0) {
    FLEA_CUDA_RETURN(cudaStreamSynchronize(compute_), "load-then-compute: waiting for the previous layer");
  }
  FLEA_ASSIGN_OR_RETURN(LayerWeights w, weights_->acquire(il));
  const Layer& ly = layers_[static_cast<size_t>(il)];
  if (!use_bounce_) {
    const uint8_t* lo = nullptr;
    const uint8_t* hi = nullptr;
    for (size_t k = 0; k < kMatrices.size(); ++k) {
      const uint8_t* p = w[kMatrices[k]];
      const uint8_t* e = p + info(il, kMatrices[k]).n_bytes;
      lo = lo == nullptr ? p : std::min(lo, p);
      hi = hi == nullptr ? e : std::max(hi, e);
    }
    if (!ensure_registered(lo, hi)) {
      use_bounce_ = true;
      cstats_.pin_mode = "bounce";
    }
  }
  if (ring_.freeing_visit(visit) >= 0) {
    FLEA_CUDA_RETURN(cudaStreamWaitEvent(copy_, slot_free_[s], 0), "cudaStreamWaitEvent (slot free)");
  }
  FLEA_CUDA_RETURN(cudaEventRecord(copy_start_[s], copy_), "cudaEventRecord");
  for (size_t k = 0; k < kMatrices.size(); ++k) {
    FLEA_RETURN_IF_ERROR(copy_host(slots_[s] + ly.offset[k], w[kMatrices[k]], info(il, kMatrices[k]).n_bytes));
  }
  FLEA_CUDA_RETURN(cudaEventRecord(copy_done_[s], copy_), "cudaEventRecord");
  // The host buffer must stay valid until the copy has read it.
  FLEA_CUDA_RETURN(cudaEventSynchronize(copy_done_[s]), "layer H2D copy");
  weights_->release(il);
  float ms = 0.f;
  if (cudaEventElapsedTime(&ms, copy_start_[s], copy_done_[s]) == cudaSuccess) {
    cstats_.h2d_ns += static_cast<int64_t>(static_cast<double>(ms) * 1e6);
  }
  cstats_.h2d_bytes += ly.bytes;
  ++cstats_.h2d_copies;
  ring_.mark_issued(visit);
  return ok_status();
}

cuda::Activations CudaSession::quantize(const float* x, int64_t T, int64_t cols, GgmlType weight_type) {
  cuda::Activations act;
  act.format = cuda::activation_format(weight_type);
  act.cols = cols;
  act.n_tokens = T;
  act.q = act_q_;
  act.d = act_d_;
  cuda::quantize_activations(x, &act, compute_);
  return act;
}

Status CudaSession::forward(const int32_t* tokens, int64_t T, int64_t first_row, float* logits_out) {
  const auto& hp = model_.hp;
  const int64_t E = hp.n_embd, KV = hp.n_embd_kv(), F = hp.n_ff, V = hp.n_vocab;
  const int64_t D = hp.head_dim(), H = hp.n_head, n_pairs = hp.n_rot / 2;
  const float eps = static_cast<float>(hp.rms_eps);
  const float kq_scale = 1.0f / std::sqrt(static_cast<float>(D));

  // Token ids and RoPE angles, computed on the host exactly as the CPU does.
  std::memcpy(host_ids_, tokens, static_cast<size_t>(T) * 4);
  const float theta_scale = std::pow(static_cast<float>(hp.rope_freq_base), -2.0f / static_cast<float>(hp.n_rot));
  const float freq_scale = static_cast<float>(hp.rope_freq_scale);
  for (int64_t t = 0; t < T; ++t) {
    float theta_base = static_cast<float>(n_past_ + t);
    for (int64_t i = 0; i < n_pairs; ++i) {
      const float theta =
          freq_scale * (freq_factors_.empty() ? theta_base : theta_base / freq_factors_[static_cast<size_t>(i)]);
      host_cos_sin_[(t * n_pairs + i) * 2] = std::cos(theta);
      host_cos_sin_[(t * n_pairs + i) * 2 + 1] = std::sin(theta);
      theta_base *= theta_scale;
    }
  }
  FLEA_CUDA_RETURN(cudaMemcpyAsync(ids_, host_ids_, static_cast<size_t>(T) * 4, cudaMemcpyHostToDevice, compute_), "ids H2D");
  FLEA_CUDA_RETURN(cudaMemcpyAsync(cos_sin_, host_cos_sin_, static_cast<size_t>(T * n_pairs * 2) * 4,
                                   cudaMemcpyHostToDevice, compute_), "rope H2D");
  cuda::dequantize_rows(embd_, ids_, T, x_, compute_);

  for (int il = 0; il < static_cast<int>(hp.n_layer); ++il) {
    const int64_t t_acquire = steady_now_ns();
    Layer& ly = layers_[static_cast<size_t>(il)];
    const uint8_t* base = ly.resident;
    int64_t visit = -1;
    if (base == nullptr) {
      visit = next_visit_++;
      if (vplan_.streamed[static_cast<size_t>(visit % static_cast<int64_t>(vplan_.streamed.size()))] != il) {
        return internal_error("--backend cuda: the streaming ring lost its place after an earlier error; "
                              "create a new session");
      }
      while (ring_.next_issue() <= visit) FLEA_RETURN_IF_ERROR(issue(ring_.next_issue()));
      const size_t s = static_cast<size_t>(ring_.slot(visit));
      FLEA_CUDA_RETURN(cudaStreamWaitEvent(compute_, copy_done_[s], 0), "cudaStreamWaitEvent (copy done)");
      base = slots_[s];
    }
    const int64_t t_compute = steady_now_ns();
    auto W = [&](int k) { return matrix(il, k, base); };  // k indexes kMatrices
    if (kv_host_ && n_past_ > 0) {
      // The cached rows [0, n_past) into the working pair (the previous layer's copy-back is
      // ahead of this on the compute stream).
      const size_t bytes = static_cast<size_t>(n_past_ * KV) * 4;
      FLEA_CUDA_RETURN(cudaMemcpyAsync(ly.k_cache, ly.host_k, bytes, cudaMemcpyHostToDevice, compute_), "KV cache H2D (K)");
      FLEA_CUDA_RETURN(cudaMemcpyAsync(ly.v_cache, ly.host_v, bytes, cudaMemcpyHostToDevice, compute_), "KV cache H2D (V)");
      cstats_.kv_h2d_bytes += 2 * static_cast<uint64_t>(bytes);
    }
    float* kc = ly.k_cache + n_past_ * KV;
    float* vc = ly.v_cache + n_past_ * KV;

    // ---- attention block
    cuda::rmsnorm(x_, ly.attn_norm, xn_, T, E, eps, compute_);
    cuda::Activations act = quantize(xn_, T, E, W(0).type);
    cuda::matmul(W(0), act, q_, compute_);                                       // (T, E)
    if (cuda::activation_format(W(1).type) != act.format) act = quantize(xn_, T, E, W(1).type);
    cuda::matmul(W(1), act, kc, compute_);                                        // (T, KV) into the cache
    if (cuda::activation_format(W(2).type) != act.format) act = quantize(xn_, T, E, W(2).type);
    cuda::matmul(W(2), act, vc, compute_);                                        // (T, KV) into the cache
    if (hp.qkv_bias) {
      cuda::add_bias(q_, ly.qkv_bias[0], T, E, compute_);
      cuda::add_bias(kc, ly.qkv_bias[1], T, KV, compute_);
      cuda::add_bias(vc, ly.qkv_bias[2], T, KV, compute_);
    }
    const bool neox = hp.rope_type == RopeType::kNeox;
    cuda::rope(q_, cos_sin_, T, H, D, hp.n_rot, neox, compute_);
    cuda::rope(kc, cos_sin_, T, hp.n_head_kv, D, hp.n_rot, neox, compute_);
    cuda::attention(q_, ly.k_cache, ly.v_cache, att_, T, n_past_, H, hp.n_head_kv, D, kq_scale, compute_);
    if (kv_host_) {
      // The batch's rows [n_past, n_past + T), K after RoPE, back to the host cache; the next
      // layer's copy-in to the same working pair is behind this on the compute stream.
      const size_t bytes = static_cast<size_t>(T * KV) * 4;
      FLEA_CUDA_RETURN(cudaMemcpyAsync(ly.host_k + n_past_ * KV, kc, bytes, cudaMemcpyDeviceToHost, compute_),
                       "KV cache D2H (K)");
      FLEA_CUDA_RETURN(cudaMemcpyAsync(ly.host_v + n_past_ * KV, vc, bytes, cudaMemcpyDeviceToHost, compute_),
                       "KV cache D2H (V)");
      cstats_.kv_d2h_bytes += 2 * static_cast<uint64_t>(bytes);
    }
    act = quantize(att_, T, E, W(3).type);
    cuda::matmul(W(3), act, xn_, compute_);                                       // (T, E)
    cuda::add_inplace(x_, xn_, T * E, compute_);

    // ---- feed-forward block (SwiGLU)
    cuda::rmsnorm(x_, ly.ffn_norm, xn_, T, E, eps, compute_);
    act = quantize(xn_, T, E, W(4).type);
    cuda::matmul(W(4), act, gate_, compute_);                                     // (T, F)
    if (cuda::activation_format(W(5).type) != act.format) act = quantize(xn_, T, E, W(5).type);
    cuda::matmul(W(5), act, up_, compute_);                                       // (T, F)
    cuda::swiglu(gate_, up_, T * F, compute_);
    act = quantize(gate_, T, F, W(6).type);
    cuda::matmul(W(6), act, xn_, compute_);                                       // (T, E)
    cuda::add_inplace(x_, xn_, T * E, compute_);
    FLEA_CUDA_RETURN(cudaGetLastError(), "layer " + std::to_string(il) + " kernels");

    const int64_t t_issue = steady_now_ns();
    if (visit >= 0) {
      FLEA_CUDA_RETURN(cudaEventRecord(slot_free_[static_cast<size_t>(ring_.slot(visit))], compute_), "cudaEventRecord");
      while (ring_.next_issue() <= visit + ring_.lookahead()) FLEA_RETURN_IF_ERROR(issue(ring_.next_issue()));
    }
    const int64_t t_done = steady_now_ns();
    stats_.acquire_ns[static_cast<size_t>(il)] += (t_compute - t_acquire) + (t_done - t_issue);
    stats_.compute_ns[static_cast<size_t>(il)] += t_issue - t_compute;
  }
  n_past_ += T;

  if (logits_out != nullptr) {
    const int64_t rows = T - first_row;
    cuda::rmsnorm(x_ + first_row * E, out_norm_, xn_, rows, E, eps, compute_);
    cuda::Activations act = quantize(xn_, rows, E, out_.type);
    cuda::matmul(out_, act, logits_, compute_);
    FLEA_CUDA_RETURN(cudaGetLastError(), "output kernels");
    FLEA_CUDA_RETURN(cudaMemcpyAsync(logits_out, logits_, static_cast<size_t>(rows * V) * 4, cudaMemcpyDeviceToHost,
                                     compute_), "logits D2H");
  }
  // Also keeps the pinned ids / angles from being overwritten while a copy still reads them.
  FLEA_CUDA_RETURN(cudaStreamSynchronize(compute_), "forward pass");
  return ok_status();
}

Status CudaSession::eval(const std::vector<int32_t>& tokens, std::vector<float>* logits, bool all_logits) {
  const int64_t T = static_cast<int64_t>(tokens.size());
  const int64_t V = model_.hp.n_vocab;
  if (T == 0) return invalid_argument("eval: no tokens");
  if (n_past_ + T > n_ctx_) {
    return out_of_range("eval: " + std::to_string(n_past_ + T) + " positions exceed the context of " +
                        std::to_string(n_ctx_));
  }
  for (int32_t tok : tokens) {
    if (tok < 0 || tok >= V) {
      return out_of_range("token id " + std::to_string(tok) + " outside the vocabulary [0, " + std::to_string(V) + ")");
    }
  }
  ++stats_.forward_calls;
  if (logits != nullptr) logits->resize(static_cast<size_t>((all_logits ? T : 1) * V));
  for (int64_t s = 0; s < T; s += max_batch_) {
    const int64_t n = std::min(max_batch_, T - s);
    const bool last = s + n == T;
    float* out = nullptr;
    int64_t first = 0;
    if (logits != nullptr && all_logits) {
      out = logits->data() + s * V;
    } else if (logits != nullptr && last) {
      out = logits->data();
      first = n - 1;
    }
    FLEA_RETURN_IF_ERROR(forward(tokens.data() + s, n, first, out));
  }
  sample_memory();
  return ok_status();
}

void CudaSession::sample_memory() {
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
    cudaGetLastError();
    return;
  }
  cstats_.device_used_peak_mb = std::max(cstats_.device_used_peak_mb, vram::to_mb(total_b - free_b));
}

}  // namespace

std::string CudaStats::to_json() const {
  nlohmann::json j;
  j["device"] = device_name;
  j["vram_budget_mb"] = vram_budget_mb;
  j["vram_budget_source"] = vram_budget_source;
  j["vram_arena_mb"] = arena_mb;
  j["vram_arena_peak_mb"] = arena_peak_mb;
  j["vram_device_used_before_mb"] = device_used_before_mb;
  j["vram_device_used_peak_mb"] = device_used_peak_mb;
  j["resident_layers"] = resident_layers;
  j["streamed_layers"] = streamed_layers;
  j["ring_slots"] = ring_slots;
  j["lookahead"] = lookahead;
  j["slot_mb"] = slot_mb;
  j["h2d_bytes"] = h2d_bytes;
  j["h2d_ns"] = h2d_ns;
  j["h2d_copies"] = h2d_copies;
  j["h2d_gb_s"] = h2d_gb_s();
  j["pin_mode"] = pin_mode;
  j["pin_fallback"] = pin_fallback;
  j["registered_bytes"] = registered_bytes;
  j["plan"] = plan;
  j["kv_mode"] = kv_mode;
  j["kv_host_mb"] = kv_host_mb;
  j["kv_vram_mb"] = kv_vram_mb;
  j["kv_h2d_bytes"] = kv_h2d_bytes;
  j["kv_d2h_bytes"] = kv_d2h_bytes;
  return j.dump();
}

bool cuda_device_available(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why != nullptr) *why = std::string("cudaGetDeviceCount: ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
    cudaGetLastError();
    return false;
  }
  if (n == 0) {
    if (why != nullptr) *why = "cudaGetDeviceCount found no CUDA device";
    return false;
  }
  return true;
}

StatusOr<std::unique_ptr<Evaluator>> make_cuda_session(const Model& model, WeightProvider* weights, const Plan& plan,
                                                       const ResidencyOptions& opts, int64_t n_ctx,
                                                       const CudaOptions& cuda_opts) {
  std::string why;
  if (!cuda_device_available(&why)) return unimplemented("--backend cuda: no usable GPU: " + why);
  auto s = std::make_unique<CudaSession>(model, weights, plan, opts, n_ctx, cuda_opts);
  FLEA_RETURN_IF_ERROR(s->init());
  return std::unique_ptr<Evaluator>(std::move(s));
}

StatusOr<std::unique_ptr<Evaluator>> make_cuda_session(const Model& model, WeightProvider* weights, const Plan& plan,
                                                       const ResidencyOptions& opts, int64_t n_ctx) {
  return make_cuda_session(model, weights, plan, opts, n_ctx, CudaOptions{});
}

const CudaStats* cuda_stats(const Evaluator& session) {
  auto* s = dynamic_cast<const CudaSession*>(&session);
  if (s == nullptr) return nullptr;
  return &const_cast<CudaSession*>(s)->cuda_stats();
}

}  // namespace flea
