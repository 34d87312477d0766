// The scenario key table: every rule that turns a bad file into one `file:line:col: ...` line.
#include <gtest/gtest.h>

#include <filesystem>

#include "scenario.h"
#include "stats.h"
#include "test_util.h"

namespace fh = flea::harness;

namespace {

std::string error_of(const std::string& text) {
  auto r = fh::parse_yaml_doc("scenarios/x.yaml", text, fh::scenario_keys());
  EXPECT_FALSE(r.ok()) << text;
  return r.ok() ? "" : r.status().message();
}

}  // namespace

TEST(HarnessScenario, UnknownKeySuggestsTheClosestName) {
  const std::string text = "model: synth:tiny:Q4_K_M\nreps: 3\nprefech: 2\n";
  EXPECT_EQ(error_of(text), "scenarios/x.yaml:3:1: unknown key 'prefech' (did you mean 'prefetch'?)");
}

TEST(HarnessScenario, UnknownKeyPositionIsLineAndColumn) {
  // Nested: line 12, column 3 inside ceilings.
  std::string text;
  for (int i = 0; i < 10; ++i) text += "# comment\n";
  text += "ceilings:\n  fio_sampels: 3\n";
  EXPECT_EQ(error_of(text), "scenarios/x.yaml:12:3: unknown key 'ceilings.fio_sampels' (did you mean 'fio_samples'?)");
}

TEST(HarnessScenario, UnknownKeyWithoutCloseNamePointsToHelpKeys) {
  EXPECT_EQ(error_of("zzzzzzzz: 1\n"), "scenarios/x.yaml:1:1: unknown key 'zzzzzzzz' (see run_lab_harness --help-keys)");
}

TEST(HarnessScenario, WrongType) {
  EXPECT_EQ(error_of("prefetch: two\n"), "scenarios/x.yaml:1:11: key 'prefetch' expects an integer in [0, 64], got 'two'");
  EXPECT_EQ(error_of("drop_cache: maybe\n"), "scenarios/x.yaml:1:13: key 'drop_cache' expects true or false, got 'maybe'");
  EXPECT_EQ(error_of("reps: {a: 1}\n"), "scenarios/x.yaml:1:7: key 'reps' expects an integer in [1, 10000], got a map");
}

TEST(HarnessScenario, OutOfRange) {
  EXPECT_EQ(error_of("reps: 0\n"), "scenarios/x.yaml:1:7: key 'reps' value 0 is out of range [1, 10000]");
  EXPECT_EQ(error_of("prefetch: [1, 65]\n"), "scenarios/x.yaml:1:15: key 'prefetch' value 65 is out of range [0, 64]");
}

TEST(HarnessScenario, MemoryLimitIsANonNegativeSweepAxis) {
  EXPECT_EQ(error_of("memory_limit_mb: -1\n"), "scenarios/x.yaml:1:18: key 'memory_limit_mb' value -1 is out of range [0, 1e+09]");
  EXPECT_EQ(error_of("memory_limit_mb: [512, -64]\n"),
            "scenarios/x.yaml:1:24: key 'memory_limit_mb' value -64 is out of range [0, 1e+09]");
  EXPECT_EQ(error_of("memory_limit_mb: 4GB\n"),
            "scenarios/x.yaml:1:18: key 'memory_limit_mb' expects an integer in [0, 1e+09], got '4GB'");
  auto ok = fh::parse_yaml_doc("s.yaml", "model: m.gguf\nmemory_limit_mb: [0, 2048]\n", fh::scenario_keys());
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ(ok->value["memory_limit_mb"], fh::Json::array({0, 2048}));
  auto def = fh::parse_yaml_doc("s.yaml", "model: m.gguf\n", fh::scenario_keys());
  ASSERT_TRUE(def.ok());
  EXPECT_EQ(def->value["memory_limit_mb"], 0);  // none
}

TEST(HarnessScenario, EnumValueSuggestion) {
  EXPECT_EQ(error_of("io: odirekt\n"),
            "scenarios/x.yaml:1:5: key 'io' value 'odirekt' is not one of pread|odirect|io_uring|mmap (did you mean 'odirect'?)");
}

