// `flea bench --residency auto` with no budget on a model larger than its memory cgroup: the plan
// takes its budget from the cgroup, streams the layers that do not fit, and the run completes under
// the limit (issue 23: it used to keep every layer resident and be OOM-killed). Needs writable
// memory cgroups (root, or $FLEA_CGROUP_PARENT delegated); skips with the reason otherwise.
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <string>

#include "cgroup.h"
#include "runner.h"
#include "test_util.h"

namespace fh = flea::harness;

namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

TEST(ResidencyAutoMachine, BenchInACgroupSmallerThanTheModelStreamsAndCompletes) {
  constexpr int64_t kLimit = 48 * kMiB;
  auto made = fh::MemoryCgroup::create("test-" + std::to_string(getpid()) + "-auto", kLimit);
  if (!made.ok()) GTEST_SKIP() << "memory cgroups are not writable here: " << made.status().message();
  const std::unique_ptr<fh::MemoryCgroup> cg = std::move(*made);
  flea::test::TempDir dir;
  const std::string model = dir.file("m.gguf");
  const std::string flea = flea::test::bin_dir() + "/flea";
  // 16 layers of ~3.3 MiB (Q8_0) + ~4.4 MiB of embeddings: 55 MiB, over the 48 MiB limit.
  const fh::ChildResult synth = fh::run_child({flea, "synth", "--shape", "auto-test", "--n-embd", "512", "--n-ff", "1536",
                                               "--n-layer", "16", "--n-head", "8", "--n-head-kv", "4", "--n-vocab", "4096",
                                               "--ctx", "512", "--type", "Q8_0", "--out", model, "-q"},
                                              120);
  ASSERT_EQ(synth.exit_code, 0) << synth.err;
  const std::vector<std::string> bench = {flea, "bench", "-m", model, "--residency", "auto", "--prompt", "8",
                                          "--gen", "4", "--reps", "1", "--warmup", "0", "-t", "1"};
  const fh::ChildResult r = fh::run_child(bench, 120, cg.get());
  const fh::CgroupUsage u = cg->usage();
  ASSERT_TRUE(r.started) << r.start_error;
  ASSERT_EQ(r.exit_code, 0) << "signal " << r.term_signal << " " << fh::oom_kill_message(u) << "\n" << r.err;
  EXPECT_EQ(u.oom_kills, 0);
  const nlohmann::json j = nlohmann::json::parse(r.out);
  const nlohmann::json& plan = j["plan"];
  const std::string source = plan["vram_budget_source"];
  EXPECT_EQ(source.rfind("cgroup v1 " + cg->path() + ": limit 48.0 MiB - used ", 0) == 0 ||
                source.rfind("cgroup v2 " + cg->path() + ": limit 48.0 MiB - used ", 0) == 0,
            true)
      << source;
  EXPECT_NE(source.find(" - KV "), std::string::npos) << source;
  EXPECT_GT(plan["n_streamed"].get<int>(), 0);
  EXPECT_GT(plan["n_resident"].get<int>(), 0);
  EXPECT_LE(plan["vram_budget_bytes"].get<int64_t>(), kLimit);
  EXPECT_GT(plan["model_bytes"].get<int64_t>(), kLimit);
  EXPECT_LE(j["peak_rss_bytes"].get<int64_t>(), kLimit);
  EXPECT_GT(j["tg_tok_s"].get<double>(), 0.0);

  // A budget above the cgroup is refused up front, with what to pass instead.
  std::vector<std::string> over = bench;
  over.insert(over.end(), {"--vram-budget-mb", "1000"});
  const fh::ChildResult refused = fh::run_child(over, 120, cg.get());
  EXPECT_EQ(refused.exit_code, 2) << refused.err;
  EXPECT_NE(refused.err.find("--residency auto --vram-budget-mb 1000 needs "), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("but the machine has "), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("; pass --vram-budget-mb "), std::string::npos) << refused.err;
}

}  // namespace
