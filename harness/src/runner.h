// Running one point: the engine as a subprocess (crash isolation; the child's peak RSS from
// wait4), its JSON parsed into a results record with summaries, I/O, predicted-vs-measured and,
// when the scenario names a reference, correctness against llama.cpp's logits.
#pragma once

#include <string>
#include <vector>

#include "profile.h"
#include "scenario.h"
#include "sweep.h"

namespace flea::harness {

// SIGINT/SIGTERM set a flag (no SA_RESTART, so a blocking wait4 returns); the running child is
// stopped and the harness writes what finished. SIGALRM implements per-run timeouts.
void install_signal_handlers();
int stop_signal();  // 0 while running normally, else the signal number received

struct ChildResult {
  bool started = false;
  int exit_code = -1;        // -1 when killed by a signal
  int term_signal = 0;
  bool timed_out = false;
  bool interrupted = false;  // stopped because the harness got SIGINT/SIGTERM
  int64_t wall_ns = 0;       // fork → reap
  int64_t max_rss_bytes = 0; // ru_maxrss of the child
  std::string out, err;
  std::string start_error;
};

class MemoryCgroup;
class ServeSession;

// No shell; the child gets its own process group so the whole tree can be stopped. With `cgroup`
// the child joins it before exec (it never runs outside the limit); a child that cannot join is
// reaped and reported through start_error, nothing executed.
ChildResult run_child(const std::vector<std::string>& argv, int timeout_s, const MemoryCgroup* cgroup = nullptr);

std::string shell_quote(const std::vector<std::string>& argv);

// Reference data (../shared/reference): the manifest and its directory.
struct Reference {
  std::string dir;
  Json manifest;
};
StatusOr<Reference> load_reference(const std::string& dir_or_manifest);
// Manifest case whose model file is `model_path` (same file), or null.
const Json* find_reference_case(const Reference& ref, const std::string& model_path);

// Logit comparison over all rows: NMSE = Σ(got−ref)²/Σref², max |got−ref|, fraction of rows whose
// argmax agrees, mean KL(softmax(ref) ‖ softmax(got)).
struct LogitCompare {
  double nmse = 0, max_abs = 0, top1 = 0, kl = 0;
  int64_t rows = 0;
};
StatusOr<LogitCompare> compare_logits(const std::vector<float>& got, const std::vector<float>& ref, int64_t n_vocab);
// README tolerances: NMSE ≤ 2e-4 (F16, BF16, Q8_0) or 2e-3 (Q4_0, k-quants); top-1 ≥ 0.97.
double nmse_tolerance(const std::string& file_type);
constexpr double kTop1Tolerance = 0.97;

struct RunEnv {
  std::string flea;              // engine binary
  std::string llama_bench;       // resolved for llama-bench baselines ("" = missing)
  Json settings;                 // scenario settings (timeouts, drop_cache, trace)
  const Profile* profile = nullptr;  // predict against this; null = this machine
  Profile machine;               // this machine from the ceilings (floor)
  Json ceilings;                 // for fraction_of_fio
  const Reference* reference = nullptr;
  std::string tmp_dir;           // per-invocation scratch (engine traces, logits)
  int64_t llc_bytes = 0;
  ServeSession* serve = nullptr;  // the server kept between serving points (serve_point.h)
};

// The residency / io / backend flags of a point, shared by `flea bench` and `flea serve`.
void push_residency_flags(std::vector<std::string>* argv, const Json& point);

// Engine arguments for a point (flags the engine does not need are left out at their defaults).
std::vector<std::string> bench_argv(const std::string& flea, const Json& point, const std::string& model_path,
                                    const std::string& trace_path, const std::string& draft_path = "");

// Runs a point and returns its record (status ok|failed|skipped, never made-up numbers).
// *engine_trace gets the path of the engine's Chrome trace file when it wrote one (null otherwise).
Json run_point(const RunSpec& r, const RunEnv& env, Json* engine_trace);

// The run warning for a buffered (pread, mmap) run that read faster than fio did on the same file
// with the page cache dropped: the reads came from RAM, not storage. "" when it does not apply.
std::string buffered_above_fio_note(const std::string& io, double fraction_of_fio);

// Record from a `flea bench` JSON object (exposed for tests).
Json record_from_bench(const RunSpec& r, const Json& bench, const ChildResult& child, const RunEnv& env);

// Fills predicted / vs_floor of a record.
void add_prediction(Json* rec, const RunSpec& r, const Json& bench, const RunEnv& env);

// ms per generated token from a tg sample and the point's gen.
std::string file_type_name(int64_t llama_ftype);

}  // namespace flea::harness
