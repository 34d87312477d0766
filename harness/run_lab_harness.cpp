// run_lab_harness --config scenarios/x.yaml [--profile P] [--out DIR | --results FILE] [--shard I/N]
//                 [--dry-run] [--resume FILE]
// run_lab_harness merge SHARD.json... --out MERGED.json [--allow-mixed-revisions]
// Runs a YAML scenario against the `flea` engine (one subprocess per run point) and writes
// DIR/<run-id>.json (results/FORMAT.md) and DIR/<run-id>.trace.json (Chrome trace); --shard runs
// one deterministic slice of the sweep (harness/src/shard.h), `merge` joins the slices' files.
// Exit: 0 every run ok and every correctness check passed; 1 otherwise; 2 bad input before
// anything ran; 130/143 interrupted (the results file is written and marked partial).
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <set>

#include "env.h"
#include "membw.h"
#include "memory_limit.h"
#include "merge.h"
#include "profile.h"
#include "results.h"
#include "runner.h"
#include "scenario.h"
#include "serve_point.h"
#include "shard.h"
#include "stats.h"
#include "sweep.h"

namespace fh = flea::harness;
using fh::Json;

namespace {

constexpr int kExitOk = 0, kExitFailed = 1, kExitUsage = 2;

int usage_error(const std::string& msg) {
  std::fprintf(stderr, "run_lab_harness: %s\n", msg.c_str());
  return kExitUsage;
}

std::string exe_dir() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  buf[n] = '\0';
  std::string s(buf);
  return s.substr(0, s.rfind('/'));
}

bool is_executable(const std::string& p) { return !p.empty() && access(p.c_str(), X_OK) == 0; }
bool exists(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0;
}

std::string fmt_dur(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  const long t = static_cast<long>(s + 0.5);
  if (t >= 3600) std::snprintf(buf, sizeof(buf), "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  else std::snprintf(buf, sizeof(buf), "%ld:%02ld", t / 60, t % 60);
  return buf;
}

std::string point_label(const fh::RunSpec& r, const std::vector<std::string>& keys) {
  std::string s = r.engine;
  for (const auto& k : keys) {
    if (r.point.contains(k)) {
      s += " " + k + "=" + (r.point[k].is_string() ? r.point[k].get<std::string>() : r.point[k].dump());
    }
  }
  return s;
}

// Keys whose value differs between runs (what the progress line and the table show).
std::vector<std::string> varying_keys(const std::vector<fh::RunSpec>& runs) {
  std::vector<std::string> out;
  for (const auto& k : fh::point_keys()) {
    std::set<std::string> vals;
    for (const auto& r : runs) vals.insert(r.point.contains(k) ? r.point[k].dump() : "-");
    if (vals.size() > 1 || k == "model") out.push_back(k);
  }
  return out;
}

std::string fmt_num(const Json& v, const char* f = "%.3f") {
  if (!v.is_number()) return "-";
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, v.get<double>());
  return buf;
}

// Narrows `runs` (the whole sweep) to one shard's runs and returns its context.shard. A resumed
// shard file keeps the runs it was planned with, provided the sweep still expands the same way.
flea::StatusOr<Json> narrow_to_shard(const fh::ShardSpec& spec, const fh::ShardFile* resumed, const fh::Profile& plan_on,
                                     const std::string& flea, std::vector<fh::RunSpec>* runs) {
  const std::string fingerprint = fh::sweep_fingerprint(*runs);
  std::vector<fh::RunSpec> mine;
  if (resumed != nullptr) {
    if (resumed->fingerprint != fingerprint) {
      return flea::invalid_argument("--resume " + resumed->file + ": the scenario now expands to a different sweep (" +
                                    std::to_string(runs->size()) + " runs, sweep_fingerprint " + fingerprint +
                                    "; the file has " + std::to_string(resumed->n_runs_total) + " runs, " +
                                    resumed->fingerprint + "): run the shard afresh");
    }
    const std::set<std::string> ids(resumed->run_ids.begin(), resumed->run_ids.end());
    for (const auto& r : *runs) {
      if (ids.count(r.id)) mine.push_back(r);
    }
    *runs = std::move(mine);
    return resumed->doc["context"]["shard"];
  }
  const std::vector<int64_t> ms = fh::planned_run_ms(*runs, fh::planned_model_bytes(*runs, flea), plan_on);
  const fh::ShardPlan plan = fh::plan_shards(*runs, ms, spec.count);
  const size_t k = static_cast<size_t>(spec.index - 1);
  for (size_t i : plan.runs[k]) mine.push_back((*runs)[i]);
  const size_t n_total = runs->size();
  *runs = std::move(mine);
  return fh::shard_context(spec, fingerprint, n_total, *runs, static_cast<double>(plan.predicted_ms[k]) / 1e3);
}

// What the perf gate can tell from these runs: the reps it needs for the scenario's min_effect and
// noise_cv (stats.h: reps_for_gate), and the runs that have fewer. Empty `short_ids` when all suffice.
struct GateReps {
  int needed = 0;
  int64_t fewest = 0;
  std::vector<std::string> short_ids;
  std::string rule;  // "a 5.0% change at noise_cv 0.03 (alpha 0.01, power 0.8)"
};

GateReps gate_reps(const std::vector<fh::RunSpec>& runs, const Json& settings) {
  GateReps g;
  const double min_effect = settings["min_effect"].get<double>();
  const double noise_cv = settings["noise_cv"].get<double>();
  g.needed = fh::reps_for_gate(min_effect, noise_cv);
  g.fewest = g.needed;
  char rule[160];
  std::snprintf(rule, sizeof rule, "a %.1f%% change of the median at noise_cv %g (alpha %g, power 0.8)",
                100 * min_effect, noise_cv, fh::kGateAlpha);
  g.rule = rule;
  for (const auto& r : runs) {
    if (r.engine == "flea-serve") continue;  // no reps: its samples are requests
    const int64_t reps = r.point.value("reps", int64_t{0});
    if (reps >= g.needed) continue;
    g.short_ids.push_back(r.id);
    g.fewest = std::min(g.fewest, reps);
  }
  return g;
}

std::string id_list(const std::vector<std::string>& ids) {
  std::string out;
  for (size_t i = 0; i < ids.size() && i < 8; ++i) out += (i ? ", " : "") + ids[i];
  if (ids.size() > 8) out += " and " + std::to_string(ids.size() - 8) + " more";
  return out;
}

// ---- the steps of one invocation, in the order main() calls them --------------------------------
// A step that returns an ExitNow holding a value ends the invocation with that exit status;
// std::nullopt means go on to the next step.
using ExitNow = std::optional<int>;

// What the command line asked for, plus what --shard and --resume imply.
struct Invocation {
  std::string config, profile_arg, profile_mode_arg, out_dir = "results/runs", resume, flea_arg, llama_bench_arg,
      profiles_dir;
  std::string shard_arg, results_arg;
  bool dry_run = false, help_keys = false, no_ceilings = false, quiet = false;
  bool merge = false;  // the `merge` subcommand, with its own three options
  std::vector<std::string> merge_inputs;
  std::string merge_out;
  bool allow_mixed_revisions = false;
  std::optional<fh::ShardSpec> shard;          // from --shard, or from a resumed shard's file
  Json resumed;                                // the --resume file; null without --resume
  std::optional<fh::ShardFile> resumed_shard;  // --resume of a shard's file
};

