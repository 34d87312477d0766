#include "residency/options.h"

#include <CLI/CLI.hpp>

namespace flea {

namespace {
const std::vector<std::string> kResidencies = {"full", "transient", "auto"};
std::vector<std::string> io_names() {
  std::vector<std::string> v;
  for (const std::string& n : io::known_io_backends())
    if (n != "throttled" && n != "faulty") v.push_back(n);
  return v;
}
}  // namespace

void add_residency_flags(CLI::App& app, ResidencyOptions* o) {
  app.add_option("--residency", o->residency,
                 "full: every tensor resident; transient: every layer streams (embeddings, output, "
                 "norms stay); auto: keep whole layers resident while they fit --vram-budget-mb (without it: what the "
                 "machine has, less KV cache, scratch, staging and a margin)")
      ->check(CLI::IsMember(kResidencies))
      ->capture_default_str();
  app.add_option("--io", o->io, "I/O backend for reading weights")
      ->check(CLI::IsMember(io_names()))
      ->capture_default_str();
  app.add_option("--prefetch", o->prefetch,
                 "layers read ahead of compute: 0 = load then compute, 1 = double buffer, N = N ahead")
      ->check(CLI::Range(0, 64))
      ->capture_default_str();
  app.add_option("--vram-budget-mb", o->vram_budget_mb,
                 "weight-memory budget in MiB (device memory with CUDA, host memory on CPU); 0 = unlimited, or for "
                 "--residency auto what the machine has; more than the machine has is refused")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--ram-budget-mb", o->ram_budget_mb,
                 "host RAM in MiB for staging buffers and the cache of evicted layers; 0 = unlimited, no cache")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--throttle-gb-s", o->throttle_gb_s,
                 "emulate a slower disk: cap reads at this many GB/s (0 = off)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--io-threads", o->io_threads, "dedicated I/O threads reading ahead")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--queue-depth", o->queue_depth, "io_uring reads kept in flight")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--io-block-kb", o->io_block_kb,
                 "request size in KiB for odirect/io_uring (multiple of 4); 0 = one request per layer")
      ->check(CLI::Range(static_cast<int64_t>(0), static_cast<int64_t>(1) << 21))
      ->capture_default_str();
  app.add_option("--huge-pages", o->huge_pages,
                 "on: staging and cache buffers of 2 MiB and more ask for transparent huge pages "
                 "(madvise; O_DIRECT then pins 512x fewer pages per read); off: 4 KiB pages")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  app.add_option("--expert-residency", o->expert_residency,
                 "MoE layers that stream: expert = read the dense part ahead, then only the routed experts "
                 "(with an expert cache); layer = read every expert with the layer")
      ->check(CLI::IsMember({"expert", "layer"}))
      ->capture_default_str();
  app.add_option("--expert-cache", o->expert_cache,
                 "experts kept in RAM per MoE layer after use; -1 = as many as --ram-budget-mb leaves "
                 "(none when the budget is 0 = unlimited)")
      ->check(CLI::Range(-1, 4096))
      ->capture_default_str();
  app.add_option("--expert-policy", o->expert_policy,
                 "which cached expert of a layer gives way: lru = least recently used; lfu = least often "
                 "routed so far (an expert routed less often than every cached one is not cached)")
      ->check(CLI::IsMember({"lru", "lfu"}))
      ->capture_default_str();
}

Status validate_residency_options(const ResidencyOptions& o) {
  if (std::find(kResidencies.begin(), kResidencies.end(), o.residency) == kResidencies.end())
    return invalid_argument("--residency '" + o.residency + "' unknown; known: full, transient, auto");
  if (o.prefetch < 0 || o.prefetch > 64) return out_of_range("--prefetch must be in [0, 64], got " + std::to_string(o.prefetch));
  if (o.vram_budget_mb < 0) return out_of_range("--vram-budget-mb must be >= 0");
  if (o.ram_budget_mb < 0) return out_of_range("--ram-budget-mb must be >= 0");
  if (o.throttle_gb_s < 0) return out_of_range("--throttle-gb-s must be >= 0");
  if (o.io_threads < 1 || o.io_threads > 64) return out_of_range("--io-threads must be in [1, 64]");
  if (o.queue_depth < 1 || o.queue_depth > 4096) return out_of_range("--queue-depth must be in [1, 4096]");
  if (o.io_block_kb < 0 || o.io_block_kb % 4 != 0)
    return out_of_range("--io-block-kb must be a non-negative multiple of 4, got " + std::to_string(o.io_block_kb));
  if (o.huge_pages != "on" && o.huge_pages != "off")
    return invalid_argument("--huge-pages '" + o.huge_pages + "' unknown; expected on or off");
  if (o.expert_residency != "expert" && o.expert_residency != "layer")
    return invalid_argument("--expert-residency '" + o.expert_residency + "' unknown; expected expert or layer");
  if (o.expert_cache < -1 || o.expert_cache > 4096)
    return out_of_range("--expert-cache must be in [-1, 4096], got " + std::to_string(o.expert_cache));
  if (o.expert_policy != "lru" && o.expert_policy != "lfu")
    return invalid_argument("--expert-policy '" + o.expert_policy + "' unknown; expected lru or lfu");
  return ok_status();
}

io::IoBackendOptions io_backend_options(const ResidencyOptions& o) {
  io::IoBackendOptions b;
  b.queue_depth = o.queue_depth;
  b.block_bytes = static_cast<uint64_t>(o.io_block_kb) * 1024;
  b.throttle_gb_s = o.throttle_gb_s;
  return b;
}

StatusOr<std::unique_ptr<io::IoBackend>> make_backend(const ResidencyOptions& o) {
  FLEA_RETURN_IF_ERROR(validate_residency_options(o));
  const io::IoBackendOptions bo = io_backend_options(o);
  FLEA_ASSIGN_OR_RETURN(std::unique_ptr<io::IoBackend> b, io::make_io_backend(o.io, bo));
  if (!o.fault_plan.empty()) {
    FLEA_ASSIGN_OR_RETURN(io::FaultPlan plan, io::FaultPlan::parse(o.fault_plan));
    b = io::make_faulty_backend(std::move(b), std::move(plan));
  }
  if (o.throttle_gb_s > 0) b = io::make_throttled_backend(std::move(b), o.throttle_gb_s);
  return b;
}

}  // namespace flea
