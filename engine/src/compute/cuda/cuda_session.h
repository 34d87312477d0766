// The CUDA compute backend: the CPU Session's forward pass on one GPU, with the weights in a VRAM
// arena under a hard budget. Global tensors, norms, the KV cache and the layers the plan keeps
// resident are uploaded once; every other layer is copied from the WeightProvider's host buffers
// into a ring of VRAM slots on a copy stream, `lookahead` layers ahead of the compute stream
// (see compute/vram/vram_arena.h for the budget split and the ring schedule).
// The K/V cache lives in VRAM for every layer (kv "resident") or, with kv "host", in pinned host
// memory: VRAM then holds one layer's working K/V pair, filled from the host cache before each
// layer and written back after it (same kernels on the same data: the logits do not change).
//
// Built only with -DFLEA_CUDA=ON (FLEA_HAVE_CUDA defined); host code may include this header.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "flea/status.h"
#include "model/llama.h"
#include "residency/options.h"
#include "residency/plan.h"

namespace flea {

struct CudaOptions {
  int device = 0;
  int64_t max_batch = 128;  // tokens per micro-batch: bounds the activation scratch in VRAM
  // How streamed layers reach the GPU: "auto" pins the provider's host buffers in place with
  // cudaHostRegister (falling back to the bounce buffer, recorded in the stats, when that fails or
  // with --io mmap); "bounce" always memcpys through a pinned bounce buffer.
  std::string pin = "auto";
  // Where the K/V cache lives: "resident" (every layer's in VRAM) or "host" (pinned host memory,
  // n_layer * 2 * n_ctx * n_embd_kv * 4 bytes; per layer, rows [0, n_past) are copied into one
  // working pair in VRAM and the batch's new rows copied back, all on the compute stream).
  std::string kv = "resident";
};

struct CudaStats {
  std::string device_name;
  double vram_budget_mb = 0;          // 0 = unlimited
  std::string vram_budget_source;     // "--vram-budget-mb N", or for auto without one "cudaMemGetInfo free ..."
  double arena_mb = 0;                // own accounting: the one device allocation
  double arena_peak_mb = 0;
  double device_used_before_mb = 0;   // cudaMemGetInfo (total - free) before the session allocated
  double device_used_peak_mb = 0;     // cudaMemGetInfo (total - free), highest sample
  int resident_layers = 0, streamed_layers = 0, ring_slots = 0, lookahead = 0;
  double slot_mb = 0;
  uint64_t h2d_bytes = 0;             // streamed-layer copies since the session started
  int64_t h2d_ns = 0;                 // their duration on the copy stream (event to event)
  int64_t h2d_copies = 0;             // layer copies
  std::string pin_mode;               // "registered" or "bounce"
  std::string pin_fallback;           // why "auto" fell back to the bounce buffer, if it did
  uint64_t registered_bytes = 0;      // host memory pinned with cudaHostRegister
  std::string plan;                   // VramPlan::to_string()
  std::string kv_mode;                // "resident" or "host"
  double kv_host_mb = 0;              // pinned host cache (host mode; 0 otherwise)
  double kv_vram_mb = 0;              // VRAM held for K/V: every layer's, or one working pair
  uint64_t kv_h2d_bytes = 0;          // host mode: cached rows copied in, sum of n_past * KV * 4 * 2 per layer
  uint64_t kv_d2h_bytes = 0;          // host mode: new rows copied back, sum of T * KV * 4 * 2 per layer

  double h2d_gb_s() const { return h2d_ns > 0 ? static_cast<double>(h2d_bytes) / static_cast<double>(h2d_ns) : 0.0; }
  std::string to_json() const;  // one JSON object, units in the field names
};

// True when a CUDA device can be used; otherwise *why says what cudaGetDeviceCount reported.
bool cuda_device_available(std::string* why);

// A session on the GPU over the engine's model, provider and residency plan (the same objects the
// CPU Session uses). --residency full keeps every layer in VRAM (an error when the budget cannot
// hold it), transient streams every layer, auto keeps the plan's resident layers in VRAM while
// they fit opts.vram_budget_mb. Errors: no device, unsupported tensor type or shape, budget too
// small (stating the minimum), cudaMalloc / cudaHostAlloc failures (naming what and how much),
// an unknown cuda_opts.kv.
StatusOr<std::unique_ptr<Evaluator>> make_cuda_session(const Model& model, WeightProvider* weights, const Plan& plan,
                                                       const ResidencyOptions& opts, int64_t n_ctx);
StatusOr<std::unique_ptr<Evaluator>> make_cuda_session(const Model& model, WeightProvider* weights, const Plan& plan,
                                                       const ResidencyOptions& opts, int64_t n_ctx,
                                                       const CudaOptions& cuda_opts);

// The statistics of a session made by make_cuda_session (nullptr for any other Evaluator).
// Samples cudaMemGetInfo and reads the copy-stream totals; call between evals.
const CudaStats* cuda_stats(const Evaluator& session);

}  // namespace flea