// The per-invocation scratch directory (engine traces, logits); removed, empty, on the way out.
struct TmpDir {
  std::string dir;
  ~TmpDir() {
    if (!dir.empty()) rmdir(dir.c_str());
  }
};

// What one run builds on its way from the scenario YAML to the results JSON, grouped by the step
// that fills it. main() owns it; it is never copied (emulate and env point into profile, reference).
struct Session {
  // load_inputs
  fh::Scenario sc;
  std::string mode;  // the effective profile mode: none|predict|emulate|validate
  std::unique_ptr<fh::Profile> profile;
  std::unique_ptr<fh::Reference> reference;
  std::vector<std::string> reference_models;
  Json claims = Json::array();
  bool claims_ok = true;
  // expand_points, find_binaries, take_this_shard, describe_this_machine, check_gate_reps
  const fh::Profile* emulate = nullptr;  // the profile in mode emulate, else null
  std::vector<fh::RunSpec> runs;         // this invocation's runs: one shard's under --shard
  size_t n_runs_total = 0;               // the whole sweep's
  std::string flea, llama_bench;         // binaries
  fh::Profile plan_on;                   // durations are predicted on this
  Json shard_ctx;                        // context.shard; null when not sharded
  fh::Profile machine;                   // this machine, for predictions without a profile
  std::vector<std::string> shown;        // point keys the progress line and the table show
  GateReps greps;
  std::vector<std::string> warnings;  // every step adds to them; printed last, and in context.warnings
  // prepare_to_run
  TmpDir tmp;
  // build_context, measure_ceilings, validate_machine, make_run_env, choose_output_paths
  Json ctx;
  std::string run_id;
  Json ceilings;
  fh::MemoryBandwidthOptions memory_options;
  bool validate_ok = true;
  fh::RunEnv env;
  std::string out_path, trace_path;
  // keep_resumed_runs, run_sweep
  std::map<std::string, Json> done;  // run_key → a resumed file's ok record
  std::vector<Json> records;         // one per run, in run order; null until it ran
  std::vector<Json> traces;          // one per run: the engine trace's path, or null
  int n_skipped_resume = 0, n_timed = 0;
  double overhead_ns_total = 0, child_ns_total = 0;
  // A results file that cannot be written (disk full, directory gone) stops the sweep: the last
  // good file stays as it was, the error is printed once, and the exit status is 1.
  bool write_failed = false;
  // The flea serve process shared by consecutive serving points; stopped after the sweep (and by
  // its destructor on any other way out).
  fh::ServeSession serve;
};

