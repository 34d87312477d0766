// Sweep expansion and ordering, profile emulate/predict math, claim verdicts, summary statistics,
// logit comparison: the harness's arithmetic, checked exactly on known inputs.
#include <gtest/gtest.h>

#include <set>

#include <cmath>
#include <fstream>

#include "memory_limit.h"
#include "profile.h"
#include "runner.h"
#include "sha256.h"
#include "stats.h"
#include "sweep.h"
#include "test_util.h"

namespace fh = flea::harness;

namespace {

fh::Scenario scenario(const std::string& text) {
  auto d = fh::parse_yaml_doc("s.yaml", text, fh::scenario_keys());
  EXPECT_TRUE(d.ok()) << d.status().message();
  fh::Scenario s;
  s.path = "s.yaml";
  s.dir = "/scen";
  s.name = "s";
  s.settings = d->value;
  s.requested = d->requested;
  return s;
}

std::vector<fh::RunSpec> expand(const std::string& text, const fh::SweepOptions& o = {}) {
  fh::SweepOptions opts = o;
  if (opts.cache_dir.empty()) opts.cache_dir = "/cache";
  auto r = fh::expand_sweep(scenario(text), opts);
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? *r : std::vector<fh::RunSpec>{};
}

fh::Profile profile(const std::string& text) {
  auto p = fh::parse_profile("p.yaml", text);
  EXPECT_TRUE(p.ok()) << p.status().message();
  return *p;
}

const char* kGpuProfile =
    "name: t\ngpu: {name: G, vram_gb: 10, mem_bw_gb_s: 500}\npcie: {gen: 4, width: 16}\n"
    "storage: {device: d, read_gb_s: 5}\nram_gb: 20\nram_bw_gb_s: 50\n";
const char* kCpuProfile = "name: c\nstorage: {device: d, read_gb_s: 2}\nram_gb: 8\nram_bw_gb_s: 10\n";

}  // namespace

TEST(HarnessSweep, CartesianProductInTableOrderModelOutermost) {
  auto runs = expand("model: [a.gguf, b.gguf]\nio: [pread, odirect]\nprefetch: [0, 1, 2]\n");
  ASSERT_EQ(runs.size(), 12u);
  EXPECT_EQ(runs[0].id, "r0001");
  EXPECT_EQ(runs[11].id, "r0012");
  // model, then io (table order: io before prefetch), prefetch fastest.
  EXPECT_EQ(runs[0].point["model"], "a.gguf");
  EXPECT_EQ(runs[0].point["io"], "pread");
  EXPECT_EQ(runs[0].point["prefetch"], 0);
  EXPECT_EQ(runs[1].point["prefetch"], 1);
  EXPECT_EQ(runs[3].point["io"], "odirect");
  EXPECT_EQ(runs[6].point["model"], "b.gguf");
  EXPECT_EQ(runs[0].model.path, "/scen/a.gguf");
  // Every point carries every sweep axis with defaults filled in, except the speculative keys,
  // which only a point with a draft has, concurrency, which only serving points have, and
  // huge_pages, queue_depth and the expert_* keys, which a point has only away from their defaults
  // (so older points keep their identity).
  const std::set<std::string> only_when_set = {"draft", "draft_k", "huge_pages", "queue_depth",
                                               "expert_residency", "expert_cache", "expert_policy",
                                               "concurrency"};
  for (const auto& k : fh::point_keys()) {
    EXPECT_EQ(runs[5].point.contains(k), only_when_set.count(k) == 0) << k;
  }
  EXPECT_EQ(runs[5].point["reps"], 5);
}

TEST(HarnessSweep, HugePagesAppearInThePointOnlyWhenOffAndReachTheEngine) {
  auto runs = expand("model: m.gguf\nio: odirect\nhuge_pages: [on, off]\n");
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_FALSE(runs[0].point.contains("huge_pages"));
  EXPECT_EQ(runs[1].point["huge_pages"], "off");
  EXPECT_NE(fh::run_key("flea", runs[0].point), fh::run_key("flea", runs[1].point));
  auto flag = [](const std::vector<std::string>& argv) {
    for (size_t i = 0; i + 1 < argv.size(); ++i)
      if (argv[i] == "--huge-pages") return argv[i + 1];
    return std::string("missing");
  };
  EXPECT_EQ(flag(fh::bench_argv("flea", runs[0].point, "m.gguf", "", "")), "on");
  EXPECT_EQ(flag(fh::bench_argv("flea", runs[1].point, "m.gguf", "", "")), "off");
}

