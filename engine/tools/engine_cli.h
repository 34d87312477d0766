// What logits, generate and bench share: the model/threads/backend/residency flags and opening
// the model with the weight provider the residency plan asks for.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <vector>

#include "compute/cpu/thread_pool.h"
#include "model/llama.h"
#include "residency/options.h"
#include "residency/plan.h"
#include "residency/provider.h"
#include "residency/telemetry.h"

namespace flea::cli {

struct EngineOptions {
  std::string model;
  std::string backend = "cpu";
  int threads = 0;  // 0 = all hardware threads
  // --kv-type: the KV cache's element type, "f16" or "f32"; empty = the backend's own (CPU: f16; CUDA:
  // f32, the only type its cache has, so f16 there is refused).
  std::string kv_type;
  ResidencyOptions residency;
  // The sessions this engine will run, for the host memory `--residency auto` sets aside beside the
  // weights (KV cache + scratch). Not flags: each command fills them in before open_engine.
  int64_t n_ctx = 1;         // positions per sequence
  int n_seq = 1;
  int64_t n_rows = 1;        // rows of the largest eval (a prompt, times the sequences)
  int64_t n_logit_rows = 1;  // rows of logits it returns
};

void add_engine_flags(CLI::App& app, EngineOptions* opts);

struct Engine {
  std::string backend = "cpu";
  cpu::KvType kv_type = cpu::KvType::kF16;  // the CPU session's cache (CUDA's is F32)
  ResidencyOptions residency;
  std::unique_ptr<Model> model;
  std::unique_ptr<Telemetry> telemetry;
  std::unique_ptr<Plan> plan;
  std::unique_ptr<WeightProvider> weights;
  std::unique_ptr<cpu::ThreadPool> pool;
};

// Opens the model, plans residency (on the CPU backend against the machine: probe_host_memory(),
// less the KV cache and scratch of the sessions opts describes) and (unless with_weights is false: `bench --compute none`
// builds its own reader) creates the weight provider.
StatusOr<Engine> open_engine(const EngineOptions& opts, bool with_weights = true);

// The draft model of speculative decoding: opened with the target's backend and threads but no
// residency flags (it stays resident); its vocabulary must be the target's n_vocab.
StatusOr<Engine> open_draft_engine(const EngineOptions& target, const std::string& draft_path, int64_t n_vocab);

// A decoding session on the engine's compute backend with room for n_ctx positions in each of
// n_seq sequences. kv is the --kv mode: "resident" (the default) and "none" keep the cache where
// the backend computes (with "none" the caller resets the session every token); "host" keeps it
// in pinned host memory streamed to the GPU per layer on the CUDA backend, and is the same as
// resident on the CPU backend (whose cache is in host memory already). Anything else is an error.
StatusOr<std::unique_ptr<Evaluator>> make_session(Engine& engine, int64_t n_ctx, int n_seq = 1,
                                                  const std::string& kv = "resident");

// "1,2,3" -> {1, 2, 3}; errors name the offending item.
StatusOr<std::vector<int32_t>> parse_token_list(const std::string& text);

// Prints "flea <command>: <message>" on stderr and returns exit_code.
int report_error(const char* command, const Status& status, int exit_code);

int64_t peak_rss_bytes();

}  // namespace flea::cli
