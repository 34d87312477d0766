// Sharded sweeps (--shard I/N, --results) and `run_lab_harness merge`: the slicing itself (pure,
// on made-up costs), the slices the CLI prints for real synth model sizes, and end to end against
// tests/fixtures/harness/fake_flea.py: shards merged equal the unsharded run, and merge refuses
// or flags inputs that do not belong together.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "merge.h"
#include "shard.h"
#include "test_util.h"

using Json = nlohmann::ordered_json;  // the harness keeps key order; --resume matches points by their text
namespace fh = flea::harness;

namespace {

using flea::test::fake_flea;
using flea::test::harness_bin;
using flea::test::read_text;
using flea::test::schema_errors;
using flea::test::write_text;

std::string real_flea() { return flea::test::bin_dir() + "/flea"; }

int count_lines(const std::string& path, const std::string& needle) {
  std::istringstream in(read_text(path));
  std::string line;
  int n = 0;
  while (std::getline(in, line)) n += line.find(needle) != std::string::npos;
  return n;
}

struct Cmd {
  int rc;
  std::string out;
};
Cmd sh(const std::string& cmd) {
  Cmd r;
  r.rc = flea::test::run_command(cmd + " 2>&1", &r.out);
  return r;
}


// Cmd ids a --dry-run printed, in order.
std::vector<std::string> dry_run_ids(const std::string& out) {
  std::vector<std::string> ids;
  static const std::regex line("^  (r[0-9]+) ");
  std::istringstream in(out);
  std::string l;
  while (std::getline(in, l)) {
    std::smatch m;
    if (std::regex_search(l, m, line)) ids.push_back(m[1]);
  }
  return ids;
}

// Seconds in "predicted ~m:ss" of the `shard I/N: ...` line; -1 when absent.
double shard_line_seconds(const std::string& out, int i, int n) {
  const std::regex re("shard " + std::to_string(i) + "/" + std::to_string(n) + ": ([0-9]+) of ([0-9]+) runs, predicted ~([0-9:]+)");
  std::smatch m;
  if (!std::regex_search(out, m, re)) return -1;
  double s = 0;
  std::stringstream parts(m[3].str());
  std::string p;
  while (std::getline(parts, p, ':')) s = s * 60 + std::stod(p);
  return s;
}

fh::RunSpec spec(const std::string& id, const std::string& model) {
  fh::RunSpec r;
  r.id = id;
  r.model.path = model;
  r.model.spec = model;
  r.point = {{"model", model}};
  return r;
}
std::string rid(int i) {
  char b[16];
  std::snprintf(b, sizeof(b), "r%04d", i);
  return b;
}

void expect_partition(const fh::ShardPlan& plan, size_t n_runs) {
  std::vector<int> seen(n_runs, 0);
  for (const auto& s : plan.runs) {
    EXPECT_TRUE(std::is_sorted(s.begin(), s.end()));
    for (size_t i : s) ++seen.at(i);
  }
  for (size_t i = 0; i < n_runs; ++i) EXPECT_EQ(seen[i], 1) << "run " << i;
}

}  // namespace

// ---- the planner on made-up costs ------------------------------------------------------------

TEST(ShardPlan, OneModelSweepIsCutIntoBalancedContiguousChunks) {
  std::vector<fh::RunSpec> runs;
  std::vector<int64_t> ms;
  for (int i = 1; i <= 12; ++i) {
    runs.push_back(spec(rid(i), "m"));
    ms.push_back(i % 3 == 0 ? 400 : 100 * (i % 3));  // 100, 200, 400 repeating: total 2800
  }
  const fh::ShardPlan plan = fh::plan_shards(runs, ms, 4);
  expect_partition(plan, runs.size());
  for (const auto& s : plan.runs) {
    ASSERT_FALSE(s.empty());
    EXPECT_EQ(s.back() - s.front() + 1, s.size()) << "chunks of one model are contiguous";
  }
  const auto [lo, hi] = std::minmax_element(plan.predicted_ms.begin(), plan.predicted_ms.end());
  EXPECT_EQ(*lo, 700);  // each chunk is exactly one 100+200+400 triple: the cuts land on 700, 1400, 2100
  EXPECT_EQ(*hi, 700);
}