TEST(HarnessSweep, ExpertKeysAndQueueDepthAppearOnlyAwayFromTheirDefaultsAndReachTheEngine) {
  auto runs = expand("model: m.gguf\npoints:\n  - {}\n  - {expert_residency: layer, expert_cache: 3, "
                     "expert_policy: lfu, queue_depth: 16}\n");
  ASSERT_EQ(runs.size(), 2u);
  for (const char* k : {"expert_residency", "expert_cache", "expert_policy", "queue_depth"})
    EXPECT_FALSE(runs[0].point.contains(k)) << k;
  EXPECT_EQ(runs[1].point["expert_cache"], 3);
  auto flag = [](const std::vector<std::string>& argv, const std::string& name) {
    for (size_t i = 0; i + 1 < argv.size(); ++i)
      if (argv[i] == name) return argv[i + 1];
    return std::string("missing");
  };
  const auto a0 = fh::bench_argv("flea", runs[0].point, "m.gguf", ""), a1 = fh::bench_argv("flea", runs[1].point, "m.gguf", "");
  EXPECT_EQ(flag(a0, "--expert-residency"), "expert");
  EXPECT_EQ(flag(a0, "--expert-cache"), "-1");
  EXPECT_EQ(flag(a0, "--expert-policy"), "lru");
  EXPECT_EQ(flag(a0, "--queue-depth"), "4");
  EXPECT_EQ(flag(a1, "--expert-residency"), "layer");
  EXPECT_EQ(flag(a1, "--expert-cache"), "3");
  EXPECT_EQ(flag(a1, "--expert-policy"), "lfu");
  EXPECT_EQ(flag(a1, "--queue-depth"), "16");
}

TEST(HarnessSweep, DraftPointsResolveTheDraftAndRejectSynthOrMissingDrafts) {
  flea::test::TempDir dir;
  const std::string draft = dir.file("d.gguf");
  { std::ofstream(draft) << "x"; }
  auto runs = expand("model: m.gguf\npoints:\n  - {}\n  - {draft: " + draft + ", draft_k: 3}\n");
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_FALSE(runs[0].point.contains("draft"));
  EXPECT_FALSE(runs[0].point.contains("draft_k"));
  EXPECT_TRUE(runs[0].draft_path.empty());
  EXPECT_EQ(runs[1].point["draft_k"], 3);
  EXPECT_EQ(runs[1].draft_path, draft);
  const std::vector<std::string> argv = fh::bench_argv("flea", runs[1].point, "m.gguf", "", runs[1].draft_path);
  const std::string joined = fh::shell_quote(argv);
  EXPECT_NE(joined.find("--draft " + draft + " --draft-k 3"), std::string::npos) << joined;
  EXPECT_EQ(fh::shell_quote(fh::bench_argv("flea", runs[0].point, "m.gguf", "")).find("--draft"), std::string::npos);
  for (const std::string& bad : std::vector<std::string>{"synth:tiny:Q4_0", dir.file("missing.gguf")}) {
    fh::SweepOptions o;
    o.cache_dir = "/cache";
    auto r = fh::expand_sweep(scenario("model: m.gguf\ndraft: " + bad + "\n"), o);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("draft"), std::string::npos) << r.status().message();
  }
}

TEST(HarnessSweep, RunKeyIgnoresKeyOrder) {
  const fh::Json a = fh::Json::parse(R"({"model": "m", "io": "pread", "prefetch": 1})");
  const fh::Json b = fh::Json::parse(R"({"prefetch": 1, "io": "pread", "model": "m"})");
  EXPECT_EQ(fh::run_key("flea", a), fh::run_key("flea", b));
  EXPECT_NE(fh::run_key("flea", a), fh::run_key("flea", fh::Json::parse(R"({"model": "m", "io": "mmap", "prefetch": 1})")));
  EXPECT_NE(fh::run_key("flea", a), fh::run_key("load-then-compute", a));
}

TEST(HarnessSweep, ExplicitPointsInheritAndExpandRemainingLists) {
  auto runs = expand("model: m.gguf\nthreads: [1, 2]\npoints:\n  - {residency: full}\n  - {residency: transient, threads: 4}\n");
  ASSERT_EQ(runs.size(), 3u);
  EXPECT_EQ(runs[0].point["residency"], "full");
  EXPECT_EQ(runs[0].point["threads"], 1);
  EXPECT_EQ(runs[1].point["threads"], 2);
  EXPECT_EQ(runs[2].point["residency"], "transient");
  EXPECT_EQ(runs[2].point["threads"], 4);
}

