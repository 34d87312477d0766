// Batched and speculative decoding must produce exactly the plain greedy tokens.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "compute/cpu/thread_pool.h"
#include "model/decode.h"
#include "model/memory_provider.h"
#include "test_util.h"

namespace flea {
namespace {

struct Loaded {
  std::unique_ptr<Model> model;
  std::unique_ptr<MemoryProvider> weights;
};

Loaded load(const std::string& name) {
  Loaded l;
  auto m = Model::open(test::reference_dir() + "/" + name);
  EXPECT_TRUE(m.ok()) << m.status().to_string();
  l.model = std::move(*m);
  auto w = MemoryProvider::load(*l.model);
  EXPECT_TRUE(w.ok());
  l.weights = std::move(*w);
  return l;
}

std::vector<int32_t> plain_greedy(Loaded& l, cpu::ThreadPool* pool, const std::vector<int32_t>& prompt, int n) {
  Session s(*l.model, l.weights.get(), pool, 256);
  std::vector<float> logits;
  EXPECT_TRUE(s.eval(prompt, &logits, false).ok());
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(argmax(logits.data(), l.model->hp.n_vocab));
    EXPECT_TRUE(s.eval({out.back()}, &logits, false).ok());
  }
  return out;
}

class DecodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::reference_available()) GTEST_SKIP() << "reference data not found";
  }
  cpu::ThreadPool pool_{2};
};

// LLaMA-2, Llama 3 (GQA 4, rope_freqs), Qwen2 (biases, NeoX rope) and MoE (rows of one batch routed
// to different experts): batching never changes a token.
TEST_F(DecodeTest, BatchedGreedyEqualsEachSequenceAlone) {
  for (const char* name : {"pub-Q4_K_M.gguf", "arch/l3-Q4_K_M.gguf", "arch/qwen2-Q4_K_M.gguf", "arch/moe-Q4_K_M.gguf"}) {
    SCOPED_TRACE(name);
    Loaded l = load(name);
    const std::vector<std::vector<int32_t>> prompts = {{5, 6, 7}, {100, 3}, {300, 250, 200, 150}, {42}};
    Session s(*l.model, l.weights.get(), &pool_, 64, 4);
    auto r = batched_greedy(s, prompts, 10, l.model->hp.n_vocab);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    for (size_t q = 0; q < prompts.size(); ++q) {
      EXPECT_EQ(r->tokens[q], plain_greedy(l, &pool_, prompts[q], 10)) << "sequence " << q;
    }
    EXPECT_EQ(r->steps, 9);
  }
}

TEST_F(DecodeTest, SpeculativeOnLlama3AndQwen2EqualsTargetGreedy) {
  for (const auto& [t, d] : {std::pair{"arch/l3-Q8_0.gguf", "arch/l3-Q4_K_M.gguf"},
                             std::pair{"arch/qwen2-Q8_0.gguf", "arch/qwen2-Q4_K_M.gguf"}}) {
    SCOPED_TRACE(t);
    Loaded target = load(t);
    Loaded draft = load(d);
    const std::vector<int32_t> prompt = {17, 400, 23, 99, 5};
    const auto want = plain_greedy(target, &pool_, prompt, 16);
    Session ts(*target.model, target.weights.get(), &pool_, 256);
    Session ds(*draft.model, draft.weights.get(), &pool_, 256);
    auto r = speculative_greedy(ts, ds, prompt, 16, 3, target.model->hp.n_vocab);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    EXPECT_EQ(r->tokens, want);
  }
}

TEST_F(DecodeTest, SpeculativeWithAnotherQuantAsDraftEqualsTargetGreedy) {
  Loaded target = load("pub-F16.gguf");
  Loaded draft = load("pub-Q4_0.gguf");  // same network, coarser weights: mostly, not always, agrees
  const std::vector<int32_t> prompt = {17, 400, 23, 99, 5};
  const int n = 24;
  const auto want = plain_greedy(target, &pool_, prompt, n);
  for (int k : {1, 3, 5}) {
    Session ts(*target.model, target.weights.get(), &pool_, 256);
    Session ds(*draft.model, draft.weights.get(), &pool_, 256);
    auto r = speculative_greedy(ts, ds, prompt, n, k, target.model->hp.n_vocab);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    EXPECT_EQ(r->tokens, want) << "k=" << k;
    EXPECT_GT(r->accepted, 0);
    EXPECT_LT(r->target_passes, n - 1) << "verification should take fewer passes than tokens";
  }
}

TEST_F(DecodeTest, SpeculativeWithAWrongDraftStillEqualsTargetGreedy) {
  Loaded target = load("pub-Q8_0.gguf");
  Loaded draft = load("pub-Q8_0.gguf");
  const std::vector<int32_t> prompt = {3, 4, 5};
  const auto want = plain_greedy(target, &pool_, prompt, 12);
  Session ts(*target.model, target.weights.get(), &pool_, 256);
  // A draft that has seen a different prompt proposes mostly wrong tokens.
  Session ds(*draft.model, draft.weights.get(), &pool_, 256);
  ASSERT_TRUE(ds.eval({700, 701, 702, 703}, nullptr, false).ok());
  auto r = speculative_greedy(ts, ds, prompt, 12, 4, target.model->hp.n_vocab);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->tokens, want);
}

