// Issue #22: a pipeline of layer slices. The split rule; a slice's plan and provider stay off the
// other layers; stages chained in one process give the whole model's logits bit for bit; and over
// MPI (`mpirun -np 2|3 flea logits --pipeline`) the logits file equals the single process's,
// with per-rank residency flags, and a rank that fails is reported by rank 0 in one line.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <fstream>

#include "compute/cpu/thread_pool.h"
#include "model/llama.h"
#include "pipeline/split.h"
#include "residency/plan.h"
#include "residency/provider.h"
#include "residency/telemetry.h"
#include "test_util.h"

namespace flea {
namespace {

using pipeline::split_layers;

// ---- the split --------------------------------------------------------------------------------

TEST(PipelineSplit, EqualBytesGiveEqualRuns) {
  auto s = split_layers(std::vector<uint64_t>(8, 100), {0, 0});
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  ASSERT_EQ(s->size(), 2u);
  EXPECT_EQ((*s)[0].begin, 0);
  EXPECT_EQ((*s)[0].end, 4);
  EXPECT_EQ((*s)[1].begin, 4);
  EXPECT_EQ((*s)[1].end, 8);
  EXPECT_TRUE((*s)[0].embed);
  EXPECT_FALSE((*s)[0].head);
  EXPECT_FALSE((*s)[1].embed);
  EXPECT_TRUE((*s)[1].head);
}

TEST(PipelineSplit, BudgetsSetTheShares) {
  auto s = split_layers(std::vector<uint64_t>(8, 100), {1 << 20, 3 << 20});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)[0].end, 2);
  EXPECT_EQ((*s)[1].begin, 2);
  EXPECT_EQ((*s)[1].end, 8);
}

TEST(PipelineSplit, OneUnlimitedBudgetMeansEqualShares) {
  auto s = split_layers(std::vector<uint64_t>(6, 100), {0, 5 << 20, 1 << 20});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)[0].end, 2);
  EXPECT_EQ((*s)[1].end, 4);
  EXPECT_EQ((*s)[2].end, 6);
}

TEST(PipelineSplit, EveryRankGetsALayerEvenWhenOneLayerIsHuge) {
  auto s = split_layers({1000, 1, 1, 1}, {0, 0, 0});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)[0].end, 1);
  EXPECT_EQ((*s)[1].end, 2);
  EXPECT_EQ((*s)[2].end, 4);
  auto skew = split_layers({1, 1, 1, 1000}, {0, 0, 0});
  ASSERT_TRUE(skew.ok());
  EXPECT_EQ((*skew)[0].end, 2);  // the first two ranks cannot take the big layer, the last must
  EXPECT_EQ((*skew)[1].end, 3);
  EXPECT_EQ((*skew)[2].end, 4);
}

TEST(PipelineSplit, MoreRanksThanLayersIsAnError) {
  auto s = split_layers({10, 10}, {0, 0, 0});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("3 ranks but the model has only 2 layers"), std::string::npos) << s.status().message();
}

// ---- slices in one process --------------------------------------------------------------------

struct Stage {
  std::unique_ptr<Plan> plan;
  std::unique_ptr<Telemetry> tel;
  std::unique_ptr<WeightProvider> weights;
  std::unique_ptr<Session> session;
};

Stage open_stage(const Model& m, ResidencyOptions opts, const LayerSlice& slice, cpu::ThreadPool* pool, int64_t n_ctx) {
  Stage s;
  opts.slice = slice;
  auto plan = plan_residency(m.file, m.layout, opts, nullptr);
  EXPECT_TRUE(plan.ok()) << plan.status().to_string();
  if (!plan.ok()) return s;
  s.plan = std::make_unique<Plan>(std::move(*plan));
  s.tel = std::make_unique<Telemetry>();
  auto w = make_provider(m.file.path, m.file, m.layout, *s.plan, opts, s.tel.get());
  EXPECT_TRUE(w.ok()) << w.status().to_string();
  if (!w.ok()) return s;
  s.weights = std::move(*w);
  s.session = std::make_unique<Session>(m, s.weights.get(), pool, n_ctx, 1, true, cpu::KvType::kF16, slice);
  return s;
}

