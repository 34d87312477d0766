// run_lab_harness end to end against tests/fixtures/harness/fake_flea.py (a stand-in engine that
// prints contract-conforming JSON with known numbers): results file, schema, summaries, failures,
// baselines, correctness, dry run, SIGINT + --resume.
#include <gtest/gtest.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "cgroup.h"
#include "test_util.h"

using Json = nlohmann::json;

namespace {

using flea::test::count_lines;
using flea::test::fake_flea;
using flea::test::harness_bin;
using flea::test::read_text;
using flea::test::schema_errors;
using flea::test::write_text;



// The single results file in dir (not the trace).
std::string results_file(const std::string& dir) {
  std::string out;
  flea::test::run_command("ls " + dir + "/*.json 2>/dev/null | grep -v trace.json", &out);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// "" when this process may make memory cgroups, else why not.
std::string cgroups_unavailable() {
  auto cg = flea::harness::MemoryCgroup::create("probe-" + std::to_string(getpid()), 64 << 20);
  return cg.ok() ? "" : cg.status().message();
}

struct HarnessResult {
  int rc;
  std::string out;
};

HarnessResult harness_run(const std::string& env, const std::string& args) {
  HarnessResult r;
  r.rc = flea::test::run_command(env + " " + harness_bin() + " --flea " + fake_flea() + " " + args + " 2>&1", &r.out);
  return r;
}


class HarnessRun : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = dir_.file("m.gguf");
    write_text(model_, std::string(8192, 'x'));
    log_ = dir_.file("engine.log");
    out_ = dir_.file("out");
    env_ = "FAKE_FLEA_LOG=" + log_ + " FLEA_CACHE_DIR=" + dir_.file("cache");
  }
  std::string scenario(const std::string& body) {
    const std::string p = dir_.file("s.yaml");
    write_text(p, "model: m.gguf\nthreads: 1\nwarmup: 0\nceilings: {fio: false, memory: false}\n" + body);
    return p;
  }
  flea::test::TempDir dir_;
  std::string model_, log_, out_, env_;
};

}  // namespace

