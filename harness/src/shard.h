// Sharded sweeps: `--shard I/N` runs the I-th of N slices of the expanded sweep, so N machines
// (e.g. Slurm array tasks) can run one scenario in parallel and `run_lab_harness merge` joins them.
//
// Every node must compute the same slices from the same scenario, so planning reads nothing about
// the machine it runs on: run durations are predicted on the --profile when one is given, else on
// the fixed planning machine below, from model sizes that are the same everywhere (a synth model's
// planned size from `flea synth --dry-run`, never its cached file; other models' file sizes).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "flea/status.h"
#include "profile.h"
#include "sweep.h"

namespace flea::harness {

struct ShardSpec {
  int index = 0;  // 1-based
  int count = 0;
};

// "I/N" with 1 <= I <= N (N at most kMaxShards); anything else is an error naming the rule.
constexpr int kMaxShards = 100000;
StatusOr<ShardSpec> parse_shard_spec(const std::string& text);

// The fixed machine durations are predicted on when no profile is given: 32 GB RAM at 10 GB/s,
// storage at 1 GB/s, a 24 GB GPU at 900 GB/s behind 25 GB/s of PCIe. Only the ratios between
// runs matter for balancing; the absolute figures are rough.
Profile planning_profile();

// Rough duration of a run, seconds: model load + (warmup + reps) passes over prompt and gen.
double estimate_run_s(const RunSpec& r, double model_bytes, const Profile& prof);

// Model bytes per ModelRef::path: synth models from `flea synth --dry-run` (planned_bytes; 0 when
// that fails), other models from the file's size (0 when absent).
std::map<std::string, double> planned_model_bytes(const std::vector<RunSpec>& runs, const std::string& flea);

// Predicted seconds per run, rounded to whole milliseconds so the plan does not hinge on the last
// bits of a floating-point sum.
std::vector<int64_t> planned_run_ms(const std::vector<RunSpec>& runs, const std::map<std::string, double>& model_bytes,
                                    const Profile& prof);

// sha256 hex of the sweep's run keys (run_key) in order, one per line: equal fingerprints mean the
// same run ids stand for the same points.
std::string sweep_fingerprint(const std::vector<RunSpec>& runs);

struct ShardPlan {
  std::vector<std::vector<size_t>> runs;  // [count] indices into the sweep, ascending
  std::vector<int64_t> predicted_ms;      // [count]
};

// Slices `runs` (costs in run_ms, same length) into `count` shards. Runs are grouped by model (a
// baseline run is tied to every run it serves, so its ratio is computed in the same shard). A group
// above total/count is cut into contiguous chunks, two ways: at the run boundaries nearest to
// multiples of total/count, and into ceil(group/share) chunks with the smallest possible largest
// chunk. Groups and chunks are assigned longest first (ties: earlier in the sweep) to the
// least-loaded shard (ties: lowest index); of the two plans, the one with the shorter longest shard
// is kept (ties: the first). Pure and deterministic.
ShardPlan plan_shards(const std::vector<RunSpec>& runs, const std::vector<int64_t>& run_ms, int count);

// mkdir -p of the directory holding `file`.
Status make_parent_dirs(const std::string& file);

// context.shard of a shard's results file.
Json shard_context(const ShardSpec& s, const std::string& fingerprint, size_t n_runs_total,
                   const std::vector<RunSpec>& shard_runs, double predicted_s);

}  // namespace flea::harness