TEST(HarnessSweep, OrderedToReuseModelsAndDeduplicated) {
  auto runs = expand("points:\n  - {model: a.gguf, io: pread}\n  - {model: b.gguf, io: pread}\n"
                     "  - {model: a.gguf, io: mmap}\n  - {model: a.gguf, io: pread}\n");
  ASSERT_EQ(runs.size(), 3u);  // the repeated point runs once
  EXPECT_EQ(runs[0].point["model"], "a.gguf");
  EXPECT_EQ(runs[1].point["model"], "a.gguf");
  EXPECT_EQ(runs[1].point["io"], "mmap");
  EXPECT_EQ(runs[2].point["model"], "b.gguf");
}

TEST(HarnessSweep, BaselinesFollowTheRunsTheyServe) {
  auto runs = expand("model: m.gguf\nprefetch: [1, 2]\nbaselines:\n  - {engine: load-then-compute}\n  - {engine: llama-bench}\n");
  // flea p1, ltc, llama-bench, flea p2 (ltc point identical → shared; llama-bench shared).
  ASSERT_EQ(runs.size(), 4u);
  EXPECT_EQ(runs[0].engine, "flea");
  EXPECT_EQ(runs[1].engine, "load-then-compute");
  EXPECT_EQ(runs[1].point["prefetch"], 0);
  EXPECT_EQ(runs[2].engine, "llama-bench");
  EXPECT_FALSE(runs[2].point.contains("io"));
  EXPECT_EQ(runs[3].engine, "flea");
  EXPECT_EQ(runs[1].serves, (std::vector<std::string>{"r0001", "r0004"}));
  EXPECT_EQ(runs[2].serves, (std::vector<std::string>{"r0001", "r0004"}));
}

// synth:<shape>:<type>[:seed][:skew=S]: seed as a bare field or seed=N, skew=S for an expert skew
// (flea synth --expert-skew), part of the cache file name so differently skewed files do not collide.
TEST(HarnessSweep, SynthSpecTakesAnExpertSkew) {
  auto plain = fh::resolve_model("synth:mixtral-8x7b:Q4_K_M", "/s", "", "/c");
  ASSERT_TRUE(plain.ok()) << plain.status().to_string();
  EXPECT_EQ(plain->expert_skew, 0.0);
  EXPECT_EQ(plain->path, "/c/synth-mixtral-8x7b-Q4_K_M-s0.gguf");
  EXPECT_EQ(fh::synth_args(*plain), (std::vector<std::string>{"synth", "--shape", "mixtral-8x7b", "--type", "Q4_K_M",
                                                              "--seed", "0"}));
  for (const char* spec : {"synth:mixtral-8x7b:Q4_K_M:seed=3:skew=1.0", "synth:mixtral-8x7b:Q4_K_M:3:skew=1",
                           "synth:mixtral-8x7b:Q4_K_M:skew=1:seed=3"}) {
    SCOPED_TRACE(spec);
    auto m = fh::resolve_model(spec, "/s", "", "/c");
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    EXPECT_EQ(m->seed, 3u);
    EXPECT_EQ(m->expert_skew, 1.0);
    EXPECT_EQ(m->path, "/c/synth-mixtral-8x7b-Q4_K_M-s3-skew1.gguf");
    EXPECT_EQ(fh::synth_args(*m), (std::vector<std::string>{"synth", "--shape", "mixtral-8x7b", "--type", "Q4_K_M",
                                                            "--seed", "3", "--expert-skew", "1"}));
  }
  auto half = fh::resolve_model("synth:moe-tiny:Q8_0:skew=0.5", "/s", "", "/c");
  ASSERT_TRUE(half.ok());
  EXPECT_EQ(half->path, "/c/synth-moe-tiny-Q8_0-s0-skew0.5.gguf");
  // skew=0 is the unskewed file: same name as without the field.
  auto zero = fh::resolve_model("synth:moe-tiny:Q8_0:skew=0", "/s", "", "/c");
  ASSERT_TRUE(zero.ok());
  EXPECT_EQ(zero->path, "/c/synth-moe-tiny-Q8_0-s0.gguf");
  for (const char* bad : {"synth:moe-tiny:Q8_0:skew=-1", "synth:moe-tiny:Q8_0:skew=x", "synth:moe-tiny:Q8_0:skew=",
                          "synth:moe-tiny:Q8_0:skew=1:skew=2", "synth:moe-tiny:Q8_0:1:seed=2",
                          "synth:moe-tiny:Q8_0:skew=1:2", "synth:moe-tiny:Q8_0:skwe=1",
                          "synth:moe-tiny:Q8_0:1:skew=1:x", "synth:tiny:Q8_0:skew=1"}) {
    auto m = fh::resolve_model(bad, "/s", "", "/c");
    EXPECT_FALSE(m.ok()) << bad;
  }
  auto dense = fh::resolve_model("synth:tiny:Q8_0:skew=1", "/s", "", "/c");
  EXPECT_NE(dense.status().message().find("mixture-of-experts"), std::string::npos) << dense.status().message();
}