TEST(ShardPlan, ModelsStayTogetherWhenNoneExceedsAShare) {
  std::vector<fh::RunSpec> runs;
  std::vector<int64_t> ms;
  const char* models[] = {"a", "b", "c", "d"};
  int n = 0;
  for (const char* m : models) {
    for (int k = 0; k < 3; ++k) {
      runs.push_back(spec(rid(++n), m));
      ms.push_back(100 + 10 * n);
    }
  }
  const fh::ShardPlan plan = fh::plan_shards(runs, ms, 2);
  expect_partition(plan, runs.size());
  std::map<std::string, std::set<size_t>> shards_of_model;
  for (size_t s = 0; s < plan.runs.size(); ++s) {
    for (size_t i : plan.runs[s]) shards_of_model[runs[i].model.path].insert(s);
  }
  for (const auto& [m, shards] : shards_of_model) EXPECT_EQ(shards.size(), 1u) << "model " << m << " was split";
  // Longest first onto the least loaded: d (630) → 0, c (540) → 1, b (450) → 1, a (360) → 0.
  EXPECT_EQ(plan.predicted_ms[0], 630 + 360);
  EXPECT_EQ(plan.predicted_ms[1], 540 + 450);
}

TEST(ShardPlan, BigGroupBesideASmallOneIsCutAtTheShare) {
  // Model a: 10 runs of 100 ms, model b: 2 runs. Halves of 600: a → 600 | 400, then b joins the 400.
  std::vector<fh::RunSpec> runs;
  for (int i = 1; i <= 12; ++i) runs.push_back(spec(rid(i), i <= 10 ? "a" : "b"));
  const fh::ShardPlan plan = fh::plan_shards(runs, std::vector<int64_t>(12, 100), 2);
  expect_partition(plan, runs.size());
  EXPECT_EQ(plan.predicted_ms, (std::vector<int64_t>{600, 600}));
  EXPECT_EQ(plan.runs[1], (std::vector<size_t>{6, 7, 8, 9, 10, 11}));
}

TEST(ShardPlan, BaselineStaysWithTheRunsItServesAndEmptyShardsAreAllowed) {
  // One model: flea runs r1..r6, a baseline r7 serving r1, r3 and r5; cutting in 3 must keep them together.
  std::vector<fh::RunSpec> runs;
  for (int i = 1; i <= 7; ++i) runs.push_back(spec(rid(i), "m"));
  runs[6].engine = "llama-bench";
  runs[6].serves = {rid(1), rid(3), rid(5)};
  const std::vector<int64_t> ms(7, 100);
  const fh::ShardPlan plan = fh::plan_shards(runs, ms, 3);
  expect_partition(plan, runs.size());
  for (const auto& s : plan.runs) {
    const std::set<size_t> in(s.begin(), s.end());
    if (in.count(6)) {
      EXPECT_TRUE(in.count(0) && in.count(2) && in.count(4));
    }
  }
  // More shards than runs: the extra shards are empty, never a run twice.
  const fh::ShardPlan many = fh::plan_shards({spec("r0001", "m"), spec("r0002", "n")}, {50, 60}, 5);
  expect_partition(many, 2);
  int empty = 0;
  for (const auto& s : many.runs) empty += s.empty();
  EXPECT_EQ(empty, 3);
  // Deterministic: the same input gives the same plan.
  EXPECT_EQ(fh::plan_shards(runs, ms, 3).runs, plan.runs);
}

TEST(ShardPlan, ShardSpecParsing) {
  EXPECT_TRUE(fh::parse_shard_spec("1/1").ok());
  auto s = fh::parse_shard_spec("3/8");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->index, 3);
  EXPECT_EQ(s->count, 8);
  for (const char* bad : {"0/4", "5/4", "x/y", "3", "1/0", "/4", "2/", "-1/4", "1/4/2", " 1/4"}) {
    EXPECT_FALSE(fh::parse_shard_spec(bad).ok()) << bad;
  }
}

// ---- the CLI: slices printed by --dry-run for real synth model sizes ----------------------------

class ShardCli : public ::testing::Test {
 protected:
  void SetUp() override {
    log_ = dir_.file("engine.log");
    env_ = "FAKE_FLEA_LOG=" + log_ + " FLEA_CACHE_DIR=" + dir_.file("cache");
  }
  std::string scenario(const std::string& name, const std::string& body) {
    const std::string p = dir_.file(name + ".yaml");
    write_text(p, "name: " + name + "\nthreads: 1\nwarmup: 0\nceilings: {fio: false, memory: false}\n" + body);
    return p;
  }
  // The harness against the fake engine.
  Cmd harness_fake(const std::string& args, const std::string& extra_env = "") {
    return sh(env_ + " " + extra_env + " " + harness_bin() + " --flea " + fake_flea() + " -q " + args);
  }
  Cmd merge(const std::string& args) { return sh(harness_bin() + " merge " + args); }
  flea::test::TempDir dir_;
  std::string log_, env_;
};