// Reads the command line into *inv. Ends the invocation on --help and on parse errors.
ExitNow parse_command_line(int argc, char** argv, Invocation* inv) {
  CLI::App app("Run a YAML scenario against the flea engine and write reproducible JSON results "
               "(results/FORMAT.md) and a Chrome trace.", "run_lab_harness");
  app.add_option("--config,-c", inv->config, "scenario YAML (scenarios/*.yaml)");
  app.add_option("--profile,-p", inv->profile_arg, "hardware profile name (hardware_profiles/<name>.yaml) or path");
  app.add_option("--profile-mode", inv->profile_mode_arg, "none|predict|emulate|validate (default: the scenario's profile_mode)")
      ->check(CLI::IsMember({"none", "predict", "emulate", "validate"}));
  app.add_option("--profiles-dir", inv->profiles_dir, "where profile names are looked up (default: <repo>/hardware_profiles)");
  app.add_option("--out,-o", inv->out_dir, "output directory for <run-id>.json and <run-id>.trace.json")->capture_default_str();
  app.add_flag("--dry-run", inv->dry_run, "print the expanded runs and the predicted duration; run nothing");
  app.add_option("--resume", inv->resume, "continue a partial results file, skipping its finished points");
  app.add_option("--flea", inv->flea_arg, "engine binary (default: the flea next to run_lab_harness)");
  app.add_option("--llama-bench", inv->llama_bench_arg, "llama-bench binary for llama-bench baselines");
  app.add_flag("--help-keys", inv->help_keys, "list every scenario and profile key with type, default and help");
  app.add_flag("--no-ceilings", inv->no_ceilings, "skip the fio/memory ceilings (faster; results carry a warning)");
  app.add_flag("-q,--quiet", inv->quiet, "no progress line");
  app.add_option("--shard", inv->shard_arg,
                 "run only slice I of N (1-based, e.g. 2/8) of the sweep, balanced by predicted duration; "
                 "join the files with `run_lab_harness merge`");
  app.add_option("--results", inv->results_arg,
                 "write the results to exactly this file (its trace beside it as <FILE minus .json>.trace.json) "
                 "instead of OUT/<run-id>.json");
  CLI::App* merge_cmd = app.add_subcommand(
      "merge", "Join the results files of a sharded sweep (--shard I/N) into one results file. Exit: 0 complete, "
               "1 written but shards missing or incomplete (listed with the command that reruns them), 2 bad input.");
  merge_cmd->add_option("files", inv->merge_inputs, "the shards' results files")->required();
  merge_cmd->add_option("--out,-o", inv->merge_out, "the merged results file to write")->required();
  merge_cmd->add_flag("--allow-mixed-revisions", inv->allow_mixed_revisions,
                      "merge shards built from different git revisions (a warning instead of an error)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  inv->merge = static_cast<bool>(*merge_cmd);
  return std::nullopt;
}

// Parses --shard and reads the --resume file: a resumed shard's file fixes the shard, and a resumed
// file names the scenario when --config does not.
ExitNow read_shard_and_resume(Invocation* inv) {
  if (!inv->shard_arg.empty()) {
    auto s = fh::parse_shard_spec(inv->shard_arg);
    if (!s.ok()) return usage_error(s.status().message());
    inv->shard = *s;
  }
  const std::string& resume = inv->resume;
  if (!resume.empty()) {
    const std::string text = fh::read_file_text(resume);
    if (text.empty()) return usage_error("--resume " + resume + ": cannot read the file");
    Json& resumed = inv->resumed;
    try {
      resumed = Json::parse(text);
    } catch (const std::exception& e) {
      return usage_error("--resume " + resume + ": not JSON: " + e.what());
    }
    if (resumed.is_object() && resumed.contains("context") && resumed["context"].is_object() &&
        resumed["context"].contains("shard")) {
      auto sf = fh::parse_shard_file(resume, text);
      if (!sf.ok()) return usage_error("--resume " + sf.status().message());
      if (inv->shard && (inv->shard->index != sf->index || inv->shard->count != sf->count)) {
        return usage_error("--shard " + inv->shard_arg + " disagrees with " + resume + ", which is shard " +
                           std::to_string(sf->index) + "/" + std::to_string(sf->count));
      }
      inv->shard = fh::ShardSpec{sf->index, sf->count};
      inv->resumed_shard = std::move(*sf);
    }
    if (inv->config.empty()) inv->config = resumed["context"]["scenario"].value("path", "");
  }
  if (inv->config.empty()) {
    if (inv->profile_mode_arg != "validate") return usage_error("--config is required (see --help)");
  }
  return std::nullopt;
}

// Loads the scenario, the hardware profile, the reference outputs and the claims: every input error
// before anything runs. Without --config (--profile-mode validate alone) the scenario is a stub.
ExitNow load_inputs(Invocation* inv, Session* s) {
  fh::Scenario& sc = s->sc;
  if (!inv->config.empty()) {
    auto loaded = fh::load_scenario(inv->config);
    if (!loaded.ok()) {
      std::fprintf(stderr, "%s\n", loaded.status().message().c_str());
      return kExitUsage;
    }
    sc = std::move(*loaded);
  } else {
    auto stub = fh::parse_yaml_doc("<none>", "name: validate", fh::scenario_keys());
    sc.name = "validate";
    sc.settings = stub->value;
    sc.requested = stub->requested;
  }
  const Json& st = sc.settings;
  std::string& profiles_dir = inv->profiles_dir;
  if (profiles_dir.empty()) {
    profiles_dir = fh::source_dir() + "/hardware_profiles";
    if (!exists(profiles_dir)) profiles_dir = exe_dir() + "/../../hardware_profiles";
  }
  std::string profile_name = !inv->profile_arg.empty() ? inv->profile_arg : (st["profile"].is_string() ? st["profile"].get<std::string>() : "");
  std::string& mode = s->mode;
  mode = !inv->profile_mode_arg.empty() ? inv->profile_mode_arg : st["profile_mode"].get<std::string>();
  if (!profile_name.empty() && mode != "none") {
    auto p = fh::load_profile(profile_name, profiles_dir);
    if (!p.ok()) {
      std::fprintf(stderr, "run_lab_harness: %s\n", p.status().message().c_str());
      return kExitUsage;
    }
    s->profile = std::make_unique<fh::Profile>(std::move(*p));
  } else if (mode == "emulate" || mode == "validate") {
    return usage_error("--profile-mode " + mode + " needs a profile (--profile or the scenario's 'profile')");
  } else {
    mode = "none";
  }

  if (st["reference"].is_string()) {
    const std::string ref_path = fh::expand_path(st["reference"].get<std::string>(), sc.dir);
    auto ref = fh::load_reference(ref_path);
    if (!ref.ok()) return usage_error(sc.path + ": reference: " + ref.status().message());
    s->reference = std::make_unique<fh::Reference>(std::move(*ref));
    for (const auto& c : s->reference->manifest["cases"]) s->reference_models.push_back(c.value("model", ""));
  }

  for (const auto& c : st["claims"]) {
    auto p = fh::load_profile(c["profile"].get<std::string>(), profiles_dir);
    if (!p.ok()) return usage_error(sc.path + ": claim '" + c["name"].get<std::string>() + "': " + p.status().message());
    const fh::ClaimVerdict v = fh::evaluate_claim(c, *p);
    s->claims_ok = s->claims_ok && v.expect_ok;
    s->claims.push_back(fh::claim_to_json(v));
  }
  return std::nullopt;
}

// Expands the scenario's sweep into run points (emulated memory limits applied). A scenario with
// neither runs nor claims has nothing to do.
ExitNow expand_points(const Invocation& inv, Session* s) {
  const fh::Scenario& sc = s->sc;
  const Json& st = sc.settings;
  std::vector<fh::RunSpec>& runs = s->runs;
  fh::SweepOptions so;
  so.emulate = s->mode == "emulate" ? s->profile.get() : nullptr;
  so.reference_dir = s->reference ? s->reference->dir : "";
  so.reference_models = s->reference_models;
  so.cache_dir = fh::default_cache_dir();
  s->emulate = so.emulate;
  const bool has_model = st["model"].is_string() || st["model"].is_array() ||
                         (st["points"].is_array() && !st["points"].empty());
  if (!inv.config.empty() && has_model) {
    auto r = fh::expand_sweep(sc, so);
    if (!r.ok()) return usage_error(r.status().message());
    runs = std::move(*r);
    fh::apply_memory_limits(&runs, so.emulate);
  } else if (!inv.config.empty() && st["claims"].empty()) {
    return usage_error(sc.path + ": nothing to do: set 'model' (or 'points') for runs, or 'claims'");
  }
  return std::nullopt;
}

// The engine binary and the baselines' binaries: a missing baseline is an error naming the path,
// or a skip with a warning when it is optional.
ExitNow find_binaries(const Invocation& inv, Session* s) {
  const fh::Scenario& sc = s->sc;
  const Json& st = sc.settings;
  std::vector<std::string>& warnings = s->warnings;
  for (const auto& b : st["baselines"]) {
    if (b["engine"] != "llama-bench") continue;
    std::string path = inv.llama_bench_arg;
    if (path.empty() && b["path"].is_string()) path = fh::expand_path(b["path"].get<std::string>(), sc.dir);
    if (path.empty() && std::getenv("FLEA_LLAMA_BENCH")) path = std::getenv("FLEA_LLAMA_BENCH");
    if (path.empty()) {
      const char* base = std::getenv("FLEA_BASELINE_DIR");
      const char* home = std::getenv("HOME");
      path = (base ? std::string(base) : std::string(home ? home : "") + "/.cache/flea-baselines") +
             "/llama.cpp-c392e5094dea/build/bin/llama-bench";
    }
    if (is_executable(path)) {
      s->llama_bench = path;
    } else if (b["optional"].get<bool>()) {
      warnings.push_back("baseline llama-bench skipped: no executable at " + path +
                         " (build it with scripts/build_baselines.sh or pass --llama-bench)");
    } else {
      return usage_error(sc.path + ": baseline llama-bench: no executable at " + path +
                         " (build it with scripts/build_baselines.sh, pass --llama-bench PATH, or mark it optional: true)");
    }
  }
  s->flea = !inv.flea_arg.empty() ? inv.flea_arg : exe_dir() + "/flea";
  const std::string& flea = s->flea;
  if (!s->runs.empty() && !is_executable(flea)) return usage_error("engine binary not executable: " + flea + " (pass --flea PATH)");
  return std::nullopt;
}

// --shard: narrows the runs to this shard's slice (or a resumed shard file's runs).
ExitNow take_this_shard(const Invocation& inv, Session* s) {
  std::vector<fh::RunSpec>& runs = s->runs;
  const std::string& flea = s->flea;
  // Durations are predicted on the profile, else on a fixed machine: never on this one, so that
  // every node of a sharded sweep plans the same slices.
  s->plan_on = s->profile ? *s->profile : fh::planning_profile();
  s->n_runs_total = runs.size();
  if (inv.shard) {
    auto sc_or = narrow_to_shard(*inv.shard, inv.resumed_shard ? &*inv.resumed_shard : nullptr, s->plan_on, flea, &runs);
    if (!sc_or.ok()) return usage_error(sc_or.status().message());
    s->shard_ctx = *sc_or;
  }
  return std::nullopt;
}

// This machine, for predictions without a profile: RAM from /proc/meminfo, bandwidths filled from
// the ceilings later. Warns when an emulated profile has more RAM than there is.
void describe_this_machine(Session* s) {
  fh::Profile& machine = s->machine;
  machine.name = "this-machine";
  {
    const std::string mi = fh::read_file_text("/proc/meminfo");
    const size_t p = mi.find("MemTotal:");
    machine.ram_gb = p == std::string::npos ? 0 : std::atof(mi.c_str() + p + 9) * 1024 / 1e9;
    machine.ram_bw_gb_s = 10;  // replaced by the memory probe
    machine.storage_gb_s = 0;  // replaced by fio
  }
  const fh::Profile* profile = s->profile.get();
  if (s->emulate != nullptr && machine.ram_gb > 0 &&
      !fh::memory_limit_required(fh::emulated_ram_budget_mb(*profile) << 20, static_cast<int64_t>(machine.ram_gb * 1e9))) {
    s->warnings.push_back("emulate: profile " + profile->name + " has more RAM (" + std::to_string(fh::emulated_ram_budget_mb(*profile)) +
                          " MiB) than this machine (" + std::to_string(static_cast<int64_t>(machine.ram_gb * 1e9) >> 20) +
                          " MiB): runs get this machine's RAM (the profile's memory limit limits nothing here)");
  }
}

// The point keys the progress line and the table show, and whether every run has the reps the
// perf gate needs (a warning when not).
void check_gate_reps(Session* s) {
  s->shown = varying_keys(s->runs);
  s->greps = gate_reps(s->runs, s->sc.settings);
  const GateReps& greps = s->greps;
  if (!greps.short_ids.empty()) {
    s->warnings.push_back("reps " + std::to_string(greps.fewest) + " < " + std::to_string(greps.needed) +
                          " that report/gate.py needs to detect " + greps.rule + " (" + id_list(greps.short_ids) +
                          "): its timing verdicts can be INCONCLUSIVE; raise reps or declare min_effect/noise_cv");
  }
}

// --dry-run: the planned runs with their predicted durations, the claims and the perf gate's reps.
void print_dry_run(const Invocation& inv, const Session& s) {
  const std::vector<fh::RunSpec>& runs = s.runs;
  const GateReps& greps = s.greps;
  const fh::Profile* profile = s.profile.get();
  double total_s = 0;
  const std::map<std::string, double> sizes = fh::planned_model_bytes(runs, s.flea);
  std::printf("%s: %zu runs (profile %s, mode %s)\n", s.sc.path.c_str(), runs.size(),
              profile ? profile->name.c_str() : "none", s.mode.c_str());
  for (const auto& r : runs) {
    const double sec = fh::estimate_run_s(r, sizes.at(r.model.path), s.plan_on);
    total_s += sec;
    std::printf("  %s %s  ~%s\n", r.id.c_str(), point_label(r, s.shown).c_str(), fmt_dur(sec).c_str());
  }
  for (const auto& c : s.claims) std::printf("  claim %s: %s\n", c["name"].get<std::string>().c_str(), c["arithmetic"].get<std::string>().c_str());
  if (!runs.empty()) {
    std::printf("perf gate: needs >= %d reps per point to detect %s; ", greps.needed, greps.rule.c_str());
    if (greps.short_ids.empty()) std::printf("every run has enough\n");
    else std::printf("too few (%lld) in %s\n", static_cast<long long>(greps.fewest), id_list(greps.short_ids).c_str());
  }
  std::printf("predicted duration: ~%s (%s; excludes synth generation and ceilings)\n", fmt_dur(total_s).c_str(),
              profile ? ("profile " + profile->name).c_str() : "rough: no profile, planning machine, nothing measured");
  if (inv.shard) {
    const Json& shard_ctx = s.shard_ctx;
    std::printf("shard %d/%d: %zu of %zu runs, predicted ~%s\n", inv.shard->index, inv.shard->count, runs.size(), s.n_runs_total,
                fmt_dur(shard_ctx["predicted_s"].is_number() ? shard_ctx["predicted_s"].get<double>() : total_s).c_str());
  }
}

// Makes --results' directory, installs the SIGINT/SIGTERM handlers and the scratch directory.
ExitNow prepare_to_run(const Invocation& inv, Session* s) {
  if (!inv.results_arg.empty()) {
    flea::Status made = fh::make_parent_dirs(inv.results_arg);
    if (!made.ok()) return usage_error("--results " + inv.results_arg + ": " + made.message());
  }

  fh::install_signal_handlers();
  char tmpl[] = "/tmp/flea-harness-XXXXXX";
  const char* tmp = mkdtemp(tmpl);
  if (tmp == nullptr) return usage_error("mkdtemp failed");
  s->tmp.dir = tmp;
  return std::nullopt;
}

// Generates the synth models the runs need (once, into the cache); a missing real model is an error.
ExitNow generate_models(const Invocation& inv, const Session& s) {
  std::set<std::string> prepared;
  for (const auto& r : s.runs) {
    if (prepared.count(r.model.path)) continue;
    prepared.insert(r.model.path);
    if (exists(r.model.path)) continue;
    if (!r.model.synth) return usage_error(s.sc.path + ": model file not found: " + r.model.path + " (model '" + r.model.spec + "')");
    const std::string dir = r.model.path.substr(0, r.model.path.rfind('/'));
    fh::run_child({"/bin/mkdir", "-p", dir}, 10);
    if (!inv.quiet) std::fprintf(stderr, "generating %s -> %s\n", r.model.spec.c_str(), r.model.path.c_str());
    std::vector<std::string> argv = {s.flea};
    for (const std::string& a : fh::synth_args(r.model)) argv.push_back(a);
    for (const char* a : {"--out", r.model.path.c_str(), "-q"}) argv.push_back(a);
    fh::ChildResult c = fh::run_child(argv, 24 * 3600);
    if (c.exit_code != 0) {
      if (c.interrupted) return 128 + fh::stop_signal();
      return usage_error("cannot generate " + r.model.spec + ": flea synth exited " + std::to_string(c.exit_code) + ": " + c.err);
    }
  }
  return std::nullopt;
}

// The results file's context block (results/FORMAT.md): run id, scenario, host, GPU, build, engine,
// Slurm job, profile, requested and effective settings. A resumed file keeps its run id and path.
void build_context(Invocation* inv, Session* s) {
  const fh::Scenario& sc = s->sc;
  const Json& st = sc.settings;
  const std::vector<fh::RunSpec>& runs = s->runs;
  std::vector<std::string>& warnings = s->warnings;
  const fh::Profile* profile = s->profile.get();
  Json& resumed = inv->resumed;  // mutable: operator[] inserts a missing key, as it always did
  Json& ctx = s->ctx;
  ctx["schema_version"] = 1;
  std::string& run_id = s->run_id;
  run_id = fh::make_run_id(sc.name);
  if (!resumed.is_null()) {
    run_id = resumed["context"].value("run_id", run_id);
    s->out_path = inv->resume;
  }
  ctx["run_id"] = run_id;
  ctx["time"] = fh::utc_now_rfc3339();
  ctx["scenario"] = {{"name", sc.name}, {"path", sc.path}, {"sha256", sc.sha256}};
  if (!s->shard_ctx.is_null()) ctx["shard"] = s->shard_ctx;
  ctx["host"] = fh::host_info(runs.empty() ? "" : runs.front().model.path);
  ctx["gpu"] = fh::gpu_info();
  ctx["build"] = fh::build_info(&warnings);
  ctx["engine"] = {{"path", s->flea}};
  // Under Slurm: the job that produced this file (null elsewhere).
  if (const char* job = std::getenv("SLURM_JOB_ID")) {
    auto env_or_null = [](const char* k) { const char* v = std::getenv(k); return v ? Json(v) : Json(nullptr); };
    ctx["slurm"] = {{"job_id", job}, {"array_job_id", env_or_null("SLURM_ARRAY_JOB_ID")},
                    {"array_task_id", env_or_null("SLURM_ARRAY_TASK_ID")}, {"nodelist", env_or_null("SLURM_JOB_NODELIST")}};
  } else {
    ctx["slurm"] = nullptr;
  }
  Json prof = nullptr;
  if (profile) {
    prof = profile->raw;
    prof["name"] = profile->name;
    prof["path"] = profile->path;
    prof["mode"] = s->mode;
  } else {
    prof = {{"name", "none"}, {"mode", "none"}};
  }
  ctx["profile"] = prof;
  ctx["requested"] = sc.requested;
  Json effective = st;
  if (s->emulate) {
    effective["emulated_caps"] = {{"vram_budget_mb", fh::emulated_vram_budget_mb(*profile)},
                                  {"ram_budget_mb", fh::emulated_ram_budget_mb(*profile)},
                                  {"memory_limit_mb", fh::emulated_ram_budget_mb(*profile)},
                                  {"throttle_gb_s", profile->storage_gb_s}};
  }
  effective["points"] = Json::array();
  for (const auto& r : runs) effective["points"].push_back({{"id", r.id}, {"engine", r.engine}, {"point", r.point}});
  ctx["effective"] = effective;
  if (s->reference) ctx["reference_commit"] = s->reference->manifest["producer"].value("commit", "");
  const std::string gov = fh::cpu_governor();
  if (gov != "performance") warnings.push_back("CPU governor is '" + gov + "', not 'performance': frequency may vary");
}

// Measures what this machine can do (memory bandwidth, fio per model file and io mode, H2D) once
// per invocation: a resumed file's ceilings are reused; --no-ceilings skips them with a warning.
void measure_ceilings(const Invocation& inv, Session* s) {
  const Json& st = s->sc.settings;
  const std::vector<fh::RunSpec>& runs = s->runs;
  std::vector<std::string>& warnings = s->warnings;
  const Json& resumed = inv.resumed;
  Json& ceilings = s->ceilings;
  ceilings = {{"fio", Json::array()}, {"h2d", nullptr}, {"memory_bw_gb_s", nullptr}};
  const Json& cs = st["ceilings"];
  s->memory_options.reps = static_cast<int>(cs["memory_reps"].get<int64_t>());
  s->memory_options.budget_s = cs["memory_budget_s"].get<double>();
  if (!resumed.is_null() && resumed.contains("ceilings")) {
    ceilings = resumed["ceilings"];  // the same invocation's ceilings: measured once
  } else if (!runs.empty() && !inv.no_ceilings) {
    if (!inv.quiet) std::fprintf(stderr, "measuring ceilings...\n");
    if (cs["memory"].get<bool>()) fh::add_memory_ceilings(&ceilings, s->memory_options);
    if (cs["fio"].get<bool>()) {
      const std::string fio = fh::find_in_path("fio");
      if (fio.empty()) {
        warnings.push_back("fio not found on PATH: no storage ceilings (apt-get install fio)");
      } else {
        fh::FioOptions fo;
        fo.samples = cs["fio_samples"].get<int>();
        fo.runtime_s = cs["fio_runtime_s"].get<double>();
        fo.block_bytes = cs["block_kb"].get<int64_t>() * 1024;
        fo.iodepth = cs["iodepth"].get<int>();
        fo.mem = cs["fio_mem"].get<std::string>();
        std::set<std::string> done;
        for (const auto& r : runs) {
          if (r.engine == "llama-bench") continue;
          const std::string key = r.model.path + "|" + r.point["io"].get<std::string>();
          if (!done.insert(key).second) continue;
          Json e = fh::fio_ceiling(fio, r.model.path, r.point["io"], fo);
          if (!e["error"].is_null()) warnings.push_back("fio " + r.point["io"].get<std::string>() + " on " + r.model.path + ": " + e["error"].get<std::string>());
          if (!e["cache_dropped"].get<bool>()) warnings.push_back("page cache not dropped for " + r.model.path + " before fio (" + e.value("cache_drop_error", "") + ")");
          ceilings["fio"].push_back(e);
          if (fh::stop_signal()) break;
        }
      }
    }
    if (cs["h2d"].get<bool>()) {
      ceilings["h2d"] = fh::h2d_ceiling();
      if (ceilings["h2d"].is_null() && !s->ctx["gpu"].is_null()) warnings.push_back("GPU present but H2D not measured by the harness");
    }
  } else if (inv.no_ceilings && !runs.empty()) {
    warnings.push_back("ceilings skipped (--no-ceilings): fraction_of_fio and the storage floor are unavailable");
  }
  // The host-memory floor divides by memory_bw_gb_s (the best of the all-core read and copy figures).
  if (ceilings["memory_bw_gb_s"].is_number()) s->machine.ram_bw_gb_s = ceilings["memory_bw_gb_s"];
}

// --profile-mode validate: compares this machine (host info, ceilings) with the profile, prints the
// table and records it in context.profile.validation. Without --config that is the whole invocation.
ExitNow validate_machine(const Invocation& inv, Session* s) {
  if (s->mode != "validate") return std::nullopt;
  const Json& st = s->sc.settings;
  const fh::Profile* profile = s->profile.get();
  Json& ceilings = s->ceilings;
  Json& ctx = s->ctx;
  bool& validate_ok = s->validate_ok;
  const double tol = st["tolerance"].get<double>();
  if (!ceilings["memory_bw_gb_s"].is_number()) {  // no runs (validate only): probe memory anyway
    fh::add_memory_ceilings(&ceilings, s->memory_options);
  }
  auto numv = [](const Json& j, const char* k) { return j.contains(k) && j[k].is_number() ? j[k].get<double>() : 0.0; };
  Json checks = Json::array();
  auto check = [&](const std::string& field, double want, double got, const std::string& how) {
    Json c = {{"field", field}, {"profile", want}, {"measured", got > 0 ? Json(got) : Json(nullptr)}, {"how", how}};
    if (got > 0 && want > 0) {
      const double diff = (got - want) / want;
      c["diff_fraction"] = diff;
      c["within_tolerance"] = std::fabs(diff) <= tol;
      if (std::fabs(diff) > tol) validate_ok = false;
    } else {
      c["diff_fraction"] = nullptr;
      c["within_tolerance"] = nullptr;
    }
    checks.push_back(c);
  };
  const Json host = ctx["host"];
  check("ram_gb", profile->ram_gb, host["ram_bytes"].is_number() ? host["ram_bytes"].get<double>() / 1e9 : 0, "/proc/meminfo MemTotal");
  check("cpu.cores", profile->cpu_cores, numv(host, "physical_cores") > 0 ? numv(host, "physical_cores") : numv(host, "cpu_cores"),
        host.contains("topology_source") ? host["topology_source"].get<std::string>() : "sysfs");
  double fio_best = 0;
  for (const auto& f : ceilings["fio"]) if (f["read_gb_s"].is_number()) fio_best = std::max(fio_best, f["read_gb_s"].get<double>());
  check("storage.read_gb_s", profile->storage_gb_s, fio_best, fio_best > 0 ? "fio on the model file" : "not measured (no fio ceiling)");
  check("ram_bw_gb_s", profile->ram_bw_gb_s, numv(ceilings, "memory_read_gb_s"), "all-CPU vector read (STREAM-style)");
  if (profile->has_gpu) {
    const Json g = ctx["gpu"];
    check("gpu.vram_gb", profile->vram_gb, g.is_object() && g["vram_bytes"].is_number() ? g["vram_bytes"].get<double>() / 1e9 : 0,
          g.is_object() ? "nvidia-smi" : "no GPU found");
    if (!g.is_object()) validate_ok = false;
  }
  ctx["profile"]["validation"] = {{"tolerance", tol}, {"checks", checks}, {"ok", validate_ok}};
  std::printf("validate %s (tolerance %.0f%%):\n", profile->name.c_str(), tol * 100);
  for (const auto& c : checks) {
    std::printf("  %-20s profile %-10s measured %-10s %s  (%s)\n", c["field"].get<std::string>().c_str(),
                fmt_num(c["profile"], "%.2f").c_str(), fmt_num(c["measured"], "%.2f").c_str(),
                c["within_tolerance"].is_null() ? "not compared" : c["within_tolerance"].get<bool>() ? "ok" : "DIFFERS",
                c["how"].get<std::string>().c_str());
  }
  if (!validate_ok) s->warnings.push_back("this machine differs from profile " + profile->name + " beyond " + std::to_string(tol));
  if (inv.config.empty()) return validate_ok ? kExitOk : kExitFailed;
  return std::nullopt;
}

// What every run_point() call shares: binaries, settings, profile, this machine, ceilings, scratch.
void make_run_env(Session* s) {
  fh::RunEnv& env = s->env;
  env.flea = s->flea;
  env.llama_bench = s->llama_bench;
  env.settings = s->sc.settings;
  env.profile = s->profile.get();
  env.machine = s->machine;
  env.ceilings = s->ceilings;
  env.reference = s->reference.get();
  env.tmp_dir = s->tmp.dir;
  env.serve = &s->serve;
  env.llc_bytes = fh::last_level_cache_bytes();
  if (env.llc_bytes <= 0) {
    // Unknown cache size: assume a large one, so a small model's floor is not overstated.
    env.llc_bytes = 64ll << 20;
    s->warnings.push_back("CPU cache size unknown: models under 64 MiB get no memory-bandwidth floor");
  }
}

// Where the results go: --results FILE, else the resumed file, else OUT/<run-id>.json; the trace
// goes beside it as <name>.trace.json.
void choose_output_paths(const Invocation& inv, Session* s) {
  std::string& out_path = s->out_path;
  if (!inv.results_arg.empty()) out_path = inv.results_arg;
  if (out_path.empty()) {
    fh::run_child({"/bin/mkdir", "-p", inv.out_dir}, 10);
    out_path = inv.out_dir + "/" + s->run_id + ".json";
  }
  s->trace_path = out_path.size() > 5 && out_path.substr(out_path.size() - 5) == ".json"
                      ? out_path.substr(0, out_path.size() - 5) + ".trace.json" : out_path + ".trace.json";
}

// --resume: the partial file's ok runs are kept as they are (looked up by run_key), and the
// context records when it was resumed.
void keep_resumed_runs(Invocation* inv, Session* s) {
  Json& resumed = inv->resumed;
  Json& ctx = s->ctx;
  if (!resumed.is_null()) {
    for (const auto& rec : resumed.value("runs", Json::array())) {
      if (rec.value("status", "") == "ok") s->done[fh::run_key(rec.value("engine", "flea"), rec["point"])] = rec;
    }
    if (resumed["context"]["scenario"].value("sha256", "") != s->sc.sha256) {
      s->warnings.push_back("resumed with a scenario whose sha256 differs from the partial file's");
    }
    Json hist = resumed["context"].value("resumed", Json::array());
    hist.push_back(fh::utc_now_rfc3339());
    ctx["resumed"] = hist;
    ctx["time"] = resumed["context"].value("time", ctx["time"].get<std::string>());
  }
  s->records.assign(s->runs.size(), Json());
  s->traces.assign(s->runs.size(), Json());
}

// Writes the results file (results/FORMAT.md) atomically: context, ceilings, the runs so far and
// their tally. Called after every run, so an interrupted or crashed sweep leaves a resumable file.
void write_results(Session* s, bool partial, bool complete) {
  Json& ctx = s->ctx;
  ctx["warnings"] = s->warnings;
  Json out;
  out["context"] = ctx;
  out["ceilings"] = s->ceilings;
  Json rs = Json::array();
  int n_ok = 0, n_failed = 0, n_skipped = 0;
  for (const auto& r : s->records) {
    if (r.is_null()) continue;
    rs.push_back(r);
    const std::string st = r.value("status", "");
    n_ok += st == "ok";
    n_failed += st == "failed";
    n_skipped += st == "skipped";
  }
  out["runs"] = rs;
  out["status"] = {{"complete", complete}, {"partial", partial}, {"n_runs", static_cast<int64_t>(rs.size())},
                   {"n_planned", static_cast<int64_t>(s->runs.size())}, {"n_ok", n_ok}, {"n_failed", n_failed},
                   {"n_skipped", n_skipped},
                   {"harness_overhead_fraction", s->child_ns_total > 0 ? Json(s->overhead_ns_total / s->child_ns_total) : Json(nullptr)}};
  if (!s->claims.empty()) out["claims"] = s->claims;
  flea::Status written = fh::write_file_atomic(s->out_path, out.dump(1) + "\n");
  if (!written.ok() && !s->write_failed) std::fprintf(stderr, "run_lab_harness: %s\n", written.message().c_str());
  if (!written.ok()) s->write_failed = true;
}

// Whether this invocation writes a Chrome trace (an empty shard still has its, empty, trace).
bool writes_trace(const Invocation& inv, const Session& s) {
  return s.sc.settings["trace"].get<bool>() && (!s.runs.empty() || inv.shard);
}

// Writes the Chrome trace once, at the end or on interrupt: the engine traces of the ok runs are
// parsed only then (spans synthesized from layers[] where one is missing) and deleted after.
void write_trace(const Invocation& inv, Session* s) {
  const std::vector<Json>& records = s->records;
  const std::vector<Json>& traces = s->traces;
  std::vector<std::string> unlink_after;
  if (writes_trace(inv, *s)) {
    Json events = Json::array();
    for (size_t i = 0; i < records.size(); ++i) {
      if (traces[i].is_string() && (records[i].is_null() || records[i].value("status", "") != "ok")) {
        unlink(traces[i].get<std::string>().c_str());
      }
      if (records[i].is_null() || records[i].value("status", "") != "ok") continue;
      Json engine_trace;
      if (traces[i].is_string()) {
        unlink_after.push_back(traces[i].get<std::string>());
        const std::string path = traces[i].get<std::string>();
        try {
          engine_trace = Json::parse(fh::read_file_text(path));
        } catch (const std::exception&) {
          s->warnings.push_back("engine trace " + path + " is not JSON; spans synthesized from layers[]");
        }
      }
      for (auto& e : fh::trace_events_for_run(static_cast<int>(i + 1), records[i], engine_trace)) events.push_back(e);
    }
    Json tr = {{"traceEvents", events}, {"displayTimeUnit", "ms"}, {"otherData", {{"run_id", s->run_id}}}};
    flea::Status ts = fh::write_file_atomic(s->trace_path, tr.dump() + "\n");
    if (!ts.ok()) std::fprintf(stderr, "run_lab_harness: %s\n", ts.message().c_str());
  }
  for (const auto& p : unlink_after) unlink(p.c_str());
}

// A baseline run's numbers next to each run of ours it serves, with the ratio (ours tg_tok_s /
// baseline tg_tok_s); the first one is also the run's `baseline`.
void attach_baseline(const fh::RunSpec& r, Json* rec_io, std::map<std::string, size_t>* index_of,
                     std::vector<Json>* records) {
  Json& rec = *rec_io;  // mutable: operator[] inserts a missing key into the record, as it always did
  for (const auto& sid : r.serves) {
    Json& ours = (*records)[(*index_of)[sid]];
    if (ours.is_null()) continue;
    Json b = {{"engine", r.engine}, {"run", r.id}, {"status", rec.value("status", "")},
              {"tg_tok_s", nullptr}, {"ratio", nullptr}};
    if (rec.value("status", "") == "ok" && rec["summary"]["tg_tok_s"].is_number()) {
      b["tg_tok_s"] = rec["summary"]["tg_tok_s"];
      if (ours.value("status", "") == "ok" && ours["summary"]["tg_tok_s"].is_number()) {
        b["ratio"] = ours["summary"]["tg_tok_s"].get<double>() / rec["summary"]["tg_tok_s"].get<double>();
      }
    }
    if (!ours.contains("baselines") || !ours["baselines"].is_array()) ours["baselines"] = Json::array();
    ours["baselines"].push_back(b);
    if (ours["baseline"].is_null()) ours["baseline"] = b;
  }
}

// Runs each point in order (one engine subprocess each; resumed ok points are copied), attaches
// baseline numbers to the runs they serve, accounts the harness's own overhead and rewrites the
// results file after every run. Returns the stopping signal, 0 when the sweep ran to its end.
int run_sweep(const Invocation& inv, Session* s) {
  const std::vector<fh::RunSpec>& runs = s->runs;
  std::vector<Json>& records = s->records;
  write_results(s, true, false);
  const auto t_start = std::chrono::steady_clock::now();
  double spent_s = 0;
  std::map<std::string, int64_t> n_layer_of;  // model path → n_layer from a finished flea run
  std::map<std::string, size_t> index_of;
  for (size_t i = 0; i < runs.size(); ++i) index_of[runs[i].id] = i;
  const bool tty = isatty(2);
  int stopped = 0;
  for (size_t i = 0; i < runs.size(); ++i) {
    if (s->write_failed || (stopped = fh::stop_signal()) != 0) break;
    fh::RunSpec r = runs[i];
    auto it = s->done.find(fh::run_key(r.engine, r.point));
    if (it != s->done.end()) {
      records[i] = it->second;
      records[i]["id"] = r.id;
      ++s->n_skipped_resume;
      continue;
    }
    if (!inv.quiet) {
      const double avg = s->n_timed > 0 ? spent_s / s->n_timed : NAN;
      const double eta = avg * static_cast<double>(runs.size() - i);
      std::fprintf(stderr, "%s[%zu/%zu] %s %s | elapsed %s ETA %s%s", tty ? "\r\033[K" : "", i + 1, runs.size(),
                   r.id.c_str(), point_label(r, s->shown).c_str(),
                   fmt_dur(std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count()).c_str(),
                   fmt_dur(eta).c_str(), tty ? "" : "\n");
    }
    if (n_layer_of.count(r.model.path)) r.n_layer_hint = n_layer_of[r.model.path];
    const auto t0 = std::chrono::steady_clock::now();
    Json etrace;
    Json rec = fh::run_point(r, s->env, &etrace);
    if ((stopped = fh::stop_signal()) != 0 && rec.value("status", "") != "ok") break;  // unfinished: not recorded
    if (rec.contains("model") && rec["model"].contains("n_layer") && rec["model"]["n_layer"].is_number()) {
      n_layer_of[r.model.path] = rec["model"]["n_layer"].get<int64_t>();
    }
    if (r.baseline_index >= 0) attach_baseline(r, &rec, &index_of, &records);
    records[i] = rec;
    s->traces[i] = etrace;
    const auto t_w = std::chrono::steady_clock::now();
    write_results(s, true, false);
    records[i]["harness"]["write_ns"] = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t_w).count();
    const double total_ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
    if (rec.contains("harness") && rec["harness"]["child_wall_ns"].is_number()) {
      const Json& h = rec["harness"];
      const double child = h["child_wall_ns"].get<double>();
      const double measured_elsewhere = h.value("drop_cache_ns", 0.0) + h.value("correctness_ns", 0.0) + h.value("cgroup_ns", 0.0);
      const double overhead = std::max(0.0, total_ns - child - measured_elsewhere);
      records[i]["harness"]["overhead_ns"] = overhead;
      records[i]["harness"]["overhead_fraction"] = child > 0 ? overhead / child : 0.0;
      s->overhead_ns_total += overhead;
      s->child_ns_total += child;
    }
    spent_s += total_ns / 1e9;
    ++s->n_timed;
  }
  if (!inv.quiet && tty) std::fprintf(stderr, "\n");
  return stopped;
}

