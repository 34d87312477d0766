#include "engine_cli.h"

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "flea/clock.h"
#include "commands.h"
#ifdef FLEA_HAVE_CUDA
#include "compute/cuda/cuda_session.h"
#endif

namespace flea::cli {

void add_engine_flags(CLI::App& app, EngineOptions* opts) {
  app.add_option("--model,-m", opts->model, "GGUF model file")->required();
  app.add_option("--backend", opts->backend, "compute backend")
      ->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  app.add_option("--threads,-t", opts->threads, "compute threads (0 = all hardware threads)")
      ->check(CLI::Range(0, 1024))->capture_default_str();
  app.add_option("--kv-type", opts->kv_type,
                 "KV cache element type: f16 (CPU default, half the memory) or f32 (the CUDA backend's only type)")
      ->check(CLI::IsMember({"f16", "f32"}));
  add_residency_flags(app, &opts->residency);
}

StatusOr<Engine> open_engine(const EngineOptions& opts, bool with_weights) {
#ifndef FLEA_HAVE_CUDA
  if (opts.backend == "cuda") {
    return unimplemented("--backend cuda: this build has no CUDA backend (configure with -DFLEA_CUDA=ON and nvcc)");
  }
#endif
  Engine e;
  e.backend = opts.backend;
  if (opts.backend == "cuda" && opts.kv_type == "f16") {
    return unimplemented("--kv-type f16: the CUDA backend's KV cache is F32 only (use --kv-type f32 or leave it out)");
  }
  if (!opts.kv_type.empty() && !cpu::parse_kv_type(opts.kv_type, &e.kv_type)) {
    return invalid_argument("--kv-type: unknown type '" + opts.kv_type + "' (f16 or f32)");
  }
  if (opts.backend == "cuda") e.kv_type = cpu::KvType::kF32;
  e.residency = opts.residency;
  FLEA_ASSIGN_OR_RETURN(e.model, Model::open(opts.model));
  // The CPU backend's weights, staging, KV cache and scratch all live in host memory: the plan must
  // fit the machine. (CUDA sizes `auto` against free VRAM in the session, where it has the device.)
  ResidencyOptions ro = opts.residency;
  if (opts.backend == "cpu") {
    StatusOr<HostMemory> host = probe_host_memory();
    if (host.ok()) {
      ro.host_memory = *host;
      ro.kv_bytes = session_kv_bytes(e.model->hp, opts.n_ctx, opts.n_seq, e.kv_type);
      ro.scratch_bytes = session_scratch_bytes(e.model->hp, opts.n_rows, opts.n_logit_rows);
    } else {
      std::fprintf(stderr, "flea: %s: the residency plan is not checked against the machine\n",
                   host.status().message().c_str());
    }
  }
  FLEA_ASSIGN_OR_RETURN(Plan plan, plan_residency(e.model->file, e.model->layout, ro, nullptr));
  e.plan = std::make_unique<Plan>(std::move(plan));
  e.telemetry = std::make_unique<Telemetry>();
  if (with_weights) {
    FLEA_ASSIGN_OR_RETURN(e.weights, make_provider(opts.model, e.model->file, e.model->layout, *e.plan,
                                                   opts.residency, e.telemetry.get()));
  }
  int threads = opts.threads > 0 ? opts.threads : static_cast<int>(std::thread::hardware_concurrency());
  e.pool = std::make_unique<cpu::ThreadPool>(std::max(1, threads));
  return e;
}

StatusOr<Engine> open_draft_engine(const EngineOptions& target, const std::string& draft_path, int64_t n_vocab) {
  EngineOptions opts = target;
  opts.model = draft_path;
  opts.residency = ResidencyOptions{};
  FLEA_ASSIGN_OR_RETURN(Engine draft, open_engine(opts));
  if (draft.model->hp.n_vocab != n_vocab) {
    return invalid_argument(draft_path + " has a vocabulary of " + std::to_string(draft.model->hp.n_vocab) +
                            " tokens, the model has " + std::to_string(n_vocab));
  }
  return draft;
}

StatusOr<std::unique_ptr<Evaluator>> make_session(Engine& engine, int64_t n_ctx, int n_seq, const std::string& kv) {
  if (kv != "resident" && kv != "none" && kv != "host") {
    return invalid_argument("--kv: unknown mode '" + kv + "' (resident, none or host)");
  }
  if (engine.backend == "cuda") {
#ifdef FLEA_HAVE_CUDA
    if (n_seq != 1) return unimplemented("--backend cuda decodes one sequence at a time (--batch 1)");
    CudaOptions copts;
    copts.kv = kv == "host" ? "host" : "resident";
    return make_cuda_session(*engine.model, engine.weights.get(), *engine.plan, engine.residency, n_ctx, copts);
#else
    return unimplemented("--backend cuda: this build has no CUDA backend");
#endif
  }
  return std::unique_ptr<Evaluator>(
      std::make_unique<Session>(*engine.model, engine.weights.get(), engine.pool.get(), n_ctx, n_seq,
                                /*bound_chunked_kv=*/true, engine.kv_type));
}

StatusOr<std::vector<int32_t>> parse_token_list(const std::string& text) {
  std::vector<int32_t> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string::npos) comma = text.size();
    std::string item = text.substr(pos, comma - pos);
    char* end = nullptr;
    errno = 0;
    long v = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || errno != 0 || v < 0 || v > INT32_MAX) {
      return invalid_argument("--tokens: item " + std::to_string(out.size()) + " '" + item +
                              "' is not a token id (expected a comma-separated list of integers >= 0)");
    }
    out.push_back(static_cast<int32_t>(v));
    pos = comma + 1;
  }
  if (out.empty()) return invalid_argument("--tokens: empty list");
  return out;
}

int parse_or_exit(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  return -1;
}

int report_error(const char* command, const Status& status, int exit_code) {
  std::fprintf(stderr, "flea %s: %s\n", command, status.message().c_str());
  return exit_code;
}

int64_t peak_rss_bytes() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<int64_t>(ru.ru_maxrss) * 1024;
}

}  // namespace flea::cli