TEST_F(ShardCli, DryRunSlicesPartitionTheSweepDeterministically) {
  // Three models of different planned sizes (synth --dry-run of the real engine; nothing generated).
  const std::string s = scenario("three", "model: [synth:tiny:Q4_K_M, synth:tiny:Q8_0, synth:tiny:F16]\n"
                                           "gen: 4\nreps: 1\nresidency: [full, transient]\nprefetch: [0, 1]\n");
  const std::string base = env_ + " " + harness_bin() + " --flea " + real_flea() + " --config " + s + " --dry-run";
  Cmd all = sh(base);
  ASSERT_EQ(all.rc, 0) << all.out;
  const std::vector<std::string> every = dry_run_ids(all.out);
  ASSERT_EQ(every.size(), 12u) << all.out;
  std::map<std::string, std::string> model_of;  // id → model, from the unsharded listing
  for (std::istringstream in(all.out); !in.eof();) {
    std::string l;
    std::getline(in, l);
    std::smatch m;
    if (std::regex_search(l, m, std::regex("^  (r[0-9]+) flea model=(\\S+)"))) model_of[m[1]] = m[2];
  }
  ASSERT_EQ(model_of.size(), 12u);
  for (int n = 1; n <= 5; ++n) {
    std::multiset<std::string> covered;
    for (int i = 1; i <= n; ++i) {
      const std::string arg = " --shard " + std::to_string(i) + "/" + std::to_string(n);
      Cmd r = sh(base + arg);
      ASSERT_EQ(r.rc, 0) << r.out;
      const std::vector<std::string> ids = dry_run_ids(r.out);
      EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end())) << "a shard keeps the sweep's order";
      EXPECT_GE(shard_line_seconds(r.out, i, n), 0) << r.out;
      EXPECT_NE(r.out.find("shard " + std::to_string(i) + "/" + std::to_string(n) + ": " + std::to_string(ids.size()) +
                           " of 12 runs, predicted ~"), std::string::npos) << r.out;
      covered.insert(ids.begin(), ids.end());
      if (n == 3) {  // the same slice on a second invocation
        EXPECT_EQ(dry_run_ids(sh(base + arg).out), ids);
      }
      if (n == 2) {  // no model's share exceeds half: every model's runs stay in one shard
        std::set<std::string> models_here;
        for (const auto& id : ids) models_here.insert(model_of[id]);
        for (const auto& m : models_here) {
          int count_here = 0;
          for (const auto& id : ids) count_here += model_of[id] == m;
          EXPECT_EQ(count_here, 4) << m << " split across shards of " << n;
        }
      }
    }
    EXPECT_EQ(covered, std::multiset<std::string>(every.begin(), every.end())) << "N=" << n;
  }
}

TEST_F(ShardCli, OneModelSweepBalancesByPredictedDuration) {
  // 12 points of one 4 GB model (planning machine: ~4 s load, ~0.4 s/token): per prefetch depth
  // runs of ~6, ~8, ~11 and ~18 s, ~130 s in all, cut into 4 contiguous slices.
  const std::string s = scenario("one", "model: synth:7b:Q4_K_M\nreps: 1\ngen: [4, 8, 16, 32]\nprefetch: [0, 1, 2]\n");
  std::vector<double> t;
  double sum = 0;
  for (int i = 1; i <= 4; ++i) {
    Cmd r = sh(env_ + " " + harness_bin() + " --flea " + real_flea() + " --config " + s + " --dry-run --shard " +
               std::to_string(i) + "/4");
    ASSERT_EQ(r.rc, 0) << r.out;
    t.push_back(shard_line_seconds(r.out, i, 4));
    ASSERT_GT(t.back(), 0) << r.out;
    EXPECT_EQ(dry_run_ids(r.out).size(), 3u) << r.out;
    sum += t.back();
  }
  const auto [lo, hi] = std::minmax_element(t.begin(), t.end());
  // Stated bounds: the longest shard within 15% of a quarter, the shortest at least 2/3 of the
  // longest (the best contiguous cut is ~36/32/32/25 s; cutting at multiples of the quarter
  // alone gives 43/32/29/25).
  EXPECT_LE(*hi, 1.15 * sum / 4) << t[0] << " " << t[1] << " " << t[2] << " " << t[3];
  EXPECT_LE(*hi / *lo, 1.5) << t[0] << " " << t[1] << " " << t[2] << " " << t[3];
}