// Interrupted: the trace and a partial results file are written, and the way to continue printed.
int finish_interrupted(const Invocation& inv, Session* s, int stopped) {
  s->warnings.push_back(std::string("interrupted by ") + (stopped == SIGINT ? "SIGINT" : "SIGTERM") +
                        ": partial results; continue with --resume " + s->out_path);
  write_trace(inv, s);
  write_results(s, true, false);
  std::fprintf(stderr, "run_lab_harness: interrupted; partial results in %s (continue with --resume %s)\n",
               s->out_path.c_str(), s->out_path.c_str());
  return 128 + stopped;
}

// The table on stdout (one line per run: tg ms/token against the prediction and the physical
// floor, correctness, baselines), the claims, overhead, warnings and where the files are.
// Returns the exit status: 0 only when every run, check, claim and validation passed.
int print_summary(const Invocation& inv, const Session& s) {
  const std::vector<fh::RunSpec>& runs = s.runs;
  const std::vector<Json>& records = s.records;
  bool all_ok = s.claims_ok && s.validate_ok;
  if (!runs.empty()) std::printf("%-6s %-44s %10s %10s %10s %8s %s\n", "run", "point", "tg ms/tok", "predicted", "floor", "vs floor", "status");
  for (size_t i = 0; i < records.size(); ++i) {
    const Json& rec = records[i];
    if (rec.is_null()) continue;
    const std::string status = rec.value("status", "?");
    if (status == "failed") all_ok = false;
    std::string extra = status == "ok" ? "ok" : status + ": " + rec.value("error", "");
    if (rec.contains("correctness") && rec["correctness"].is_object()) {
      const bool passed = rec["correctness"].value("passed", false);
      if (!passed) all_ok = false;
      char buf[128];
      std::snprintf(buf, sizeof(buf), " | correctness %s nmse %.2e top1 %.2f", passed ? "PASS" : "FAIL",
                    rec["correctness"].value("nmse", 0.0), rec["correctness"].value("top1_agreement", 0.0));
      extra += buf;
    }
    if (rec.contains("vs_floor") && rec["vs_floor"].is_object() && rec["vs_floor"]["below_floor"].get<bool>()) {
      extra += " | BELOW PHYSICAL FLOOR: suspect";
    }
    if (rec.contains("baseline") && rec["baseline"].is_object() && rec["baseline"]["ratio"].is_number()) {
      extra += " | vs " + rec["baseline"]["engine"].get<std::string>() + " " + fmt_num(rec["baseline"]["ratio"], "%.2fx");
    }
    if (rec.contains("serving") && rec["serving"].is_object()) {
      const Json& sv = rec["serving"];
      auto p50 = [&](const char* k) { return sv[k].is_object() ? fmt_num(sv[k]["p50"], "%.1f") : std::string("-"); };
      extra += " | " + fmt_num(sv["output_tok_s"], "%.1f") + " out tok/s, " + fmt_num(sv["request_throughput_rps"], "%.2f") +
               " req/s, TTFT p50 " + p50("ttft_ms") + " ms, ITL p50 " + p50("itl_ms") + " ms, errors " +
               std::to_string(sv.value("errors", int64_t{0}));
    }
    const Json med = rec.contains("summary") && rec["summary"]["tg_ms_per_token"].is_object() ? rec["summary"]["tg_ms_per_token"]["median"] : Json();
    const Json pred = rec.contains("predicted") && rec["predicted"].is_object() ? rec["predicted"]["ms_per_token"] : Json();
    const Json floor = rec.contains("predicted") && rec["predicted"].is_object() ? rec["predicted"]["floor_ms_per_token"] : Json();
    const Json ratio = rec.contains("vs_floor") && rec["vs_floor"].is_object() ? rec["vs_floor"]["ratio"] : Json();
    std::printf("%-6s %-44s %10s %10s %10s %8s %s\n", rec.value("id", "").c_str(), point_label(runs[i], s.shown).substr(0, 44).c_str(),
                fmt_num(med).c_str(), fmt_num(pred).c_str(), fmt_num(floor).c_str(), fmt_num(ratio, "%.2fx").c_str(), extra.c_str());
  }
  for (const auto& c : s.claims) {
    std::printf("claim %s [%s]%s\n  %s\n", c["name"].get<std::string>().c_str(), c["verdict"].get<std::string>().c_str(),
                c["expect_ok"].get<bool>() ? "" : (" (expected " + c["expect"].get<std::string>() + ")").c_str(),
                c["arithmetic"].get<std::string>().c_str());
  }
  if (s.child_ns_total > 0) {
    std::printf("harness overhead: %.3f%% of the engine's wall time (%.1f ms over %d runs)\n",
                100.0 * s.overhead_ns_total / s.child_ns_total, s.overhead_ns_total / 1e6, s.n_timed);
  }
  if (s.n_skipped_resume > 0) std::printf("resumed: %d finished runs kept from %s\n", s.n_skipped_resume, s.out_path.c_str());
  for (const auto& w : s.warnings) std::printf("warning: %s\n", w.c_str());
  std::printf("results: %s\n", s.out_path.c_str());
  if (writes_trace(inv, s)) std::printf("trace:   %s\n", s.trace_path.c_str());
  return all_ok ? kExitOk : kExitFailed;
}

}  // namespace

