// The residency/io flags shared by `flea logits`, `generate` and `bench`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "flea/status.h"
#include "io/io_backend.h"
#include "model/weights.h"
#include "residency/host_memory.h"

namespace CLI { class App; }

namespace flea {

struct ResidencyOptions {
  std::string residency = "full";   // full | transient | auto
  std::string io = "pread";         // pread | odirect | io_uring | mmap (or a composed io spec, see io_backend.h)
  int prefetch = 1;                 // 0 = load then compute, 1 = double buffer, N = N layers ahead
  int64_t vram_budget_mb = 0;       // 0 = unlimited; on CPU this is the weight-memory budget
  int64_t ram_budget_mb = 0;        // 0 = unlimited (and no cache); host RAM for staging + cache
  double throttle_gb_s = 0;         // > 0 wraps the backend in throttled()
  int io_threads = 1;
  int queue_depth = 4;              // io_uring reads in flight
  int64_t io_block_kb = 1024;       // odirect/io_uring request size; 0 = whole layer span per request
  // Staging slots, cached layers and the globals buffer ask for transparent huge pages (on) or
  // stay on 4 KiB pages (off); see io/aligned_buffer.h for why it matters to O_DIRECT.
  std::string huge_pages = "on";
  // Mixture-of-experts layers that stream: `expert` reads the dense part (attention, router, shared
  // expert) ahead like any layer and then only the routed experts, through a per-layer expert cache;
  // `layer` streams the whole layer, every expert, as a dense one (the layer-granular baseline).
  std::string expert_residency = "expert";
  int expert_cache = -1;            // experts cached per MoE layer; -1 = as many as --ram-budget-mb allows
  std::string expert_policy = "lru";  // lru | lfu: which cached expert of a layer gives way
  std::string fault_plan;           // tests only: wraps the backend in faulty() (see FaultPlan::parse)

  // Not flags: the machine the plan must fit, set by whoever opens the engine (the CLI probes it
  // with probe_host_memory(); tests inject one). Unset = not checked: `auto` without a budget then
  // keeps every layer resident. With it, `auto` without --vram-budget-mb takes what the machine has
  // less kv_bytes + scratch_bytes (the session's, allocated beside the weights), the staging ring
  // and a margin, and a plan that needs more than the machine has is refused (see plan.h).
  std::optional<HostMemory> host_memory;
  uint64_t kv_bytes = 0;       // K/V cache the session will hold in host memory
  uint64_t scratch_bytes = 0;  // its activations and logits
  LayerSlice slice;            // not a flag: set by the pipeline for each rank
};

// --residency --io --prefetch --vram-budget-mb --ram-budget-mb --throttle-gb-s --io-threads
// --queue-depth --io-block-kb --huge-pages --expert-residency --expert-cache --expert-policy, with
// help text and allowed values.
void add_residency_flags(CLI::App& app, ResidencyOptions* opts);

// Range and name checks (the CLI validators do the same; this is for the harness and tests).
Status validate_residency_options(const ResidencyOptions& opts);

io::IoBackendOptions io_backend_options(const ResidencyOptions& opts);
// The backend the options describe (throttled/faulty wrappers applied), not yet opened.
StatusOr<std::unique_ptr<io::IoBackend>> make_backend(const ResidencyOptions& opts);

}  // namespace flea
