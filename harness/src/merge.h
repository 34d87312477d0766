// `run_lab_harness merge A.json B.json ... --out M.json`: joins the results files of one sharded
// sweep (--shard I/N) into one results file that the report and the gate read like any other.
// Inputs that cannot belong together (another scenario, another slicing, another git revision)
// are errors; different machines or builds are warnings; missing or unfinished shards are listed,
// with the command that reruns them, and leave the merged file incomplete.
#pragma once

#include <string>
#include <vector>

#include "flea/status.h"
#include "scenario.h"

namespace flea::harness {

// One shard's results file, checked far enough that merging it cannot fail on its shape.
struct ShardFile {
  std::string file;  // as named on the command line
  Json doc;          // the whole file
  int index = 0, count = 0;
  std::string fingerprint, scenario_name, scenario_sha256, scenario_path;
  int64_t n_runs_total = 0;
  std::vector<std::string> run_ids;  // context.shard.run_ids
  std::string git_rev, hostname;
  bool complete = false;  // status.complete
};

// Parses and checks one file's text; errors read "<file>: <what is wrong>". Pure (no I/O).
StatusOr<ShardFile> parse_shard_file(const std::string& file, const std::string& text);

struct MergeOptions {
  bool allow_mixed_revisions = false;
  std::string time_compact;  // run-id time, YYYYmmddTHHMMSSZ; empty = now
};

struct MergeOutput {
  Json merged;                        // the results file to write
  std::vector<std::string> warnings;  // also in merged.context.warnings
  std::vector<int> missing, incomplete;
  std::string rerun;                  // empty when complete
  bool complete = false;
};

// Cross-file checks and the merge itself; errors name both files and the differing values. Pure.
StatusOr<MergeOutput> merge_shards(const std::vector<ShardFile>& shards, const MergeOptions& o);

// The subcommand: reads `inputs` (skipping *.trace.json with a note, so `merge out/*.json` works),
// merges, writes `out` atomically, prints warnings and missing shards on stderr. Returns the exit status: 0 complete, 1 written but incomplete, 2 bad input.
int run_merge_command(const std::vector<std::string>& inputs, const std::string& out, bool allow_mixed_revisions);

}  // namespace flea::harness
