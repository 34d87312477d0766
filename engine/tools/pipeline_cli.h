// --pipeline for logits and generate: this process is one rank of
//   mpirun -np N flea <command> ... --pipeline
// Every rank parses its own flags (so MPMD launches can give ranks different residency flags),
// opens only its own layers and runs; rank 0 alone prints and writes the command's output.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "engine_cli.h"
#include "pipeline/comm.h"
#include "pipeline/stage.h"

namespace flea::cli {

void add_pipeline_flag(CLI::App& app, bool* pipeline);

struct Pipeline {
  // Declared in the order they must be built; destroyed in reverse (rank 0's evaluator tells the
  // others to stop before MPI is finalized).
  std::unique_ptr<pipeline::Comm> comm;
  Engine engine;
  std::unique_ptr<Session> session;
  std::unique_ptr<pipeline::PipelineEvaluator> evaluator;  // rank 0 only
  std::vector<LayerSlice> split;
  pipeline::StageStats stats;  // ranks > 0 (rank 0's are the evaluator's)

  bool driver() const { return comm->rank() == 0; }
};

// Starts MPI, splits the layers over the ranks (pipeline/split.h, from each rank's --ram-budget-mb)
// and opens this rank's slice of the model with a session of n_ctx positions. Rank 0 prints the
// split on stderr. When any rank fails, rank 0 prints one line naming the first failing rank and
// its error, and every rank gets the exit code to return (>= 0); -1 = go on.
int open_pipeline(const char* command, const EngineOptions& opts, int64_t n_ctx, Pipeline* p);

// Ranks > 0: evaluate what arrives until rank 0 stops the pipeline, then hand rank 0 this rank's
// figures (stop_pipeline); the exit code.
int serve_pipeline(const char* command, Pipeline* p);

// Rank 0, when done: tells the other ranks to stop and gathers every rank's figures as JSON
// ([{"rank", "layer_begin", "layer_end", "steps", "compute_ns", "wait_ns", "send_ns", "sent_bytes",
// "read_bytes"}], rank 0's wait being for the logits). Does nothing (null) outside a pipeline.
nlohmann::json stop_pipeline(Pipeline* p);

}  // namespace flea::cli