TEST(HarnessSweep, SynthAndReferenceModels) {
  auto runs = expand("model: synth:tiny:Q4_K_M:7\n");
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_TRUE(runs[0].model.synth);
  EXPECT_EQ(runs[0].model.path, "/cache/synth-tiny-Q4_K_M-s7.gguf");
  EXPECT_FALSE(fh::resolve_model("synth:tiny:Q4K", "/s", "", "/c").ok());
  EXPECT_FALSE(fh::resolve_model("synth:tiny", "/s", "", "/c").ok());
  // The shapes and low-bit types of flea synth (llama3-70b with llama.cpp's Q2_K mix, ...).
  for (const char* spec : {"synth:llama3-70b:Q2_K", "synth:qwen2.5-7b:IQ4_XS", "synth:1b:Q3_K_S"}) {
    auto m = fh::resolve_model(spec, "/s", "", "/c");
    ASSERT_TRUE(m.ok()) << spec << ": " << m.status().to_string();
    EXPECT_TRUE(m->synth);
  }
  fh::SweepOptions o;
  o.reference_dir = "/ref";
  o.reference_models = {"pub-F16.gguf", "pub-Q4_0.gguf"};
  auto ref = expand("model: reference\nresidency: [full, transient]\n", o);
  ASSERT_EQ(ref.size(), 4u);
  EXPECT_EQ(ref[0].point["model"], "reference:pub-F16.gguf");
  EXPECT_EQ(ref[0].model.path, "/ref/pub-F16.gguf");
  EXPECT_EQ(ref[2].model.path, "/ref/pub-Q4_0.gguf");
}

TEST(HarnessSweep, EmulateCapsBudgetsAndThrottles) {
  fh::Profile p = profile(kGpuProfile);
  fh::SweepOptions o;
  o.emulate = &p;
  auto runs = expand("model: m.gguf\nvram_budget_mb: [0, 4000, 20000]\nthrottle_gb_s: [0, 1]\n", o);
  // Requests that cap to the same effective point run once: {0, 20000} → cap; 4000 stays.
  ASSERT_EQ(runs.size(), 4u);
  const int64_t cap = static_cast<int64_t>(std::floor(10e9 / 1048576.0));  // 9536 MiB
  EXPECT_EQ(fh::emulated_vram_budget_mb(p), cap);
  EXPECT_EQ(runs[0].point["vram_budget_mb"], cap);   // 0 = unlimited → the profile's VRAM
  EXPECT_EQ(runs[0].point["throttle_gb_s"], 5.0);    // the profile's storage
  EXPECT_EQ(runs[1].point["throttle_gb_s"], 1.0);    // a slower request stays
  EXPECT_EQ(runs[2].point["vram_budget_mb"], 4000);
  EXPECT_EQ(runs[0].requested_point["vram_budget_mb"], 0);
  EXPECT_EQ(runs[0].point["ram_budget_mb"], static_cast<int64_t>(std::floor(20e9 / 1048576.0)));
}

namespace {

// run_lab_harness's expansion: the sweep, then each run's memory limit.
std::vector<fh::RunSpec> expand_limited(const std::string& text, const fh::Profile* emulate = nullptr) {
  fh::SweepOptions o;
  o.emulate = emulate;
  auto runs = expand(text, o);
  fh::apply_memory_limits(&runs, emulate);
  return runs;
}

}  // namespace

