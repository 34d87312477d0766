// Sweep expansion: scalar keys, list-valued keys (cartesian product, table order, model outermost)
// and explicit `points:`; then ordered so every model is prepared once and its runs sit together,
// each baseline placed right after the first run it serves.
#pragma once

#include <string>
#include <vector>

#include "profile.h"
#include "scenario.h"

namespace flea::harness {

struct ModelRef {
  std::string spec;        // as written: a path, synth:<shape>:<type>[:seed][:skew=S], reference:<file>
  std::string path;        // the GGUF file the engine opens
  bool synth = false;
  std::string shape, type;
  uint64_t seed = 0;
  double expert_skew = 0;  // flea synth --expert-skew (MoE shapes)
};

// synth: models land in $FLEA_CACHE_DIR, else <repo>/.cache/models. After shape and type a synth spec
// takes `seed=N` (or a bare N first) and `skew=S`, in any order; a skew > 0 is part of the file name.
std::string default_cache_dir();
// The `flea synth` arguments that write a synth: model (without --out).
std::vector<std::string> synth_args(const ModelRef& m);
StatusOr<ModelRef> resolve_model(const std::string& spec, const std::string& scenario_dir,
                                 const std::string& reference_dir, const std::string& cache_dir);

struct RunSpec {
  std::string id;                 // r0001, ...
  std::string engine = "flea";    // flea | flea-serve | llama-bench | load-then-compute
  Json point;                     // effective (defaults + profile caps)
  Json requested_point;           // before profile caps
  ModelRef model;
  int baseline_index = -1;        // baselines[i] for a baseline run
  std::vector<std::string> serves;  // ids of the flea runs a baseline run is compared with
  int64_t n_layer_hint = 0;       // llama-bench -ngl fitting: n_layer from a flea run on the model
  std::string draft_path;         // speculative points: the draft GGUF the engine opens
};

struct SweepOptions {
  const Profile* emulate = nullptr;   // caps budgets and throttles storage when set
  std::string reference_dir;          // where `reference` models come from ("" = none)
  std::vector<std::string> reference_models;  // manifest case file names, in manifest order
  std::string cache_dir;
};

// Errors name the scenario file and the offending point.
StatusOr<std::vector<RunSpec>> expand_sweep(const Scenario& s, const SweepOptions& o);

// "engine|{point}" identity used by --resume to skip finished points (independent of key order).
std::string run_key(const std::string& engine, const Json& point);

}  // namespace flea::harness
