// Fleet runs through a real Slurm: scripts/slurm/local_cluster.sh brings up a one-node cluster in a
// temp dir, scripts/slurm/submit.sh runs a 4-shard sweep of a tiny synthetic model as a job array
// plus a dependent merge + report job, and the files it leaves are checked: one shard file per
// array task, a complete merged file whose runs are exactly the shards' runs, a report. A missing
// shard is re-run with --only into the same dir. Skips (with the reason and the daemons' log tail)
// when Slurm is not installed, not root, or the cluster cannot start here.
// ctest-labels: slurm
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "test_util.h"

using Json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr int kShards = 4;
constexpr int kRuns = 8;  // residency × io × prefetch below
constexpr auto kJobTimeout = std::chrono::minutes(5);

// 2 × 2 × 2 = 8 runs of a tiny model, a few tokens each; no fio/memory ceilings (seconds per shard).
constexpr const char* kScenario = R"(name: slurm_tiny
description: tests/slurm_test.cpp, 8 tiny runs across 4 shards
model: synth:tiny:Q4_K_M
prompt: 4
gen: 4
warmup: 0
reps: 1
threads: 1
residency: [full, transient]
io: [pread, odirect]
prefetch: [0, 1]
ceilings: {fio: false, memory: false, h2d: false}
)";

std::string slurm_dir() { return flea::test::source_dir() + "/scripts/slurm"; }

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Json read_json(const std::string& path) {
  try {
    return Json::parse(read(path));
  } catch (const std::exception& e) {
    ADD_FAILURE() << path << ": " << e.what();
    return Json();
  }
}

std::string shard_file(const std::string& dir, int i) {
  return dir + "/shard-" + std::to_string(i) + "-of-" + std::to_string(kShards) + ".json";
}

// Single-quoted for sh; the test's paths hold no quote.
std::string shell_quoted(const std::string& s) { return "'" + s + "'"; }

// The number after `label` on a line of submit.sh's output ("merge job       17   (...").
std::string job_id_after(const std::string& out, const std::string& label) {
  const size_t p = out.find(label);
  if (p == std::string::npos) return "";
  size_t b = out.find_first_of("0123456789", p + label.size());
  if (b == std::string::npos) return "";
  size_t e = out.find_first_not_of("0123456789", b);
  return out.substr(b, e - b);
}

class SlurmFleet : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: the test cluster runs SlurmUser=root";
    for (const char* b : {"slurmctld", "slurmd", "sbatch", "munged"}) {
      if (flea::test::run_command(std::string("command -v ") + b + " >/dev/null 2>&1") != 0) {
        GTEST_SKIP() << "no " << b << " binary (apt-get install slurm-wlm munge, or scripts/setup.sh --deps)";
      }
    }
    state_ = dir_.file("cluster");
    std::string out;
    const int rc = flea::test::run_command(slurm_dir() + "/local_cluster.sh start --state-dir " + shell_quoted(state_) +
                                                 " --owner-pid " + std::to_string(getpid()) + " 2>&1",
                                             &out);
    if (rc != 0) {
      flea::test::run_command(slurm_dir() + "/local_cluster.sh stop --state-dir " + shell_quoted(state_) + " >/dev/null 2>&1");
      GTEST_SKIP() << "the local Slurm cluster did not start (exit " << rc << "):\n" << out;
    }
    started_ = true;
    scenario_ = dir_.file("slurm_tiny.yaml");
    std::ofstream(scenario_) << kScenario;
    out_ = dir_.file("fleet");
    // (--owner-pid: if this process dies before TearDown, a watcher stops the daemons.)
    // The jobs inherit this environment (sbatch --export=ALL): the cluster, the binaries under test,
    // a model cache of the test's own.
    env_ = "SLURM_CONF=" + shell_quoted(state_ + "/slurm.conf") +
           " FLEA_BUILD_DIR=" + shell_quoted(fs::path(flea::test::bin_dir()).parent_path().string()) +
           " FLEA_CACHE_DIR=" + shell_quoted(dir_.file("cache"));
  }

  void TearDown() override {
    if (started_) {
      std::string out;
      flea::test::run_command(slurm_dir() + "/local_cluster.sh stop --state-dir " + shell_quoted(state_) + " 2>&1", &out);
    }
  }

  // submit.sh with `args`; returns the merge job's id ("" and a failure when submission failed).
  std::string submit(const std::string& args) {
    std::string out;
    const int rc = flea::test::run_command("cd " + shell_quoted(dir_.path()) + " && " + env_ + " " + slurm_dir() +
                                               "/submit.sh " + shell_quoted(scenario_) + " --out " + shell_quoted(out_) + " " + args + " 2>&1",
                                           &out);
    EXPECT_EQ(rc, 0) << out;
    const std::string id = job_id_after(out, "merge job");
    EXPECT_FALSE(id.empty()) << "no merge job id in submit.sh's output:\n" << out;
    return rc == 0 ? id : "";
  }

  // Waits until job `id` has left PENDING/RUNNING; returns its final JobState (or why it is unknown).
  std::string wait_for_job(const std::string& id) {
    const auto deadline = std::chrono::steady_clock::now() + kJobTimeout;
    std::string state;
    while (std::chrono::steady_clock::now() < deadline) {
      std::string out;
      flea::test::run_command(env_ + " scontrol show job -o " + id + " 2>&1", &out);
      const size_t p = out.find("JobState=");
      state = p == std::string::npos ? "unknown (" + out + ")" : out.substr(p + 9, out.find(' ', p) - p - 9);
      if (state != "PENDING" && state != "RUNNING" && state != "CONFIGURING" && state != "COMPLETING") return state;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    std::string q;
    flea::test::run_command(env_ + " squeue 2>&1", &q);
    ADD_FAILURE() << "job " << id << " still " << state << " after " << kJobTimeout.count() << " min; squeue:\n" << q;
    return state;
  }

  std::string logs() {
    std::string out;
    flea::test::run_command("tail -n 30 " + shell_quoted(out_) + "/logs/*.out 2>&1", &out);
    return out;
  }

  // Every shard file has its index, the merged file is complete with all runs ok, and its run ids
  // are exactly the union of the shards' run_ids, each once.
  void expect_complete_sweep() {
    std::set<std::string> shard_ids;
    for (int i = 1; i <= kShards; ++i) {
      const std::string f = shard_file(out_, i);
      ASSERT_TRUE(fs::exists(f)) << f << " missing; logs:\n" << logs();
      const Json doc = read_json(f);
      const Json& shard = doc["context"]["shard"];
      ASSERT_TRUE(shard.is_object()) << f << ": no context.shard";
      EXPECT_EQ(shard.value("index", 0), i) << f;
      EXPECT_EQ(shard.value("count", 0), kShards) << f;
      EXPECT_EQ(shard.value("n_runs_total", 0), kRuns) << f;
      // The file names the array task that wrote it.
      const Json& slurm = doc["context"]["slurm"];
      ASSERT_TRUE(slurm.is_object()) << f << ": no context.slurm";
      EXPECT_EQ(slurm.value("array_task_id", ""), std::to_string(i)) << f;
      for (const auto& id : shard["run_ids"]) {
        EXPECT_TRUE(shard_ids.insert(id.get<std::string>()).second) << "run id " << id << " in two shards";
      }
    }
    EXPECT_EQ(shard_ids.size(), static_cast<size_t>(kRuns));

    const std::string merged_path = out_ + "/merged.json";
    ASSERT_TRUE(fs::exists(merged_path)) << "no merged.json; logs:\n" << logs();
    const Json merged = read_json(merged_path);
    EXPECT_EQ(merged["status"].value("complete", false), true) << merged["status"].dump() << "\n" << logs();
    ASSERT_TRUE(merged["runs"].is_array());
    EXPECT_EQ(merged["runs"].size(), static_cast<size_t>(kRuns));
    std::set<std::string> merged_ids;
    for (const auto& r : merged["runs"]) {
      EXPECT_EQ(r.value("status", ""), "ok") << r.value("id", "?") << ": " << r.value("error", "");
      EXPECT_TRUE(merged_ids.insert(r.value("id", "")).second) << "run id " << r.value("id", "") << " twice in merged.json";
    }
    EXPECT_EQ(merged_ids, shard_ids);
    EXPECT_TRUE(fs::exists(out_ + "/report/report.md")) << "no report; logs:\n" << logs();
    EXPECT_FALSE(fs::exists(out_ + "/rerun.txt")) << read(out_ + "/rerun.txt");
  }

  flea::test::TempDir dir_;
  std::string state_, scenario_, out_, env_;
  bool started_ = false;
};