TEST(PipelineSlice, PlanHoldsOnlyItsLayersAndTheGlobalsItUses) {
  if (!test::reference_available()) GTEST_SKIP() << "reference data not found";
  auto m = Model::open(test::reference_dir() + "/arch/l4-Q8_0.gguf");
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  ResidencyOptions opts;
  opts.residency = "transient";
  opts.slice = {1, 3, /*embed=*/false, /*head=*/false};
  auto p = plan_residency((*m)->file, (*m)->layout, opts, nullptr);
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  EXPECT_EQ(p->layer_begin, 1);
  EXPECT_EQ(p->layer_end, 3);
  for (int il : {0, 3}) {
    EXPECT_EQ(p->layers[static_cast<size_t>(il)].placement, Placement::kElsewhere) << il;
    EXPECT_TRUE(p->layers[static_cast<size_t>(il)].spans.empty()) << il;
  }
  for (int il : {1, 2}) EXPECT_EQ(p->layers[static_cast<size_t>(il)].placement, Placement::kStreamed) << il;
  EXPECT_EQ(p->n_streamed, 2);
  EXPECT_FALSE(p->global_used[static_cast<int>(GlobalTensor::kTokenEmbd)]);
  EXPECT_FALSE(p->global_used[static_cast<int>(GlobalTensor::kOutput)]);
  EXPECT_EQ(p->global_bytes, (*m)->layout.globals[static_cast<int>(GlobalTensor::kRopeFreqs)]->n_bytes);
  const uint64_t own = (*m)->layout.layer_bytes(1) + (*m)->layout.layer_bytes(2);
  EXPECT_EQ(p->model_bytes, p->global_bytes + own);
  // A range outside the model is refused with the numbers.
  opts.slice = {2, 6, false, true};
  auto bad = plan_residency((*m)->file, (*m)->layout, opts, nullptr);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("[2, 6)"), std::string::npos) << bad.status().message();
}

// Every reference model, split after its first layer: stage 0 (embedding + layer 0, streamed) hands
// its hidden states to stage 1 (the rest + head, resident); the logits equal the whole model's bit
// for bit, and stage 1's provider read none of layer 0's bytes nor token_embd (when untied).
TEST(PipelineSlice, ChainedStagesGiveTheWholeModelsLogitsBitForBit) {
  if (!test::reference_available()) GTEST_SKIP() << "reference data not found";
  test::AmxOff amx_off;  // both sides batch the same rows, but keep the comparison to one kernel path
  cpu::ThreadPool pool(2);
  const std::vector<int32_t> tokens = {1, 5, 9, 13, 17, 21, 25, 29};
  for (const test::ReferenceCase& rc : test::reference_cases()) {
    SCOPED_TRACE(rc.path);
    auto m = Model::open(rc.path);
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    const int n_layer = static_cast<int>((*m)->hp.n_layer);
    ResidencyOptions full;
    Stage whole = open_stage(**m, full, LayerSlice{}, &pool, 16);
    ASSERT_TRUE(whole.session);
    std::vector<float> want;
    ASSERT_TRUE(whole.session->eval(tokens, &want, true).ok());

    ResidencyOptions streamed;
    streamed.residency = "transient";
    Stage first = open_stage(**m, streamed, {0, 1, true, false}, &pool, 16);
    Stage rest = open_stage(**m, full, {1, n_layer, false, true}, &pool, 16);
    ASSERT_TRUE(first.session && rest.session);
    std::vector<BatchRow> rows;
    for (int32_t t : tokens) rows.push_back({0, t});
    std::vector<float> hidden, got;
    ASSERT_TRUE(first.session->eval_stage(rows, &hidden, nullptr, true).ok());
    EXPECT_EQ(hidden.size(), tokens.size() * static_cast<size_t>((*m)->hp.n_embd));
    Status st = rest.session->eval_stage(rows, &hidden, &got, true);
    ASSERT_TRUE(st.ok()) << st.to_string();
    ASSERT_EQ(got.size(), want.size());
    EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0);
    // A second step (decode) through both stages still agrees: each stage kept its own positions.
    std::vector<float> want2, got2;
    ASSERT_TRUE(whole.session->eval({7}, &want2, false).ok());
    ASSERT_TRUE(first.session->eval_stage({{0, 7}}, &hidden, nullptr, false).ok());
    ASSERT_TRUE(rest.session->eval_stage({{0, 7}}, &hidden, &got2, false).ok());
    EXPECT_EQ(got2, want2);

    // Stage 1 read at most its own layers, its globals and norms (+ 4 KiB alignment per span).
    const uint64_t layer0 = whole.plan->layers[0].read_bytes;
    EXPECT_LE(rest.tel->read_bytes() + layer0, whole.tel->read_bytes() + 8 * 4096);
    EXPECT_EQ(rest.plan->layers[0].placement, Placement::kElsewhere);
    // The whole-model session refuses to be a stage's and vice versa.
    EXPECT_FALSE(rest.session->eval(tokens, &got, true).ok());
  }
}

