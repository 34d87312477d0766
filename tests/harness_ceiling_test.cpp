// ctest-labels: slow
// The memory ceiling is a ceiling: the real engine, generating from a resident model larger than
// the LLC (so every token reads its weights from DRAM), never reads them faster than the ceiling the
// same harness invocation recorded. A physical inequality between two figures of one run, not an
// absolute speed: it fails only when the probe under-measures the machine (or over-counts bytes).
#include <gtest/gtest.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "env.h"
#include "test_util.h"

using Json = nlohmann::json;
namespace fh = flea::harness;

namespace {

std::string flea_bin() { return flea::test::bin_dir() + "/flea"; }

// planned_bytes of `flea synth --dry-run` for the 1b shape with n_layer blocks (-1 on failure).
int64_t planned_bytes(int n_layer) {
  std::string out;
  if (flea::test::run_command(flea_bin() + " synth --shape 1b --type Q4_K_M --n-layer " + std::to_string(n_layer) +
                                  " --dry-run 2>&1", &out) != 0) {
    return -1;
  }
  const size_t p = out.find("planned_bytes ");
  return p == std::string::npos ? -1 : std::atoll(out.c_str() + p + 14);
}

}  // namespace

TEST(HarnessCeiling, EngineWeightReadsNeverBeatTheMemoryCeilingOfTheSameRun) {
  int64_t llc = fh::last_level_cache_bytes();
  if (llc <= 0) llc = 64ll << 20;
  // The 1b shape with enough blocks that the layer weights are 1.5x the LLC: DRAM-bound for the
  // floor, and past the probe's smallest buffer (1.25x).
  const int64_t one = planned_bytes(1), two = planned_bytes(2);
  ASSERT_GT(one, 0);
  ASSERT_GT(two, one);
  const int64_t per_layer = two - one;
  const int n_layer = std::max<int>(2, static_cast<int>(std::ceil(1.5 * static_cast<double>(llc) / static_cast<double>(per_layer))));
  const int64_t file_bytes = one + (n_layer - 1) * per_layer;
  flea::test::TempDir dir;
  struct statvfs fs;
  if (statvfs(dir.path().c_str(), &fs) == 0 && static_cast<double>(fs.f_bavail) * fs.f_frsize < 2.0 * file_bytes)
    GTEST_SKIP() << "needs " << 2 * file_bytes / (1 << 20) << " MiB free under " << dir.path() << " for a model 1.5x the LLC";
  if (file_bytes > (6ll << 30)) GTEST_SKIP() << "LLC " << (llc >> 20) << " MiB: the model past it would be " << (file_bytes >> 20) << " MiB";

  const std::string model = dir.file("m.gguf");
  ASSERT_EQ(flea::test::run_command(flea_bin() + " synth --shape 1b --type Q4_K_M --n-layer " + std::to_string(n_layer) +
                                    " -q --out " + model),
            0);
  const int cpus = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  const std::string scenario = dir.file("s.yaml");
  // Every CPU for the engine (its fastest), and a longer probe than the default: the more samples,
  // the less a busy machine can hold the ceiling down.
  flea::test::write_text(scenario, "model: " + model + "\nresidency: full\nprompt: 4\ngen: 8\nwarmup: 1\nreps: 3\nthreads: " +
                                       std::to_string(cpus) +
                                       "\nceilings: {fio: false, memory_reps: 10, memory_budget_s: 4}\n");
  std::string out;
  const int rc = flea::test::run_command(flea::test::bin_dir() + "/run_lab_harness --flea " + flea_bin() + " --config " + scenario +
                                             " --results " + dir.file("r.json") + " --quiet 2>&1",
                                         &out);
  ASSERT_EQ(rc, 0) << out;
  Json d = Json::parse(flea::test::read_text(dir.file("r.json")));

  // The ceiling, as recorded: every CPU, buffers past the LLC, raw samples kept.
  const Json& c = d["ceilings"];
  ASSERT_TRUE(c["memory_read_gb_s"].is_number()) << c.dump();
  const double ceiling_gb_s = c["memory_read_gb_s"];
  EXPECT_EQ(c["memory_bw_gb_s"].get<double>(), ceiling_gb_s);
  const Json& m = c["memory"];
  EXPECT_EQ(m["threads"], cpus);
  EXPECT_EQ(m["samples_gb_s"].size(), m["buffer_bytes"].size());
  for (const auto& b : m["buffer_bytes"]) EXPECT_GT(b.get<int64_t>(), llc);

  // The engine: weight bytes every token reads (the plan's active bytes less the globals: a lower
  // bound, the output matrix comes on top) over its fastest token-generation repetition.
  ASSERT_EQ(d["runs"].size(), 1u);
  const Json& r = d["runs"][0];
  ASSERT_EQ(r["status"], "ok") << r.dump();
  const double weight_bytes = r["plan"]["active_bytes"].get<double>() - r["plan"].value("global_bytes", 0.0);
  ASSERT_GT(weight_bytes, static_cast<double>(llc)) << "the model must not fit the cache";
  const double best_ms = r["summary"]["tg_ms_per_token"]["min"];
  ASSERT_GT(best_ms, 0);
  const double engine_gb_s = weight_bytes / (best_ms * 1e-3) / 1e9;
  EXPECT_LE(engine_gb_s, ceiling_gb_s) << "the engine read " << weight_bytes / 1e9 << " GB per token in " << best_ms
                                       << " ms: faster than the memory ceiling of the same run (samples "
                                       << m["samples_gb_s"].dump() << ")";
  // The floor built on that ceiling holds too.
  EXPECT_EQ(r["predicted"]["floor_link"], "host_memory");
  ASSERT_TRUE(r["vs_floor"].is_object());
  EXPECT_FALSE(r["vs_floor"]["below_floor"].get<bool>());
  std::printf("engine %.2f GB/s of weights, ceiling %.2f GB/s (model %.0f MiB, LLC %lld MiB)\n", engine_gb_s, ceiling_gb_s,
              weight_bytes / (1 << 20), static_cast<long long>(llc >> 20));
}