TEST(HarnessSweep, MemoryLimitInThePointOnlyWhenSetAndLlamaBenchSplitByLimit) {
  auto runs = expand_limited("model: m.gguf\nmemory_limit_mb: [0, 512]\n"
                             "baselines:\n  - {engine: load-then-compute}\n  - {engine: llama-bench}\n");
  ASSERT_EQ(runs.size(), 6u);
  // No limit: no key, so such a point keeps its identity (run_key) from before the key existed.
  EXPECT_FALSE(runs[0].point.contains("memory_limit_mb"));
  EXPECT_FALSE(runs[0].requested_point.contains("memory_limit_mb"));
  EXPECT_EQ(runs[1].engine, "load-then-compute");
  EXPECT_FALSE(runs[1].point.contains("memory_limit_mb"));
  EXPECT_EQ(runs[2].engine, "llama-bench");
  EXPECT_FALSE(runs[2].point.contains("memory_limit_mb"));
  EXPECT_EQ(runs[2].serves, (std::vector<std::string>{"r0001"}));
  // 512 MiB: ours and both baselines under the same limit; llama-bench gets its own run.
  EXPECT_EQ(runs[3].engine, "flea");
  EXPECT_EQ(runs[3].point["memory_limit_mb"], 512);
  EXPECT_EQ(runs[4].point["memory_limit_mb"], 512);
  EXPECT_EQ(runs[5].engine, "llama-bench");
  EXPECT_EQ(runs[5].point["memory_limit_mb"], 512);
  EXPECT_EQ(runs[5].serves, (std::vector<std::string>{"r0004"}));
  EXPECT_EQ(fh::point_memory_limit_bytes(runs[5].point), int64_t{512} << 20);
  for (size_t i = 0; i < runs.size(); ++i) EXPECT_EQ(runs[i].id, "r000" + std::to_string(i + 1));
}

TEST(HarnessSweep, SplitLlamaBenchFollowsTheFirstRunOfItsLimit) {
  // One llama-bench point (it has no io axis) served four flea runs; by limit it is two runs.
  auto runs = expand_limited("model: m.gguf\nio: [pread, odirect]\nmemory_limit_mb: [0, 256]\n"
                             "baselines:\n  - {engine: llama-bench}\n");
  ASSERT_EQ(runs.size(), 6u);
  EXPECT_EQ(runs[0].engine, "flea");  // pread, none
  EXPECT_EQ(runs[1].engine, "llama-bench");
  EXPECT_EQ(runs[1].serves, (std::vector<std::string>{"r0001", "r0005"}));
  EXPECT_EQ(runs[2].engine, "flea");  // pread, 256
  EXPECT_EQ(runs[3].engine, "llama-bench");
  EXPECT_EQ(runs[3].point["memory_limit_mb"], 256);
  EXPECT_EQ(runs[3].serves, (std::vector<std::string>{"r0003", "r0006"}));
  EXPECT_EQ(runs[4].point["io"], "odirect");
  EXPECT_FALSE(runs[4].point.contains("memory_limit_mb"));
  EXPECT_EQ(runs[5].point["memory_limit_mb"], 256);
}

TEST(HarnessSweep, EmulateMemoryLimitIsTheProfilesRamByDefaultAndCapsTheScenarios) {
  fh::Profile p = profile(kCpuProfile);  // ram_gb 8
  const int64_t ram_mb = static_cast<int64_t>(std::floor(8e9 / 1048576.0));  // 7629 MiB
  auto runs = expand_limited("model: m.gguf\nmemory_limit_mb: [0, 4096, 16384]\nbaselines:\n  - {engine: llama-bench}\n", &p);
  // 0 (none) and 16384 both become the profile's RAM: that point runs once.
  ASSERT_EQ(runs.size(), 4u);
  EXPECT_EQ(runs[0].point["memory_limit_mb"], ram_mb);
  EXPECT_EQ(runs[0].requested_point.count("memory_limit_mb"), 0u);
  EXPECT_EQ(runs[1].engine, "llama-bench");
  EXPECT_EQ(runs[1].point["memory_limit_mb"], ram_mb);
  EXPECT_EQ(runs[1].serves, (std::vector<std::string>{"r0001"}));
  EXPECT_EQ(runs[2].point["memory_limit_mb"], 4096);  // below the profile: kept
  EXPECT_EQ(runs[3].point["memory_limit_mb"], 4096);
  EXPECT_EQ(runs[3].serves, (std::vector<std::string>{"r0003"}));
  // Without emulate the profile plays no part.
  EXPECT_FALSE(expand_limited("model: m.gguf\n")[0].point.contains("memory_limit_mb"));
}

TEST(HarnessSweep, MemoryLimitIsRequiredOnlyBelowThisMachinesRam) {
  const int64_t gib = int64_t{1} << 30;
  EXPECT_TRUE(fh::memory_limit_required(8 * gib, 24 * gib));    // a smaller machine: must be enforced
  EXPECT_FALSE(fh::memory_limit_required(256 * gib, 24 * gib)); // a bigger one: nothing to take away
  EXPECT_FALSE(fh::memory_limit_required(24 * gib, 24 * gib));
  EXPECT_TRUE(fh::memory_limit_required(256 * gib, 0));         // RAM unknown: enforce
  EXPECT_FALSE(fh::memory_limit_required(0, 24 * gib));         // no limit
}