// ---- over MPI ----------------------------------------------------------------------------------

#ifdef FLEA_HAVE_MPI
constexpr bool kHaveMpi = true;
#else
constexpr bool kHaveMpi = false;
#endif

std::string flea() { return test::bin_dir() + "/flea"; }
std::string mpirun(int n) { return "mpirun --oversubscribe --allow-run-as-root -np " + std::to_string(n) + " "; }

// Skips (with the reason) unless this build has MPI and mpirun runs.
#define SKIP_WITHOUT_MPI()                                                                              \
  do {                                                                                                  \
    if (!kHaveMpi) GTEST_SKIP() << "built without MPI (FLEA_MPI off or no MPI found at configure time)"; \
    if (test::run_command("command -v mpirun >/dev/null 2>&1") != 0) GTEST_SKIP() << "mpirun not found"; \
    if (!test::reference_available()) GTEST_SKIP() << "reference data not found";                      \
  } while (0)

const char* kTokens = "1,5,9,13,17,21,25,29";

// Single-process logits of `model` into dir/name; the flags are appended.
void single_logits(const std::string& model, const std::string& out, const std::string& flags = "") {
  const std::string cmd = flea() + " logits -t 1 -m " + model + " --tokens " + kTokens + " --out " + out + " " + flags + " 2>&1";
  std::string text;
  ASSERT_EQ(test::run_command(cmd, &text), 0) << cmd << "\n" << text;
}

void expect_same_file(const std::string& a, const std::string& b) {
  const std::vector<uint8_t> x = test::read_bytes(a), y = test::read_bytes(b);
  ASSERT_FALSE(x.empty()) << a;
  EXPECT_EQ(x.size(), y.size()) << b;
  EXPECT_TRUE(x == y) << a << " and " << b << " differ";
}

TEST(PipelineMpi, LogitsAreBitIdenticalToOneProcessAtTwoAndThreeRanks) {
  SKIP_WITHOUT_MPI();
  test::TempDir dir;
  // Every reference model at 2 ranks (most have 2 layers); 3 ranks where there are layers enough:
  // Llama 4 (4 layers) and a synthetic 4-layer model.
  std::vector<std::pair<std::string, int>> runs;
  for (const test::ReferenceCase& rc : test::reference_cases()) runs.emplace_back(rc.path, 2);
  const std::string tiny = dir.file("tiny.gguf");
  std::string text;
  ASSERT_EQ(test::run_command(flea() + " synth --shape tiny --type Q4_K_M --out " + tiny + " 2>&1", &text), 0) << text;
  runs.emplace_back(test::reference_dir() + "/arch/l4-Q8_0.gguf", 3);
  runs.emplace_back(tiny, 3);
  runs.emplace_back(tiny, 4);
  for (const auto& [model, n] : runs) {
    SCOPED_TRACE(model + " at " + std::to_string(n) + " ranks");
    const std::string want = dir.file("single.f32"), got = dir.file("pipe.f32");
    single_logits(model, want);
    const std::string cmd = mpirun(n) + flea() + " logits -t 1 --pipeline -m " + model + " --tokens " + kTokens +
                            " --out " + got + " 2>" + dir.file("err.txt");
    ASSERT_EQ(test::run_command(cmd, &text), 0) << cmd << "\n" << text << test::read_text(dir.file("err.txt"));
    expect_same_file(want, got);
    // The split is printed once, by rank 0, before running.
    EXPECT_EQ(test::count_lines(test::read_text(dir.file("err.txt")), "pipeline: " + std::to_string(n) + " ranks"), 1);
    std::remove(got.c_str());
  }
}