// One invocation, from the scenario YAML to the results JSON: each step either hands on to the
// next or ends the invocation with its exit status (see the top of the file).
int main(int argc, char** argv) {
  Invocation inv;
  if (ExitNow e = parse_command_line(argc, argv, &inv)) return *e;
  if (inv.merge) return fh::run_merge_command(inv.merge_inputs, inv.merge_out, inv.allow_mixed_revisions);
  if (inv.help_keys) {
    std::printf("%s", fh::help_keys_text().c_str());
    return kExitOk;
  }
  if (ExitNow e = read_shard_and_resume(&inv)) return *e;

  // Plan: every input error before anything runs.
  Session s;
  if (ExitNow e = load_inputs(&inv, &s)) return *e;
  if (ExitNow e = expand_points(inv, &s)) return *e;
  if (ExitNow e = find_binaries(inv, &s)) return *e;
  if (ExitNow e = take_this_shard(inv, &s)) return *e;
  describe_this_machine(&s);
  check_gate_reps(&s);
  if (inv.dry_run) {
    print_dry_run(inv, s);
    return kExitOk;
  }

  // Prepare: scratch, models, context, ceilings, validation, output paths, resumed runs.
  if (ExitNow e = prepare_to_run(inv, &s)) return *e;
  if (ExitNow e = generate_models(inv, s)) return *e;
  build_context(&inv, &s);
  measure_ceilings(inv, &s);
  if (ExitNow e = validate_machine(inv, &s)) return *e;
  make_run_env(&s);
  choose_output_paths(inv, &s);
  keep_resumed_runs(&inv, &s);

  // Run, then write the trace and the final results file, then summarize.
  const int stopped_during = run_sweep(inv, &s);
  s.serve.stop();
  if (s.write_failed) return kExitFailed;
  const int stopped = stopped_during != 0 ? stopped_during : fh::stop_signal();
  if (stopped != 0) return finish_interrupted(inv, &s, stopped);
  write_trace(inv, &s);
  write_results(&s, false, true);
  return print_summary(inv, s);
}