TEST_F(DecodeTest, TruncateRejectsPositionsNotFilled) {
  Loaded l = load("pub-Q8_0.gguf");
  Session s(*l.model, l.weights.get(), &pool_, 16, 2);
  ASSERT_TRUE(s.eval({1, 2, 3}, nullptr, false).ok());
  EXPECT_FALSE(s.truncate(0, 4).ok());
  EXPECT_FALSE(s.truncate(2, 0).ok());
  EXPECT_TRUE(s.truncate(0, 1).ok());
  EXPECT_EQ(s.n_past(), 1);
  EXPECT_FALSE(s.eval_batch({{5, 1}}, nullptr, false).ok());
}

}  // namespace
}  // namespace flea

namespace flea {
namespace {

TEST(DecodeCli, DraftAndBatchPrintTheTargetGreedyTokens) {
  if (!test::reference_available()) GTEST_SKIP() << "reference data not found";
  const std::string flea = test::bin_dir() + "/flea generate -m " + test::reference_dir() +
                           "/pub-F16.gguf --tokens 17,400,23 --n 10 --threads 1";
  std::string plain, spec, batch, err;
  ASSERT_EQ(test::run_command(flea, &plain), 0);
  ASSERT_EQ(test::run_command(flea + " --draft " + test::reference_dir() + "/pub-Q4_0.gguf --draft-k 3", &spec), 0);
  ASSERT_EQ(test::run_command(flea + " --batch 3 --residency transient", &batch), 0);
  const auto want = nlohmann::json::parse(plain)["tokens"];
  EXPECT_EQ(nlohmann::json::parse(spec)["tokens"], want);
  EXPECT_GT(nlohmann::json::parse(spec)["acceptance_rate"].get<double>(), 0.0);
  const nlohmann::json batch_json = nlohmann::json::parse(batch);  // must outlive the loop below
  for (const auto& seq : batch_json["batch_tokens"]) EXPECT_EQ(seq, want);
  EXPECT_EQ(test::run_command(flea + " --batch 2 --temp 0.7 2>&1", &err), 2);
  EXPECT_NE(err.find("greedily"), std::string::npos) << err;
}

}  // namespace
}  // namespace flea

namespace flea {
namespace {

// flea bench --draft: tg by speculative decoding against a streamed target. Each target pass streams
// every layer once, so fewer passes than tokens must show as fewer bytes read per token.
TEST(DecodeCli, BenchDraftStreamsFewerBytesPerToken) {
  if (!test::reference_available()) GTEST_SKIP() << "reference data not found";
  const std::string bench = test::bin_dir() + "/flea bench -m " + test::reference_dir() +
                            "/pub-F16.gguf --residency transient --prompt 0 --gen 12 --reps 2 --warmup 0 --threads 1";
  std::string plain_out, spec_out, err;
  ASSERT_EQ(test::run_command(bench, &plain_out), 0);
  ASSERT_EQ(test::run_command(bench + " --draft " + test::reference_dir() + "/pub-Q8_0.gguf --draft-k 4", &spec_out), 0);
  const nlohmann::json plain = nlohmann::json::parse(plain_out), spec = nlohmann::json::parse(spec_out);
  ASSERT_TRUE(spec.contains("speculative")) << spec_out;
  const nlohmann::json& s = spec["speculative"];
  EXPECT_FALSE(plain.contains("speculative"));
  EXPECT_GT(s["accepted"].get<int64_t>(), 0);
  EXPECT_LE(s["accepted"].get<int64_t>(), s["drafted"].get<int64_t>());
  EXPECT_LT(s["target_passes"].get<int64_t>(), 2 * 12);
  EXPECT_LT(spec["read_bytes_per_token"].get<uint64_t>(), plain["read_bytes_per_token"].get<uint64_t>());
  EXPECT_EQ(test::run_command(bench + " --batch 2 --draft " + test::reference_dir() + "/pub-Q8_0.gguf 2>&1", &err), 2);
  EXPECT_NE(err.find("--draft needs"), std::string::npos) << err;
}

}  // namespace
}  // namespace flea

namespace flea {
namespace {

// A draft from another vocabulary is bad input for both commands: one line naming both sizes, exit 2.
TEST(DecodeCli, DraftWithAnotherVocabularyIsRefused) {
  if (!test::reference_available()) GTEST_SKIP() << "reference data not found";
  test::TempDir dir;
  const std::string draft = dir.file("tiny.gguf");
  ASSERT_EQ(test::run_command(test::bin_dir() + "/flea synth --shape tiny --n-vocab 2048 --type Q4_0 -q --out " + draft), 0);
  const std::string model = " -m " + test::reference_dir() + "/pub-F16.gguf --threads 1 --draft " + draft;
  for (const std::string cmd : {"generate --tokens 1,2 --n 2", "bench --prompt 0 --gen 2 --reps 1"}) {
    std::string err;
    EXPECT_EQ(test::run_command(test::bin_dir() + "/flea " + cmd + model + " 2>&1", &err), 2) << cmd;
    EXPECT_NE(err.find("has a vocabulary of"), std::string::npos) << cmd << ": " << err;
    EXPECT_NE(err.find("the model has 1024"), std::string::npos) << cmd << ": " << err;
  }
}

}  // namespace
}  // namespace flea