TEST_F(HarnessRun, SweepWritesSchemaValidResultsWithExactSummaries) {
  const std::string s = scenario("gen: 4\nprompt: 2\nreps: 3\nresidency: [full, transient]\n"
                                 "baselines:\n  - {engine: load-then-compute}\n");
  // tg samples for 4 tokens: 8, 10, 12 ms → 2, 2.5, 3 ms/token.
  HarnessResult r = harness_run(env_ + " FAKE_FLEA_TG_NS=8000000,10000000,12000000", "--config " + s + " --out " + out_);
  ASSERT_EQ(r.rc, 0) << r.out;
  const std::string f = results_file(out_);
  ASSERT_FALSE(f.empty()) << r.out;
  Json j = Json::parse(read_text(f));
  // Key order of FORMAT.md (checked on the text: nlohmann::json sorts keys).
  const std::string raw = read_text(f);
  EXPECT_LT(raw.find("\"context\""), raw.find("\"ceilings\""));
  EXPECT_LT(raw.find("\"ceilings\""), raw.find("\"runs\""));
  EXPECT_LT(raw.find("\"runs\""), raw.find("\"status\": {"));
  EXPECT_EQ(j["context"]["schema_version"], 1);
  EXPECT_EQ(j["status"]["complete"], true);
  EXPECT_EQ(j["status"]["partial"], false);
  ASSERT_EQ(j["runs"].size(), 4u);  // full, its load-then-compute baseline, transient, its baseline
  const Json& r0 = j["runs"][0];
  EXPECT_EQ(r0["engine"], "flea");
  EXPECT_EQ(r0["status"], "ok");
  const Json& tg = r0["summary"]["tg_ms_per_token"];
  EXPECT_DOUBLE_EQ(tg["median"].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(tg["min"].get<double>(), 2.0);
  EXPECT_DOUBLE_EQ(tg["max"].get<double>(), 3.0);
  EXPECT_DOUBLE_EQ(tg["mad"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(tg["p95"].get<double>(), 2.95);
  EXPECT_DOUBLE_EQ(r0["summary"]["tg_tok_s"].get<double>(), 400.0);
  EXPECT_EQ(r0["samples_ns"]["tg"], Json::array({8000000, 10000000, 12000000}));
  EXPECT_TRUE(r0["io"]["prefetch_misses"].is_null());  // the engine reported null: stays null
  EXPECT_EQ(r0["io"]["read_bytes_per_token"], 4000000);
  EXPECT_TRUE(r0["memory"]["peak_rss_mb"].get<double>() > 0);
  EXPECT_EQ(r0["layers"].size(), 4u);
  // Overlap from the fake's layers: io 4 x 100 ns, compute 4 x 200 ns, timed = pp + tg samples.
  const Json& ov = r0["io"]["overlap"];
  ASSERT_TRUE(ov.is_object()) << r0["io"].dump();
  double timed = 0;
  for (const auto& v : r0["samples_ns"]["pp"]) timed += v.get<double>();
  for (const auto& v : r0["samples_ns"]["tg"]) timed += v.get<double>();
  EXPECT_DOUBLE_EQ(ov["io_busy_ns"].get<double>(), 400);
  EXPECT_DOUBLE_EQ(ov["compute_ns"].get<double>(), 800);
  EXPECT_DOUBLE_EQ(ov["wall_over_max"].get<double>(), timed / 800);
  EXPECT_DOUBLE_EQ(ov["wall_over_sum"].get<double>(), timed / 1200);
  EXPECT_TRUE(r0["predicted"]["ms_per_token"].is_number());
  EXPECT_EQ(r0["baseline"]["engine"], "load-then-compute");
  EXPECT_DOUBLE_EQ(r0["baseline"]["ratio"].get<double>(), 1.0);  // same fake samples
  EXPECT_EQ(j["runs"][1]["engine"], "load-then-compute");
  EXPECT_EQ(j["runs"][1]["point"]["prefetch"], 0);
  EXPECT_TRUE(j["runs"][0]["harness"]["overhead_fraction"].is_number());
  EXPECT_NE(r.out.find("harness overhead:"), std::string::npos);
  // The engine got the point's flags.
  EXPECT_EQ(count_lines(read_text(log_), "bench --model " + model_), 4);
  EXPECT_EQ(count_lines(read_text(log_), "--residency transient"), 2);
  EXPECT_EQ(count_lines(read_text(log_), "--prefetch 0"), 2);
  // Chrome trace with the engine's events re-homed per run.
  Json trace = Json::parse(read_text(f.substr(0, f.size() - 5) + ".trace.json"));
  int engine_events = 0;
  for (const auto& e : trace["traceEvents"]) engine_events += e.value("name", "") == "load L0";
  EXPECT_EQ(engine_events, 4);
  const std::string errs = schema_errors(f);
  if (errs != "skip") {
    EXPECT_EQ(errs, "") << f;
  }
}

TEST_F(HarnessRun, FailedAndCrashedRunsAreRecordedAndExitOne) {
  const std::string s = scenario("gen: 2\nprompt: 0\nreps: 1\nio: [pread, mmap, odirect]\n");
  HarnessResult r = harness_run(env_ + " FAKE_FLEA_FAIL_ON='--io mmap' FAKE_FLEA_CRASH_ON='--io odirect'", "--config " + s + " --out " + out_);
  EXPECT_EQ(r.rc, 1) << r.out;
  Json j = Json::parse(read_text(results_file(out_)));
  ASSERT_EQ(j["runs"].size(), 3u);
  EXPECT_EQ(j["runs"][0]["status"], "ok");
  EXPECT_EQ(j["runs"][1]["status"], "failed");
  EXPECT_NE(j["runs"][1]["error"].get<std::string>().find("exited 1: flea: injected failure"), std::string::npos);
  EXPECT_FALSE(j["runs"][1].contains("summary"));  // no made-up numbers
  EXPECT_NE(j["runs"][2]["error"].get<std::string>().find("killed by signal 11"), std::string::npos);
  EXPECT_EQ(j["status"]["n_failed"], 2);
  const std::string errs = schema_errors(results_file(out_));
  if (errs != "skip") {
    EXPECT_EQ(errs, "");
  }
}

TEST_F(HarnessRun, MissingBaselineIsAnErrorOrAWarningWhenOptional) {
  std::string s = scenario("gen: 2\nreps: 1\nbaselines:\n  - {engine: llama-bench, path: /nonexistent/llama-bench}\n");
  HarnessResult r = harness_run(env_, "--config " + s + " --out " + out_);
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_NE(r.out.find("no executable at /nonexistent/llama-bench"), std::string::npos) << r.out;
  EXPECT_NE(access(log_.c_str(), F_OK), 0);  // nothing ran
  s = scenario("gen: 2\nreps: 1\nbaselines:\n  - {engine: llama-bench, path: /nonexistent/llama-bench, optional: true}\n");
  r = harness_run(env_, "--config " + s + " --out " + out_);
  EXPECT_EQ(r.rc, 0) << r.out;
  Json j = Json::parse(read_text(results_file(out_)));
  ASSERT_EQ(j["runs"].size(), 2u);
  EXPECT_EQ(j["runs"][1]["status"], "skipped");
  bool warned = false;
  for (const auto& w : j["context"]["warnings"]) warned |= w.get<std::string>().find("/nonexistent/llama-bench") != std::string::npos;
  EXPECT_TRUE(warned);
}

TEST_F(HarnessRun, DryRunPrintsRunsAndDurationWithoutRunning) {
  const std::string s = scenario("io: [pread, odirect]\nprefetch: [0, 1]\n");
  HarnessResult r = harness_run(env_, "--config " + s + " --dry-run --profile ci-cpu");
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("4 runs"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("r0004 flea model=m.gguf io=odirect prefetch=1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("predicted duration: ~"), std::string::npos) << r.out;
  EXPECT_NE(access(log_.c_str(), F_OK), 0);
}

TEST_F(HarnessRun, DryRunPrintsTheRepsThePerfGateNeeds) {
  HarnessResult r = harness_run(env_, "--config " + scenario("reps: 3\n") + " --dry-run");
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("perf gate: needs >= 9 reps per point to detect a 5.0% change of the median at noise_cv "
                       "0.03 (alpha 0.01, power 0.8); too few (3) in r0001"), std::string::npos) << r.out;
  r = harness_run(env_, "--config " + scenario("reps: 5\nmin_effect: 0.2\nnoise_cv: 0.07\n") + " --dry-run");
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("perf gate: needs >= 5 reps per point to detect a 20.0% change of the median at noise_cv "
                       "0.07 (alpha 0.01, power 0.8); every run has enough"), std::string::npos) << r.out;
}

TEST_F(HarnessRun, FewerRepsThanThePerfGateNeedsIsAWarningInTheResults) {
  auto warned = [&](const std::string& body) {
    flea::test::run_command("rm -rf " + out_);
    HarnessResult r = harness_run(env_, "--config " + scenario("gen: 2\nprompt: 1\n" + body) + " --out " + out_ + " --quiet");
    EXPECT_EQ(r.rc, 0) << r.out;
    const Json j = Json::parse(read_text(results_file(out_)));
    for (const auto& w : j["context"]["warnings"]) {
      if (w.get<std::string>().find("that report/gate.py needs") != std::string::npos) return w.get<std::string>();
    }
    return std::string();
  };
  const std::string w = warned("reps: [3, 9]\n");
  EXPECT_EQ(w.rfind("reps 3 < 9 that report/gate.py needs to detect a 5.0% change", 0), 0u) << w;
  EXPECT_NE(w.find("(r0001): its timing verdicts can be INCONCLUSIVE"), std::string::npos) << w;
  EXPECT_EQ(warned("reps: 9\n"), "");
}

TEST_F(HarnessRun, CorrectnessAgainstReferenceLogits) {
  // A one-case reference set: 2 tokens × 4 vocab.
  flea::test::run_command("mkdir -p " + dir_.file("ref/logits"));
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 0.0f, 1.0f, 0.0f, 3.0f, -2.0f};
  std::string bytes(reinterpret_cast<const char*>(logits.data()), logits.size() * 4);
  write_text(dir_.file("ref/logits/a.f32"), bytes);
  write_text(dir_.file("ref/m.gguf"), "GGUF");
  write_text(dir_.file("ref/manifest.json"),
        R"({"producer": {"commit": "abc"}, "cases": [{"model": "m.gguf", "file_type": "Q4_K_M", "n_vocab": 4,
            "prompts": [{"tokens": [5, 6], "logits": "logits/a.f32", "n_vocab": 4}]}]})");
  const std::string s = dir_.file("c.yaml");
  write_text(s, "reference: ref\nmodel: reference\nresidency: [full, transient]\ngen: 1\nreps: 1\nwarmup: 0\n"
           "ceilings: {fio: false, memory: false}\n");
  const std::string env = env_ + " FAKE_FLEA_LOGITS_REF=" + dir_.file("ref/logits/a.f32") + " FAKE_FLEA_N_VOCAB=4";
  HarnessResult r = harness_run(env, "--config " + s + " --out " + out_);
  ASSERT_EQ(r.rc, 0) << r.out;
  Json j = Json::parse(read_text(results_file(out_)));
  ASSERT_EQ(j["runs"].size(), 2u);
  const Json& c = j["runs"][1]["correctness"];
  EXPECT_EQ(c["passed"], true);
  EXPECT_EQ(c["nmse"], 0.0);
  EXPECT_EQ(c["top1_agreement"], 1.0);
  EXPECT_EQ(c["reference_commit"], "abc");
  EXPECT_EQ(count_lines(read_text(log_), "logits --model"), 2);
  EXPECT_EQ(count_lines(read_text(log_), "--tokens 5,6"), 2);
  // Row 0 shifted by +1 everywhere keeps argmax and KL but not NMSE: 4 / (Σref² = 19.25).
  flea::test::run_command("rm -rf " + out_);
  r = harness_run(env + " FAKE_FLEA_LOGITS_NOISE=1", "--config " + s + " --out " + out_);
  EXPECT_EQ(r.rc, 1) << r.out;
  j = Json::parse(read_text(results_file(out_)));
  EXPECT_EQ(j["runs"][0]["correctness"]["passed"], false);
  EXPECT_NEAR(j["runs"][0]["correctness"]["nmse"].get<double>(), 4.0 / 19.25, 1e-6);
  EXPECT_NEAR(j["runs"][0]["correctness"]["kl"].get<double>(), 0.0, 1e-9);
  EXPECT_NE(r.out.find("correctness FAIL"), std::string::npos) << r.out;
  const std::string errs = schema_errors(results_file(out_));
  if (errs != "skip") {
    EXPECT_EQ(errs, "");
  }
}