TEST(HarnessProfile, PcieRates) {
  EXPECT_DOUBLE_EQ(fh::pcie_raw_gb_s(4, 16), 1.969 * 16);
  EXPECT_DOUBLE_EQ(fh::pcie_raw_gb_s(4, 8), 1.969 * 8);
  EXPECT_DOUBLE_EQ(fh::pcie_raw_gb_s(5, 16), 3.938 * 16);
  EXPECT_EQ(fh::pcie_raw_gb_s(9, 16), 0);
}

TEST(HarnessProfile, PredictGpuStreaming) {
  fh::Profile p = profile(kGpuProfile);
  fh::PredictInput in;
  in.model_bytes = 30e9;
  in.backend = "cuda";
  in.residency = "auto";
  in.io = "odirect";
  in.prefetch = 1;
  // VRAM 10 GB → 20 GB streamed; O_DIRECT: no page cache, all 20 GB from storage at 5 GB/s = 4000 ms;
  // PCIe 20/31.504 = 634.8 ms; compute 30/500 = 60 ms → io bound, max = 4000 ms.
  fh::Prediction r = fh::predict(p, in);
  EXPECT_DOUBLE_EQ(r.streamed_bytes, 20e9);
  EXPECT_DOUBLE_EQ(r.storage_bytes, 20e9);
  EXPECT_NEAR(r.ms_per_token, 4000.0, 1e-9);
  EXPECT_EQ(r.bound, "io");
  // Floor: host RAM (20 GB) may cache the 20 GB beyond VRAM → storage 0; PCIe 20 GB binds.
  EXPECT_NEAR(r.floor_ms_per_token, 20.0 / (1.969 * 16) * 1e3, 1e-9);
  EXPECT_EQ(r.floor_link, "pcie");
  // prefetch 0 serialises: storage + PCIe + compute.
  in.prefetch = 0;
  EXPECT_NEAR(fh::predict(p, in).ms_per_token, 4000.0 + 20.0 / (1.969 * 16) * 1e3 + 60.0, 1e-9);
  // Buffered reads with the streamed set fitting in RAM: nothing from storage.
  in.prefetch = 1;
  in.io = "pread";
  fh::Prediction b = fh::predict(p, in);
  EXPECT_EQ(b.storage_bytes, 0);
  EXPECT_NEAR(b.ms_per_token, 20.0 / (1.969 * 16) * 1e3, 1e-9);
}

TEST(HarnessProfile, PredictCpuAndCacheFloor) {
  fh::Profile p = profile(kCpuProfile);
  fh::PredictInput in;
  in.model_bytes = 1e9;
  in.residency = "full";
  fh::Prediction r = fh::predict(p, in);
  EXPECT_NEAR(r.ms_per_token, 100.0, 1e-9);  // 1 GB / 10 GB/s
  EXPECT_EQ(r.bound, "compute");
  EXPECT_NEAR(r.floor_ms_per_token, 100.0, 1e-9);
  EXPECT_EQ(r.floor_link, "host_memory");
  in.model_bytes = 1e6;
  in.cache_bytes = 32e6;  // fits in the CPU cache: no DRAM floor claimed
  EXPECT_EQ(fh::predict(p, in).floor_ms_per_token, 0);
  // Larger than RAM, transient: 12 GB per token from storage (2 GB/s) = 6000 ms; floor only what
  // RAM cannot hold: (12 - 8) / 2 = 2000 ms.
  in.model_bytes = 12e9;
  in.cache_bytes = 0;
  in.residency = "transient";
  fh::Prediction big = fh::predict(p, in);
  EXPECT_NEAR(big.ms_per_token, 6000.0, 1e-9);
  EXPECT_NEAR(big.floor_ms_per_token, 2000.0, 1e-9);
  EXPECT_EQ(big.floor_link, "storage");
}

TEST(HarnessProfile, CapBudget) {
  EXPECT_EQ(fh::cap_budget_mb(0, 100), 100);
  EXPECT_EQ(fh::cap_budget_mb(50, 100), 50);
  EXPECT_EQ(fh::cap_budget_mb(500, 100), 100);
  EXPECT_EQ(fh::cap_budget_mb(500, 0), 500);
}