TEST_F(SlurmFleet, FourShardSweepMergesCompleteWithReport) {
  const std::string merge_job = submit("--shards " + std::to_string(kShards));
  ASSERT_FALSE(merge_job.empty());
  const std::string state = wait_for_job(merge_job);
  EXPECT_EQ(state, "COMPLETED") << logs();
  expect_complete_sweep();
  // One log per array task, named by shard index.
  for (int i = 1; i <= kShards; ++i) {
    std::string out;
    EXPECT_EQ(flea::test::run_command("ls " + shell_quoted(out_) + "/logs/shard-" + std::to_string(i) + "-of-4.*.out >/dev/null 2>&1"), 0)
        << "no log for shard " << i;
  }
}

TEST_F(SlurmFleet, MissingShardIsRerunWithOnlyIntoTheSameDir) {
  const std::string first = submit("--shards " + std::to_string(kShards));
  ASSERT_FALSE(first.empty());
  ASSERT_EQ(wait_for_job(first), "COMPLETED") << logs();
  const Json before = read_json(shard_file(out_, 2));

  // Shard 2 lost: the merge job's script, run again, says which shards to re-run and how.
  ASSERT_TRUE(fs::remove(shard_file(out_, 2)));
  std::string out;
  const int rc = flea::test::run_command(env_ + " " + slurm_dir() + "/merge.sbatch " + shell_quoted(flea::test::source_dir()) + " " +
                                             shell_quoted(fs::path(flea::test::bin_dir()).parent_path().string()) + " " +
                                             shell_quoted(scenario_) + " 4 " + shell_quoted(out_) + " 2>&1",
                                         &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_FALSE(read_json(out_ + "/merged.json")["status"].value("complete", true));
  const std::string rerun = read(out_ + "/rerun.txt");
  EXPECT_NE(rerun.find("--only 2 --out " + out_), std::string::npos) << rerun;

  const std::string second = submit("--shards " + std::to_string(kShards) + " --only 2");
  ASSERT_FALSE(second.empty());
  EXPECT_EQ(wait_for_job(second), "COMPLETED") << logs();
  expect_complete_sweep();
  // The same slice ran again: the same run ids as before.
  EXPECT_EQ(read_json(shard_file(out_, 2))["context"]["shard"]["run_ids"], before["context"]["shard"]["run_ids"]);
}

}  // namespace