TEST_F(ShardCli, BadShardSpecsExitTwo) {
  const std::string s = scenario("bad", "model: synth:tiny:Q4_K_M\ngen: 2\nreps: 1\n");
  for (const char* bad : {"0/4", "5/4", "x/y"}) {
    Cmd r = harness_fake("--config " + s + " --dry-run --shard " + bad);
    EXPECT_EQ(r.rc, 2) << bad << ": " << r.out;
    EXPECT_NE(r.out.find("--shard '" + std::string(bad) + "': expected I/N with 1 <= I <= N"), std::string::npos) << r.out;
  }
  Cmd help = merge("--help");
  EXPECT_EQ(help.rc, 0) << help.out;
  EXPECT_NE(help.out.find("--allow-mixed-revisions"), std::string::npos) << help.out;
}

// ---- end to end: shards, merge, resume ----------------------------------------------------------

TEST_F(ShardCli, ShardsMergedEqualTheUnshardedRunAndMergeChecksItsInputs) {
  // 2 models × 2 residencies × 3 prefetch depths, each with a load-then-compute baseline that
  // serves the 3 depths: 16 runs.
  const std::string s = scenario("e2e", "model: [synth:tiny:Q4_K_M, synth:tiny:Q8_0]\ngen: 2\nprompt: 0\nreps: 2\n"
                                        "residency: [full, transient]\nprefetch: [0, 1, 2]\n"
                                        "baselines:\n  - {engine: load-then-compute}\n");
  const std::string whole = dir_.file("whole/all.json");
  Cmd r = harness_fake("--config " + s + " --results " + whole);
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(access(dir_.file("whole/all.trace.json").c_str(), F_OK), 0) << "trace beside --results";
  const Json unsharded = Json::parse(read_text(whole));
  ASSERT_EQ(unsharded["runs"].size(), 16u);
  EXPECT_FALSE(unsharded["context"].contains("shard"));

  std::vector<std::string> files;
  std::set<std::string> fingerprints;
  for (int i = 1; i <= 3; ++i) {
    files.push_back(dir_.file("shards/s" + std::to_string(i) + ".json"));
    r = harness_fake("--config " + s + " --shard " + std::to_string(i) + "/3 --results " + files.back());
    ASSERT_EQ(r.rc, 0) << r.out;
    const Json j = Json::parse(read_text(files.back()));
    const Json& sh_ctx = j["context"]["shard"];
    EXPECT_EQ(sh_ctx["index"], i);
    EXPECT_EQ(sh_ctx["count"], 3);
    EXPECT_EQ(sh_ctx["n_runs_total"], 16);
    EXPECT_EQ(sh_ctx["run_ids"].size(), j["runs"].size());
    EXPECT_TRUE(sh_ctx["predicted_s"].is_number());
    EXPECT_EQ(j["status"]["complete"], true);
    fingerprints.insert(sh_ctx["sweep_fingerprint"].get<std::string>());
    const std::string errs = schema_errors(files.back());
    if (errs != "skip") {
      EXPECT_EQ(errs, "") << files.back();
    }
  }
  EXPECT_EQ(fingerprints.size(), 1u);
  const std::string all3 = files[0] + " " + files[1] + " " + files[2];

  const std::string merged_path = dir_.file("merged/m.json");
  r = merge(all3 + " --out " + merged_path);
  ASSERT_EQ(r.rc, 0) << r.out;
  const Json merged = Json::parse(read_text(merged_path));
  ASSERT_EQ(merged["runs"].size(), unsharded["runs"].size());
  for (size_t k = 0; k < merged["runs"].size(); ++k) {
    const Json& a = merged["runs"][k];
    const Json& b = unsharded["runs"][k];
    EXPECT_EQ(a["id"], b["id"]);
    EXPECT_EQ(a["point"], b["point"]) << a["id"];
    EXPECT_EQ(a["engine"], b["engine"]) << a["id"];
    EXPECT_EQ(a["status"], "ok");
    EXPECT_EQ(a.value("baseline", Json()), b.value("baseline", Json())) << a["id"] << ": baseline ratio lost across shards";
    EXPECT_TRUE(a["shard"].is_number_integer());
    EXPECT_TRUE(a["hostname"].is_string());
  }
  EXPECT_EQ(merged["status"]["complete"], true);
  EXPECT_EQ(merged["status"]["n_planned"], 16);
  EXPECT_EQ(merged["status"]["n_ok"], 16);
  const Json& mc = merged["context"];
  EXPECT_FALSE(mc.contains("shard"));
  EXPECT_NE(mc["run_id"].get<std::string>().find("e2e-merged-"), std::string::npos);
  EXPECT_EQ(mc["merged"]["present"], Json::array({1, 2, 3}));
  EXPECT_EQ(mc["merged"]["missing"], Json::array());
  EXPECT_EQ(mc["merged"]["mixed_hardware"], false);
  EXPECT_EQ(mc["merged"]["mixed_builds"], false);
  ASSERT_EQ(mc["shards"].size(), 3u);
  EXPECT_EQ(mc["shards"][1]["index"], 2);
  EXPECT_EQ(mc["shards"][1]["file"], files[1]);
  EXPECT_EQ(mc["effective"]["points"].size(), 16u);
  std::string errs = schema_errors(merged_path);
  if (errs != "skip") {
    EXPECT_EQ(errs, "") << merged_path;
  }
  // The report and the gate read it like any results file.
  const std::string src = flea::test::source_dir();
  Cmd rep = sh("/usr/bin/python3 " + src + "/report/report.py " + merged_path + " --out " + dir_.file("report"));
  EXPECT_EQ(rep.rc, 0) << rep.out;
  Cmd gate = sh("/usr/bin/python3 " + src + "/report/gate.py --baseline " + whole + " --current " + merged_path);
  EXPECT_EQ(gate.rc, 0) << gate.out;

  // A shard left out: written, exit 1, listed in the file and on stderr with the rerun command.
  r = merge(files[0] + " " + files[2] + " --out " + dir_.file("m13.json"));
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("missing shards: 2\n"), std::string::npos) << r.out;
  const std::string rerun = "scripts/slurm/submit.sh " + s + " --shards 3 --only 2";
  EXPECT_NE(r.out.find("rerun: " + rerun), std::string::npos) << r.out;
  Json m13 = Json::parse(read_text(dir_.file("m13.json")));
  EXPECT_EQ(m13["status"]["complete"], false);
  EXPECT_EQ(m13["context"]["merged"]["missing"], Json::array({2}));
  EXPECT_EQ(m13["context"]["merged"]["rerun"], rerun);
  EXPECT_EQ(m13["status"]["n_planned"], 16);
  EXPECT_LT(m13["status"]["n_runs"].get<int>(), 16);
  errs = schema_errors(dir_.file("m13.json"));
  if (errs != "skip") {
    EXPECT_EQ(errs, "");
  }

  // An interrupted shard is incomplete, not missing.
  Json partial = Json::parse(read_text(files[1]));
  partial["status"]["complete"] = false;
  partial["status"]["partial"] = true;
  const std::string p2 = dir_.file("p2.json");
  write_text(p2, partial.dump());
  r = merge(files[0] + " " + p2 + " " + files[2] + " --out " + dir_.file("mp.json"));
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("incomplete shards: 2\n"), std::string::npos) << r.out;
  EXPECT_EQ(Json::parse(read_text(dir_.file("mp.json")))["context"]["merged"]["incomplete"], Json::array({2}));

  // Another git revision: refused, unless allowed (then a warning).
  Json other_rev = Json::parse(read_text(files[1]));
  other_rev["context"]["build"]["git_rev"] = "0123456789abcdef";
  const std::string r2 = dir_.file("rev2.json");
  write_text(r2, other_rev.dump());
  r = merge(files[0] + " " + r2 + " " + files[2] + " --out " + dir_.file("mr.json"));
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_NE(r.out.find(r2), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("'0123456789abcdef'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--allow-mixed-revisions"), std::string::npos) << r.out;
  r = merge(files[0] + " " + r2 + " " + files[2] + " --out " + dir_.file("mr.json") + " --allow-mixed-revisions");
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("warning: mixed git revisions"), std::string::npos) << r.out;
  bool warned = false;
  const Json mr = Json::parse(read_text(dir_.file("mr.json")));
  for (const auto& w : mr["context"]["warnings"]) {
    warned |= w.get<std::string>().find("mixed git revisions") != std::string::npos;
  }
  EXPECT_TRUE(warned);

  // Another CPU: merged, flagged.
  Json other_cpu = Json::parse(read_text(files[2]));
  other_cpu["context"]["host"]["cpu_model"] = "Some Other CPU";
  const std::string c3 = dir_.file("cpu3.json");
  write_text(c3, other_cpu.dump());
  r = merge(files[0] + " " + files[1] + " " + c3 + " --out " + dir_.file("mc.json"));
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("mixed hardware: host.cpu_model differs"), std::string::npos) << r.out;
  EXPECT_EQ(Json::parse(read_text(dir_.file("mc.json")))["context"]["merged"]["mixed_hardware"], true);

  // `merge shards/*.json` names each shard's Chrome trace too: skipped with a note, not an error.
  r = merge(dir_.file("shards") + "/*.json --out " + dir_.file("glob.json"));
  ASSERT_EQ(r.rc, 0) << r.out;
  for (int i = 1; i <= 3; ++i) {
    const std::string note = "skipping " + dir_.file("shards/s" + std::to_string(i) + ".trace.json") + " (a Chrome trace";
    EXPECT_NE(r.out.find(note), std::string::npos) << r.out;
  }
  EXPECT_EQ(Json::parse(read_text(dir_.file("glob.json")))["runs"].size(), 16u);
  r = merge(dir_.file("shards") + "/*.trace.json --out " + dir_.file("x.json"));
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_NE(r.out.find("no shard files among the 3 inputs (all Chrome traces)"), std::string::npos) << r.out;
  // A trace under another name is still refused, and says what it is.
  write_text(dir_.file("renamed.json"), read_text(dir_.file("shards/s1.trace.json")));
  r = merge(files[0] + " " + dir_.file("renamed.json") + " --out " + dir_.file("x.json"));
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_NE(r.out.find("renamed.json: a Chrome trace (traceEvents), not a results file"), std::string::npos) << r.out;

  // A shard of another scenario, the same shard twice, an unsharded file, garbage: exit 2.
  const std::string other = scenario("other", "model: synth:tiny:Q4_K_M\ngen: 2\nprompt: 0\nreps: 1\nprefetch: [0, 1, 2]\n");
  const std::string o2 = dir_.file("other2.json");
  ASSERT_EQ(harness_fake("--config " + other + " --shard 2/3 --results " + o2).rc, 0);
  r = merge(files[0] + " " + o2 + " --out " + dir_.file("x.json"));
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_NE(r.out.find("ran different scenarios: 'e2e'"), std::string::npos) << r.out;
  r = merge(files[0] + " " + files[0] + " --out " + dir_.file("x.json"));
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_NE(r.out.find("are both shard 1/3"), std::string::npos) << r.out;
  r = merge(whole + " --out " + dir_.file("x.json"));
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_NE(r.out.find(whole + ": no context.shard"), std::string::npos) << r.out;
  write_text(dir_.file("junk.json"), "{\"context\": ");
  r = merge(dir_.file("junk.json") + " --out " + dir_.file("x.json"));
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_NE(r.out.find("junk.json: not JSON"), std::string::npos) << r.out;
  EXPECT_NE(access(dir_.file("x.json").c_str(), F_OK), 0) << "nothing written on bad input";
}