TEST(HarnessClaims, VerdictsWithExactArithmetic) {
  auto claim = [](double gb, double ms) {
    return fh::Json{{"name", "c"}, {"model_gb", gb}, {"profile", "t"}, {"claimed_ms_per_token", ms}, {"host_cache", true}};
  };
  fh::Profile p = profile(kGpuProfile);
  const double pcie = 1.969 * 16;
  // 30 GB: 20 GB streamed over PCIe (floor 634.8 ms), storage 0 (RAM caches 20 GB).
  fh::ClaimVerdict v = fh::evaluate_claim(claim(30, 300), p);
  EXPECT_NEAR(v.floor_ms, 20.0 / pcie * 1e3, 1e-9);
  EXPECT_EQ(v.verdict, "impossible");
  EXPECT_NE(v.arithmetic.find("PCIe 4.0 x16: 20.00 GB / 31.50 GB/s = 634.8 ms"), std::string::npos) << v.arithmetic;
  EXPECT_NE(v.arithmetic.find("IMPOSSIBLE"), std::string::npos);
  EXPECT_EQ(fh::evaluate_claim(claim(30, 700), p).verdict, "tight");  // < 1.25 × 634.8
  EXPECT_EQ(fh::evaluate_claim(claim(30, 800), p).verdict, "plausible");
  // 45 GB: 35 streamed, RAM caches 20 → 15 GB from storage at 5 GB/s = 3000 ms binds.
  fh::ClaimVerdict s = fh::evaluate_claim(claim(45, 2000), p);
  EXPECT_NEAR(s.storage_gb, 15.0, 1e-12);
  EXPECT_NEAR(s.floor_ms, 3000.0, 1e-9);
  EXPECT_EQ(s.verdict, "impossible");
  // Without the host cache every streamed byte comes from storage: 35 / 5 = 7000 ms.
  fh::Json nc = claim(45, 2000);
  nc["host_cache"] = false;
  EXPECT_NEAR(fh::evaluate_claim(nc, p).floor_ms, 7000.0, 1e-9);
  // Fits in VRAM: GPU memory bandwidth binds, 8 GB / 500 GB/s = 16 ms.
  EXPECT_NEAR(fh::evaluate_claim(claim(8, 100), p).floor_ms, 16.0, 1e-9);
}

TEST(HarnessClaims, ShippedClaimsMatchTheirExpectations) {
  auto s = fh::load_scenario(flea::test::source_dir() + "/scenarios/claims.yaml");
  ASSERT_TRUE(s.ok()) << s.status().message();
  int impossible = 0;
  for (const auto& c : s->settings["claims"]) {
    auto p = fh::load_profile(c["profile"].get<std::string>(), flea::test::source_dir() + "/hardware_profiles");
    ASSERT_TRUE(p.ok()) << p.status().message();
    fh::ClaimVerdict v = fh::evaluate_claim(c, *p);
    EXPECT_TRUE(v.expect_ok) << v.name << ": " << v.arithmetic;
    impossible += v.verdict == "impossible";
  }
  EXPECT_GE(impossible, 2);
}