TEST(HarnessScenario, MalformedYamlHasLineAndColumn) {
  const std::string msg = error_of("model: a\nio: [pread, odirect\nreps: 3\n");
  EXPECT_EQ(msg.rfind("scenarios/x.yaml:", 0), 0u) << msg;
  EXPECT_NE(msg.find("malformed YAML"), std::string::npos) << msg;
  // yaml-cpp reports the unterminated flow sequence at a real position, not 0:0.
  EXPECT_EQ(msg.find("scenarios/x.yaml:0:"), std::string::npos) << msg;
  EXPECT_NE(error_of("a: b: c\n").find("scenarios/x.yaml:1:"), std::string::npos);
  EXPECT_EQ(error_of("- just\n- a list\n"), "scenarios/x.yaml:1:1: expected a map of keys at the top level, got a list");
}

TEST(HarnessScenario, ListOnlyForSweepAxes) {
  EXPECT_EQ(error_of("timeout_s: [1, 2]\n"),
            "scenarios/x.yaml:1:12: key 'timeout_s' takes a single value (it is not a sweep axis), got a list");
  EXPECT_EQ(error_of("io: []\n"), "scenarios/x.yaml:1:5: key 'io' is an empty list (a sweep axis needs at least one value)");
}

TEST(HarnessScenario, PointsTakeOnlySweepAxesWithSingleValues) {
  EXPECT_EQ(error_of("points:\n  - {io: pread, timeout_s: 5}\n"),
            "scenarios/x.yaml:2:17: key 'timeout_s' cannot be set per point (only sweep axes can)");
  EXPECT_EQ(error_of("points:\n  - {io: [pread, mmap]}\n"),
            "scenarios/x.yaml:2:10: key 'io' takes a single value inside a point, got a list");
}

TEST(HarnessScenario, DuplicateAndMissingRequired) {
  EXPECT_EQ(error_of("reps: 1\nreps: 2\n"), "scenarios/x.yaml:2:1: duplicate key 'reps'");
  const std::string msg = error_of("claims:\n  - {name: x, model_gb: 1, profile: ci-cpu}\n");
  EXPECT_EQ(msg.rfind("scenarios/x.yaml:2:5: missing required key 'claims[0].claimed_ms_per_token'", 0), 0u) << msg;
}

TEST(HarnessScenario, AllErrorsReportedAtOnce) {
  const std::string msg = error_of("prefech: 1\nreps: -1\n");
  EXPECT_NE(msg.find("1:1: unknown key 'prefech'"), std::string::npos);
  EXPECT_NE(msg.find("2:7: key 'reps' value -1 is out of range"), std::string::npos);
}

TEST(HarnessScenario, DefaultsFilledAndListsKept) {
  auto r = fh::parse_yaml_doc("s.yaml", "model: m.gguf\nio: [pread, mmap]\nprefetch: 2\n", fh::scenario_keys());
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->value["prefetch"], 2);
  EXPECT_EQ(r->value["reps"], 5);
  EXPECT_EQ(r->value["residency"], "full");
  EXPECT_EQ(r->value["io"], fh::Json::array({"pread", "mmap"}));
  EXPECT_EQ(r->value["ceilings"]["fio_samples"], 3);
  EXPECT_TRUE(r->value["points"].is_array());
  EXPECT_FALSE(r->requested.contains("reps"));  // requested = as written
}