TEST_F(ShardCli, EmptyShardsAndResumeOfAShard) {
  const std::string s = scenario("small", "model: synth:tiny:Q4_K_M\ngen: 2\nprompt: 0\nreps: 1\nprefetch: [0, 1, 2, 3]\n");
  // More shards than runs: the empty ones are complete files with no runs.
  std::string list;
  int empty = 0;
  for (int i = 1; i <= 6; ++i) {
    const std::string f = dir_.file("six/" + std::to_string(i) + ".json");
    list += " " + f;
    Cmd r = harness_fake("--config " + s + " --shard " + std::to_string(i) + "/6 --results " + f);
    ASSERT_EQ(r.rc, 0) << r.out;
    const Json j = Json::parse(read_text(f));
    EXPECT_EQ(j["status"]["complete"], true);
    if (j["runs"].empty()) {
      ++empty;
      EXPECT_EQ(j["context"]["shard"]["run_ids"], Json::array());
      const std::string errs = schema_errors(f);
      if (errs != "skip") {
        EXPECT_EQ(errs, "") << f;
      }
    }
  }
  EXPECT_EQ(empty, 2);
  Cmd r = merge(list + " --out " + dir_.file("six.json"));
  EXPECT_EQ(r.rc, 0) << r.out;
  const Json six = Json::parse(read_text(dir_.file("six.json")));
  EXPECT_EQ(six["runs"].size(), 4u);
  EXPECT_EQ(six["context"]["merged"]["mixed_hardware"], false) << "an empty shard opened no model: not another machine";

  // Resume: drop a shard's last run and mark it partial; --resume runs just that point again.
  const std::string f = dir_.file("two/2.json");
  ASSERT_EQ(harness_fake("--config " + s + " --shard 2/2 --results " + f).rc, 0);
  Json j = Json::parse(read_text(f));
  ASSERT_EQ(j["runs"].size(), 2u);
  const Json shard_before = j["context"]["shard"];
  const Json dropped = j["runs"][1];
  j["runs"].erase(1);
  j["status"]["complete"] = false;
  j["status"]["partial"] = true;
  write_text(f, j.dump());
  r = harness_fake("--resume " + f + " --shard 1/2");
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_NE(r.out.find("--shard 1/2 disagrees with " + f + ", which is shard 2/2"), std::string::npos) << r.out;
  const int before = count_lines(log_, "bench ");
  r = harness_fake("--resume " + f);
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(count_lines(log_, "bench ") - before, 1);
  j = Json::parse(read_text(f));
  EXPECT_EQ(j["status"]["complete"], true);
  EXPECT_EQ(j["context"]["shard"], shard_before);
  ASSERT_EQ(j["runs"].size(), 2u);
  EXPECT_EQ(j["runs"][1]["id"], dropped["id"]);
  EXPECT_EQ(j["runs"][1]["point"], dropped["point"]);
}