TEST(HarnessProfile, ShippedProfilesParse) {
  for (const char* n : {"rtx4060-990pro", "rtx4090-pm1735", "a6000-raid0", "h100-node", "ci-cpu"}) {
    auto p = fh::load_profile(n, flea::test::source_dir() + "/hardware_profiles");
    ASSERT_TRUE(p.ok()) << n << ": " << p.status().message();
    EXPECT_EQ(p->name, n);
    EXPECT_GT(p->storage_gb_s, 0);
  }
  auto bad = fh::parse_profile("p.yaml", "name: x\nstorage: {device: d, read_gb_s: 1}\nram_gb: 8\nram_bw_gb_s: 10\nvram_gb: 8\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "p.yaml:5:1: unknown key 'vram_gb' (did you mean 'ram_gb'?)");
  EXPECT_FALSE(fh::load_profile("no-such-profile", flea::test::source_dir() + "/hardware_profiles").ok());
}

TEST(HarnessStats, SummaryExactOnKnownSamples) {
  fh::Summary s = fh::summarize({5, 1, 4, 2, 3});
  EXPECT_EQ(s.n, 5);
  EXPECT_DOUBLE_EQ(s.median, 3);
  EXPECT_DOUBLE_EQ(s.min, 1);
  EXPECT_DOUBLE_EQ(s.max, 5);
  EXPECT_DOUBLE_EQ(s.p95, 4.8);   // rank 0.95 × 4 = 3.8 → 4 + 0.8 × (5 − 4)
  EXPECT_DOUBLE_EQ(s.p99, 4.96);
  EXPECT_DOUBLE_EQ(s.mad, 1);     // |x − 3| = {2,1,0,1,2} → median 1
  EXPECT_DOUBLE_EQ(s.mean, 3);
  fh::Summary e = fh::summarize({10, 20, 30, 40});
  EXPECT_DOUBLE_EQ(e.median, 25);
  EXPECT_DOUBLE_EQ(e.mad, 10);    // {15,5,5,15} → 10
  EXPECT_EQ(fh::summarize({}).n, 0);
  fh::Summary one = fh::summarize({7});
  EXPECT_DOUBLE_EQ(one.p99, 7);
  EXPECT_DOUBLE_EQ(one.mad, 0);
}

TEST(HarnessStats, LogitComparison) {
  // Two rows of 3 logits.
  std::vector<float> ref = {1, 2, 3, 3, 2, 1};
  auto same = fh::compare_logits(ref, ref, 3);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->nmse, 0);
  EXPECT_EQ(same->max_abs, 0);
  EXPECT_EQ(same->top1, 1);
  EXPECT_NEAR(same->kl, 0, 1e-15);
  std::vector<float> got = {1, 2, 3, 3, 2, 4};  // row 1 argmax moves; one element off by 3
  auto c = fh::compare_logits(got, ref, 3);
  ASSERT_TRUE(c.ok());
  EXPECT_NEAR(c->nmse, 9.0 / 28.0, 1e-12);
  EXPECT_EQ(c->max_abs, 3);
  EXPECT_EQ(c->top1, 0.5);
  // KL(p‖q) of row 1 with p = softmax(3,2,1), q = softmax(3,2,4), averaged over 2 rows.
  const double zp = std::exp(3) + std::exp(2) + std::exp(1), zq = std::exp(3) + std::exp(2) + std::exp(4);
  double kl = 0;
  const double lp[3] = {3 - std::log(zp), 2 - std::log(zp), 1 - std::log(zp)};
  const double lq[3] = {3 - std::log(zq), 2 - std::log(zq), 4 - std::log(zq)};
  for (int i = 0; i < 3; ++i) kl += std::exp(lp[i]) * (lp[i] - lq[i]);
  EXPECT_NEAR(c->kl, kl / 2, 1e-12);
  EXPECT_FALSE(fh::compare_logits({1, 2}, ref, 3).ok());
  EXPECT_DOUBLE_EQ(fh::nmse_tolerance("Q8_0"), 2e-4);
  EXPECT_DOUBLE_EQ(fh::nmse_tolerance("Q4_K_M"), 2e-3);
}

TEST(HarnessStats, Sha256KnownVectors) {
  EXPECT_EQ(fh::sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(fh::sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(fh::sha256_hex(std::string(1000, 'a')).substr(0, 16), "41edece42d63e8d9");
  // FIPS 180-4's two-block message (padding spills into a second block).
  EXPECT_EQ(fh::sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

// The quickstart's pread run read at 436% of fio: page-cache hits, which the record must say.
TEST(HarnessRecord, BufferedReadAboveFioIsExplainedOnTheRecord) {
  auto runs = expand("model: a.gguf\nio: [pread, mmap, odirect]\n");
  ASSERT_EQ(runs.size(), 3u);
  fh::RunEnv env;
  env.settings = fh::Json::object();
  env.ceilings = {{"fio", fh::Json::array()}};
  for (const char* io : {"pread", "mmap", "odirect"}) {
    env.ceilings["fio"].push_back({{"path", runs[0].model.path}, {"io", io}, {"read_gb_s", 1.0}});
  }
  auto warnings_of = [&](const fh::RunSpec& r, double read_gb_s) {
    const fh::Json rec = fh::record_from_bench(r, {{"read_gb_s", read_gb_s}}, fh::ChildResult{}, env);
    EXPECT_DOUBLE_EQ(rec["io"]["fraction_of_fio"].get<double>(), read_gb_s);
    return rec["warnings"];
  };
  for (const auto& r : runs) {
    const std::string io = r.point["io"];
    const fh::Json w = warnings_of(r, 4.36);
    if (io == "odirect") {
      EXPECT_EQ(w, fh::Json::array()) << "O_DIRECT cannot hit the page cache: above fio is fio's problem, not this note";
      continue;
    }
    ASSERT_EQ(w.size(), 1u) << io << ": " << w.dump();
    const std::string text = w[0];
    EXPECT_NE(text.find("436% of fio's " + io + " figure"), std::string::npos) << text;
    EXPECT_NE(text.find("served from the page cache"), std::string::npos) << text;
    EXPECT_EQ(warnings_of(r, 0.9), fh::Json::array()) << io << ": below fio needs no note";
  }
}