TEST(HarnessScenario, GateMinEffectAndNoiseDefaultToTheGatesAndSetTheReps) {
  auto r = fh::parse_yaml_doc("s.yaml", "model: m.gguf\n", fh::scenario_keys());
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_DOUBLE_EQ(r->value["min_effect"].get<double>(), 0.05);  // report/gate.py --min-effect default
  EXPECT_DOUBLE_EQ(r->value["noise_cv"].get<double>(), 0.03);
  auto bad = fh::parse_yaml_doc("s.yaml", "model: m.gguf\nmin_effect: 0\n", fh::scenario_keys());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("min_effect"), std::string::npos);
  // 2 / C(2n, n) < 0.01 first at n = 5 (2/252); 2/70 at n = 4 is not.
  EXPECT_EQ(fh::min_reps_for_alpha(0.01), 5);
  EXPECT_EQ(fh::min_reps_for_alpha(0.05), 4);
  // pi/3 * 2 * (2.5758 + 0.8416)^2 * (0.03/0.05)^2 = 8.81 -> 9
  EXPECT_EQ(fh::reps_for_gate(0.05, 0.03), 9);
  EXPECT_EQ(fh::reps_for_gate(0.05, 0.01), 5);   // quiet machine: the alpha floor
  EXPECT_EQ(fh::reps_for_gate(0.05, 0.07), 48);  // 7% noise: 47.9
  EXPECT_EQ(fh::reps_for_gate(0.20, 0.07), 5);
}

TEST(HarnessScenario, HelpKeysListsEveryKey) {
  const std::string help = fh::help_keys_text();
  for (const auto& k : fh::scenario_keys()) EXPECT_NE(help.find("  " + k.name + "  ("), std::string::npos) << k.name;
  for (const auto& k : fh::claim_keys()) EXPECT_NE(help.find("claims[]." + k.name), std::string::npos) << k.name;
  EXPECT_NE(help.find("default 1"), std::string::npos);
}

TEST(HarnessScenario, EditDistanceAndSuggest) {
  EXPECT_EQ(fh::edit_distance("prefech", "prefetch"), 1);
  EXPECT_EQ(fh::edit_distance("perfetch", "prefetch"), 1);  // transposition
  EXPECT_EQ(fh::suggest("thread", fh::scenario_keys()), "threads");
  EXPECT_EQ(fh::suggest("qqqqqq", fh::scenario_keys()), "");
}

TEST(HarnessScenario, ExpandPath) {
  setenv("FLEA_HARNESS_TEST_VAR", "/abs/dir", 1);
  EXPECT_EQ(fh::expand_path("${FLEA_HARNESS_TEST_VAR}/m.gguf", "/base"), "/abs/dir/m.gguf");
  EXPECT_EQ(fh::expand_path("${FLEA_HARNESS_UNSET_VAR:-../ref}", "/base/scenarios"), "/base/scenarios/../ref");
  EXPECT_EQ(fh::expand_path("m.gguf", "scen"), "scen/m.gguf");
}

TEST(HarnessScenario, ShippedScenariosParse) {
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator(flea::test::source_dir() + "/scenarios")) {
    if (entry.path().extension() != ".yaml") continue;
    const std::string name = entry.path().stem().string();
    ++n;
    auto s = fh::load_scenario(entry.path().string());
    ASSERT_TRUE(s.ok()) << name << ": " << s.status().message();
    EXPECT_EQ(s->name, name);
    EXPECT_EQ(s->sha256.size(), 64u);
  }
  EXPECT_GE(n, 11);  // every file in scenarios/
}

TEST(HarnessScenario, BadScenarioExitsTwoBeforeRunning) {
  flea::test::TempDir dir;
  const std::string path = dir.file("x.yaml");
  const std::string log = dir.file("log");
  {
    FILE* f = std::fopen(path.c_str(), "w");
    std::fputs("model: m.gguf\nprefech: 2\n", f);
    std::fclose(f);
  }
  std::string out;
  const std::string cmd = "FAKE_FLEA_LOG=" + log + " " + flea::test::bin_dir() + "/run_lab_harness --config " + path +
                          " --flea " + flea::test::source_dir() + "/tests/fixtures/harness/fake_flea.py 2>&1";
  const int rc = flea::test::run_command(cmd, &out);
  EXPECT_EQ(rc, 2) << out;
  EXPECT_NE(out.find(path + ":2:1: unknown key 'prefech' (did you mean 'prefetch'?)"), std::string::npos) << out;
  EXPECT_NE(access(log.c_str(), F_OK), 0) << "the engine ran";
}
