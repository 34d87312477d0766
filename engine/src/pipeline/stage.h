// A pipeline of Sessions over processes (issue #22): rank r evaluates its LayerSlice and hands the
// hidden states ([T × n_embd] floats) to rank r + 1; the last rank returns the logits to rank 0.
//
//   rank 0:        rows --embed, layers [0, a)--> x ----> rank 1 ... rank N-1 --head--> logits --> rank 0
//
// Rank 0 drives: its PipelineEvaluator is an ordinary Evaluator, so logits/generate run unchanged
// on it. The other ranks run serve_stage() until rank 0 says stop. A stage that fails passes the
// error (with its rank) down the chain to rank 0 instead of hanging the others.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/llama.h"
#include "pipeline/comm.h"

namespace flea::pipeline {

// Per-rank figures, summed over the steps (telemetry merged by rank 0).
struct StageStats {
  int64_t steps = 0;
  int64_t compute_ns = 0;  // eval_stage (acquiring weights included)
  int64_t wait_ns = 0;     // blocked receiving the hidden states (rank 0: the logits)
  int64_t send_ns = 0;     // sending them on
  uint64_t sent_bytes = 0;
};

class PipelineEvaluator final : public Evaluator {
 public:
  // `local` is rank 0's Session (the first slice); `comm` must outlive this.
  PipelineEvaluator(Session* local, Comm* comm, int64_t n_vocab);
  ~PipelineEvaluator() override;  // stop() if not yet done

  Status eval(const std::vector<int32_t>& tokens, std::vector<float>* logits, bool all_logits) override;
  Status eval_batch(const std::vector<BatchRow>& rows, std::vector<float>* logits, bool all_logits) override;
  // Positions are kept per rank: resetting would need every rank told; not needed by logits/generate.
  void reset() override;
  int n_seq() const override { return local_->n_seq(); }
  int64_t n_past() const override { return local_->n_past(); }
  int64_t n_ctx() const override { return local_->n_ctx(); }
  ForwardStats& stats() override { return local_->stats(); }

  // Tells every other rank to finish (serve_stage returns). Idempotent.
  Status stop();
  const StageStats& stage_stats() const { return stats_; }

 private:
  Session* local_;
  Comm* comm_;
  int64_t n_vocab_;
  bool stopped_ = false;
  bool broken_ = false;  // a stage failed: its state no longer matches the others'
  StageStats stats_;
};

// Ranks 1..N-1: receive, evaluate, hand on, until rank 0 stops the pipeline. Errors of the stage's
// own evaluation go down the chain (and the rank keeps serving so the job can end cleanly); an
// error of the transport itself is returned.
Status serve_stage(Session* session, Comm* comm, StageStats* stats);

}  // namespace flea::pipeline