// The merge input parser on hand-made shapes (the fuzz target covers the rest).
TEST(ShardMerge, ParserRejectsWrongShapesWithTheFieldName) {
  const std::string ok_ctx = R"("scenario": {"name": "x", "path": "x.yaml", "sha256": "ab"}, "build": {"git_rev": "r"})";
  auto doc = [&](const std::string& shard, const std::string& runs) {
    return "{\"context\": {" + ok_ctx + ", \"shard\": " + shard + "}, \"ceilings\": {}, \"runs\": " + runs +
           ", \"status\": {\"complete\": true}}";
  };
  const std::string good_shard = R"({"index": 1, "count": 2, "sweep_fingerprint": "f", "n_runs_total": 3, "run_ids": ["r0001"], "predicted_s": 1})";
  EXPECT_TRUE(fh::parse_shard_file("a.json", doc(good_shard, R"([{"id": "r0001"}])")).ok());
  struct Case {
    std::string text, needle;
  };
  // n objects, each inside the last: {"a": {"a": ... {} ...}}.
  auto nest = [](int n) {
    std::string t;
    for (int i = 1; i < n; ++i) t += "{\"a\": ";
    return t + "{}" + std::string(n - 1, '}');
  };
  const Case cases[] = {
      {doc(R"({"index": 3, "count": 2, "sweep_fingerprint": "f", "n_runs_total": 3, "run_ids": []})", "[]"), "context.shard.index = 3"},
      {doc(R"({"index": "1", "count": 2, "sweep_fingerprint": "f", "n_runs_total": 3, "run_ids": []})", "[]"), "context.shard.index is missing"},
      {doc(good_shard, R"([{"id": "r0002"}])"), "not in context.shard.run_ids"},
      {doc(good_shard, R"([{"id": 7}])"), "runs[0].id"},
      {doc(good_shard, R"({"id": "r0001"})"), "runs is missing or not an array"},
      {std::string(200, '[') + std::string(200, ']'), "nested deeper"},
      {std::string(100000, '['), "nested deeper"},  // refused before the missing ends are reached
      {nest(129), "nested deeper"},
      {nest(128), "no context object"},  // the limit itself is allowed
      {"{\"x\": \"" + std::string(300, '[') + "\"}", "no context object"},  // brackets in a string
      {"[1, 2]", "top level is not an object"},
  };
  for (const auto& c : cases) {
    auto r = fh::parse_shard_file("a.json", c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(r.status().message().find("a.json: "), std::string::npos);
    EXPECT_NE(r.status().message().find(c.needle), std::string::npos) << r.status().message();
  }
}