// Greedy generation over 3 ranks: the same tokens as one process, and rank 0's JSON carries every
// rank's figures (its layers, steps, bytes read).
TEST(PipelineMpi, GenerateGivesTheSameTokensAndPerRankFigures) {
  SKIP_WITHOUT_MPI();
  const std::string model = test::reference_dir() + "/arch/l4-Q8_0.gguf";
  const std::string args = " generate -t 1 -m " + model + " --tokens 1,2,3 --n 8 --temp 0";
  std::string single, piped;
  ASSERT_EQ(test::run_command(flea() + args + " 2>/dev/null", &single), 0) << single;
  ASSERT_EQ(test::run_command(mpirun(3) + flea() + args + " --pipeline 2>/dev/null", &piped), 0) << piped;
  const nlohmann::json a = nlohmann::json::parse(single), b = nlohmann::json::parse(piped);
  EXPECT_EQ(a["tokens"], b["tokens"]);
  ASSERT_TRUE(b.contains("pipeline")) << piped;
  const nlohmann::json& ranks = b["pipeline"]["ranks"];
  ASSERT_EQ(ranks.size(), 3u);
  int covered = 0;
  for (size_t r = 0; r < ranks.size(); ++r) {
    EXPECT_EQ(ranks[r]["rank"], static_cast<int>(r));
    EXPECT_EQ(ranks[r]["layer_begin"], covered);
    covered = ranks[r]["layer_end"];
    EXPECT_EQ(ranks[r]["steps"], 8) << r;  // the prompt, then 7 single tokens
    EXPECT_GT(ranks[r]["read_bytes"].get<uint64_t>(), 0u) << r;
  }
  EXPECT_EQ(covered, 4);
}

// MPMD: each rank its own residency flags (streamed with and without prefetch, resident, mmap).
TEST(PipelineMpi, MixedResidencyPerRankStaysBitIdentical) {
  SKIP_WITHOUT_MPI();
  test::TempDir dir;
  const std::string tiny = dir.file("tiny.gguf");
  std::string text;
  ASSERT_EQ(test::run_command(flea() + " synth --shape tiny --type Q4_K_M --out " + tiny + " 2>&1", &text), 0) << text;
  const std::string want = dir.file("single.f32"), got = dir.file("pipe.f32");
  single_logits(tiny, want);
  const std::string common = " logits -t 1 --pipeline -m " + tiny + " --tokens " + kTokens + " --out " + got;
  const std::string cmd = "mpirun --oversubscribe --allow-run-as-root -np 1 " + flea() + common +
                          " --residency transient --prefetch 0 : -np 1 " + flea() + common + " --residency full : -np 1 " +
                          flea() + common + " --residency transient --io mmap --prefetch 2 2>" + dir.file("err.txt");
  ASSERT_EQ(test::run_command(cmd, &text), 0) << cmd << "\n" << text << test::read_text(dir.file("err.txt"));
  expect_same_file(want, got);
}

// A rank that cannot open the model: rank 0 names it and the cause in one line, the job ends with
// a failure status within seconds and no rank writes the output.
TEST(PipelineMpi, ARankThatCannotOpenTheModelEndsTheJobWithOneLine) {
  SKIP_WITHOUT_MPI();
  test::TempDir dir;
  const std::string model = test::reference_dir() + "/pub-Q8_0.gguf";
  const std::string out = dir.file("pipe.f32");
  const std::string common = " logits -t 1 --pipeline --tokens " + std::string(kTokens) + " --out " + out;
  const std::string cmd = "mpirun --oversubscribe --allow-run-as-root -np 1 " + flea() + common + " -m " + model +
                          " : -np 1 " + flea() + common + " -m " + dir.file("missing.gguf") + " 2>" + dir.file("err.txt");
  const auto t0 = std::chrono::steady_clock::now();
  std::string text;
  EXPECT_NE(test::run_command(cmd, &text), 0);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(seconds, 20.0);
  const std::string err = test::read_text(dir.file("err.txt"));
  EXPECT_EQ(test::count_lines(err, "flea logits: pipeline rank 1 of 2: "), 1) << err;
  EXPECT_EQ(test::count_lines(err, "missing.gguf"), 1) << err;
  EXPECT_FALSE(std::ifstream(out).good()) << "no rank may write the output of a failed job";
}

TEST(PipelineMpi, MoreRanksThanLayersIsOneClearError) {
  SKIP_WITHOUT_MPI();
  test::TempDir dir;
  const std::string cmd = mpirun(3) + flea() + " logits -t 1 --pipeline -m " + test::reference_dir() +
                          "/pub-Q8_0.gguf --tokens 1,2 --out " + dir.file("x.f32") + " 2>" + dir.file("err.txt");
  std::string text;
  EXPECT_NE(test::run_command(cmd, &text), 0);
  const std::string err = test::read_text(dir.file("err.txt"));
  EXPECT_EQ(test::count_lines(err, "3 ranks but the model has only 2 layers"), 1) << err;
}

}  // namespace
}  // namespace flea