TEST_F(HarnessRun, SigintWritesPartialAndResumeFinishes) {
  const std::string s = scenario("gen: 2\nprompt: 0\nreps: 1\nprefetch: [0, 1, 2, 3, 4, 5]\n");
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    setenv("FAKE_FLEA_LOG", log_.c_str(), 1);
    setenv("FAKE_FLEA_SLEEP", "0.3", 1);
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    dup2(devnull, 2);
    execl(harness_bin().c_str(), "run_lab_harness", "--config", s.c_str(), "--out", out_.c_str(), "--flea", fake_flea().c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait until two runs are on disk, then interrupt mid-sweep.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  size_t finished = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    const std::string f = results_file(out_);
    if (!f.empty()) {
      try {
        finished = Json::parse(read_text(f))["runs"].size();
      } catch (...) {
        ADD_FAILURE() << "results file not valid JSON mid-sweep (not atomic?)";
      }
    }
    if (finished >= 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_GE(finished, 2u);
  kill(pid, SIGINT);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130);
  const std::string f = results_file(out_);
  Json j = Json::parse(read_text(f));
  EXPECT_EQ(j["status"]["partial"], true);
  EXPECT_EQ(j["status"]["complete"], false);
  const size_t done = j["runs"].size();
  EXPECT_GE(done, 2u);
  EXPECT_LT(done, 6u);
  for (const auto& r : j["runs"]) EXPECT_EQ(r["status"], "ok");  // the interrupted run is not recorded
  const int first_invocations = count_lines(read_text(log_), "bench ");
  const std::string errs = schema_errors(f);
  if (errs != "skip") {
    EXPECT_EQ(errs, "");
  }

  HarnessResult r = harness_run(env_, "--resume " + f);
  ASSERT_EQ(r.rc, 0) << r.out;
  j = Json::parse(read_text(f));
  EXPECT_EQ(j["status"]["complete"], true);
  EXPECT_EQ(j["status"]["partial"], false);
  ASSERT_EQ(j["runs"].size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(j["runs"][i]["point"]["prefetch"], static_cast<int>(i));
  EXPECT_EQ(count_lines(read_text(log_), "bench ") - first_invocations, static_cast<int>(6 - done));  // finished points skipped
  EXPECT_EQ(j["context"]["resumed"].size(), 1u);
}

// llama-bench's JSON has numeric fields where ours has strings; a baseline run must parse it,
// stand next to ours with a ratio, and get no prediction (that models our engine only).
TEST_F(HarnessRun, LlamaBenchBaselineRecordsItsSamplesAndTheRatio) {
  const std::string lb = flea::test::source_dir() + "/tests/fixtures/harness/fake_llama_bench.py";
  const std::string s = scenario("gen: 4\nprompt: 2\nreps: 3\nbaselines:\n  - {engine: llama-bench, path: " + lb + "}\n");
  HarnessResult r = harness_run(env_ + " FAKE_FLEA_TG_NS=8000000,10000000,12000000", "--config " + s + " --out " + out_);
  ASSERT_EQ(r.rc, 0) << r.out;
  Json j = Json::parse(read_text(results_file(out_)));
  ASSERT_EQ(j["runs"].size(), 2u);
  const Json& ours = j["runs"][0];
  const Json& theirs = j["runs"][1];
  EXPECT_EQ(theirs["engine"], "llama-bench");
  EXPECT_EQ(theirs["status"], "ok");
  EXPECT_EQ(theirs["samples_ns"]["tg"], Json::array({40000000, 40001000, 40002000}));
  EXPECT_TRUE(theirs["predicted"].is_null());
  // The model left the page cache before llama-bench too, as before ours.
  EXPECT_TRUE(theirs["harness"]["drop_cache_ns"].is_number()) << theirs["harness"].dump();
  EXPECT_TRUE(theirs["memory"]["cgroup"].is_null());  // no memory_limit_mb
  ASSERT_TRUE(ours["baseline"].is_object()) << ours.dump();
  EXPECT_EQ(ours["baseline"]["engine"], "llama-bench");
  // Ours: 4 tokens in a median of 10 ms; theirs: 4 tokens in 40.001 ms.
  EXPECT_NEAR(ours["baseline"]["ratio"].get<double>(), 40.001 / 10.0, 1e-6);
  const std::string errs = schema_errors(results_file(out_));
  if (errs != "skip") {
    EXPECT_EQ(errs, "");
  }
}

// memory_limit_mb: ours and llama-bench each run in a fresh memory cgroup with the same limit, and
// the records say what the cgroup saw.
TEST_F(HarnessRun, MemoryLimitPutsOursAndLlamaBenchUnderTheSameCgroupLimit) {
  const std::string why = cgroups_unavailable();
  if (!why.empty()) GTEST_SKIP() << "memory cgroups are not writable here: " << why;
  const std::string lb = flea::test::source_dir() + "/tests/fixtures/harness/fake_llama_bench.py";
  const std::string s = scenario("gen: 4\nprompt: 2\nreps: 2\nmemory_limit_mb: 128\n"
                                 "baselines:\n  - {engine: llama-bench, path: " + lb + "}\n");
  const std::string cg_log = dir_.file("cgroups.log");
  HarnessResult r = harness_run(env_ + " FAKE_CGROUP_LOG=" + cg_log, "--config " + s + " --out " + out_);
  ASSERT_EQ(r.rc, 0) << r.out;
  Json j = Json::parse(read_text(results_file(out_)));
  ASSERT_EQ(j["runs"].size(), 2u);
  std::istringstream log(read_text(cg_log));
  for (const Json& run : j["runs"]) {
    EXPECT_EQ(run["status"], "ok") << run.dump();
    EXPECT_EQ(run["point"]["memory_limit_mb"], 128);
    const Json& cg = run["memory"]["cgroup"];
    ASSERT_TRUE(cg.is_object()) << run.dump();
    EXPECT_EQ(cg["limit_bytes"], 128 << 20);
    EXPECT_EQ(cg["enforced"], true);
    EXPECT_TRUE(cg["version"] == "v1" || cg["version"] == "v2") << cg.dump();
    if (!cg["peak_bytes"].is_null()) {
      EXPECT_GT(cg["peak_bytes"].get<int64_t>(), 0);
    }
    EXPECT_EQ(cg["oom_kills"], 0);
    // The engine itself read its cgroup: the one the record names (relative to the mount).
    std::string engine, path;
    ASSERT_TRUE(log >> engine >> path) << read_text(cg_log);
    EXPECT_EQ(engine, run["engine"] == "flea" ? "flea" : "llama-bench");
    const std::string recorded = cg["path"];
    EXPECT_EQ(recorded.substr(recorded.size() - path.size()), path) << recorded << " vs " << path;
    EXPECT_NE(access(recorded.c_str(), F_OK), 0) << recorded << " was not removed";
  }
  const std::string errs = schema_errors(results_file(out_));
  if (errs != "skip") {
    EXPECT_EQ(errs, "");
  }
}

TEST_F(HarnessRun, RunOverItsMemoryLimitFailsAsKilledByTheCgroup) {
  const std::string why = cgroups_unavailable();
  if (!why.empty()) GTEST_SKIP() << "memory cgroups are not writable here: " << why;
  const std::string s = scenario("gen: 2\nprompt: 0\nreps: 1\nmemory_limit_mb: 64\n");
  HarnessResult r = harness_run(env_ + " FAKE_FLEA_TOUCH_MB=256", "--config " + s + " --out " + out_);
  EXPECT_EQ(r.rc, 1) << r.out;
  Json j = Json::parse(read_text(results_file(out_)));
  ASSERT_EQ(j["runs"].size(), 1u);
  const Json& run = j["runs"][0];
  EXPECT_EQ(run["status"], "failed");
  EXPECT_EQ(run["error"].get<std::string>().rfind("flea bench killed by the memory cgroup at its 64 MiB limit (", 0), 0u)
      << run["error"];
  EXPECT_GE(run["memory"]["cgroup"]["oom_kills"].get<int64_t>(), 1);
  EXPECT_FALSE(run.contains("summary"));
  const std::string errs = schema_errors(results_file(out_));
  if (errs != "skip") {
    EXPECT_EQ(errs, "");
  }
}

// Without cgroups (here: a parent that is no cgroup) a limit below this machine's RAM fails its
// run before the engine starts; one above it limits nothing, so the run goes ahead and says so.
TEST_F(HarnessRun, MemoryLimitThatCannotBeSetFailsTheRunUnlessAboveThisMachinesRam) {
  const std::string s = scenario("gen: 2\nprompt: 0\nreps: 1\nmemory_limit_mb: [64, 100000000]\n");
  HarnessResult r = harness_run(env_ + " FLEA_CGROUP_PARENT=" + dir_.file("not-a-cgroup"), "--config " + s + " --out " + out_);
  EXPECT_EQ(r.rc, 1) << r.out;
  Json j = Json::parse(read_text(results_file(out_)));
  ASSERT_EQ(j["runs"].size(), 2u);
  const Json& small = j["runs"][0];
  EXPECT_EQ(small["status"], "failed");
  EXPECT_EQ(small["error"].get<std::string>().rfind("flea bench: memory_limit_mb 64 cannot be enforced: $FLEA_CGROUP_PARENT=", 0), 0u)
      << small["error"];
  EXPECT_EQ(small["memory"]["cgroup"]["enforced"], false);
  const Json& big = j["runs"][1];
  EXPECT_EQ(big["status"], "ok") << big.dump();
  EXPECT_EQ(big["memory"]["cgroup"]["enforced"], false);
  EXPECT_NE(big["memory"]["cgroup"]["note"].get<std::string>().find("not enforced: the limit is at or above this machine's RAM"),
            std::string::npos) << big["memory"]["cgroup"].dump();
  EXPECT_EQ(count_lines(read_text(log_), "bench --model"), 1);  // only the big one ran
  const std::string errs = schema_errors(results_file(out_));
  if (errs != "skip") {
    EXPECT_EQ(errs, "");
  }
}
