// flea serve's continuous-batching scheduler on a small synthetic model: whatever the batching,
// queueing and slot reuse, each request at temperature 0 gets exactly the tokens a single-sequence
// greedy run of its prompt gives; stop strings, cancellation, limits.
#include <gtest/gtest.h>

#include <thread>

#include "compute/cpu/thread_pool.h"
#include "model/memory_provider.h"
#include "serve/scheduler.h"
#include "test_util.h"

namespace flea::serve {
namespace {

class ServeSchedulerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    auto o = test::synth_options("tiny", synth::FileType::Q8_0, dir_->file("tiny.gguf"), 7);
    o.shape.n_vocab = 512;  // the synthetic vocabulary: fast logits
    ASSERT_TRUE(synth::synth_model(o).ok());
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    auto m = Model::open(dir_->file("tiny.gguf"));
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    model_ = std::move(*m);
    auto w = MemoryProvider::load(*model_);
    ASSERT_TRUE(w.ok());
    weights_ = std::move(*w);
    auto t = Tokenizer::from_gguf(model_->file);
    ASSERT_TRUE(t.ok()) << t.status().to_string();
    tokenizer_ = std::make_unique<Tokenizer>(std::move(*t));
  }

  // What one sequence decoded alone, greedily, gives: stops at end of generation or max_tokens.
  std::vector<int32_t> greedy_alone(const std::vector<int32_t>& prompt, int64_t max_tokens) {
    // Its own thread pool: the scheduler's thread may be using pool_ meanwhile.
    Session s(*model_, weights_.get(), &reference_pool_, 256);
    std::vector<float> logits;
    EXPECT_TRUE(s.eval(prompt, &logits, false).ok());
    std::vector<int32_t> out;
    while (static_cast<int64_t>(out.size()) < max_tokens) {
      out.push_back(argmax(logits.data(), model_->hp.n_vocab));
      if (tokenizer_->is_end_of_generation(out.back())) break;
      EXPECT_TRUE(s.eval({out.back()}, &logits, false).ok());
    }
    return out;
  }

  GenParams greedy_params(std::vector<int32_t> prompt, int64_t max_tokens) {
    GenParams p;
    p.prompt = std::move(prompt);
    p.max_tokens = max_tokens;
    p.sampler.temperature = 0.0f;
    return p;
  }

  // Every event until done; the concatenated text and the done event.
  static GenEvent drain(GenJob& job, std::string* text, int* token_events = nullptr) {
    for (;;) {
      std::vector<GenEvent> events;
      job.wait(&events, 10000);
      EXPECT_FALSE(events.empty()) << "no event within 10 s";
      if (events.empty()) return GenEvent{};
      for (GenEvent& ev : events) {
        *text += ev.text;
        if (ev.done) return ev;
        if (token_events) ++*token_events;
      }
    }
  }

  static test::TempDir* dir_;
  cpu::ThreadPool pool_{2};
  cpu::ThreadPool reference_pool_{1};
  std::unique_ptr<Model> model_;
  std::unique_ptr<MemoryProvider> weights_;
  std::unique_ptr<Tokenizer> tokenizer_;
};
test::TempDir* ServeSchedulerTest::dir_ = nullptr;

TEST_F(ServeSchedulerTest, ConcurrentRequestsEqualGreedyAlone) {
  // 10 requests over 4 slots with a small row budget: prompts are prefilled in chunks beside other
  // sequences' decode rows, requests queue, and finished slots are reused.
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int64_t> max_tokens;
  for (int i = 0; i < 10; ++i) {
    std::vector<int32_t> p = {1};
    for (int k = 0; k < 3 + 5 * (i % 4); ++k) p.push_back(static_cast<int32_t>(3 + (i * 37 + k * 11) % 500));
    prompts.push_back(p);
    max_tokens.push_back(6 + (i * 7) % 13);
  }
  // joint 0: prompt rows get a logit-less pass of their own; 1000: they join the sampling pass.
  for (int64_t joint : {int64_t{0}, int64_t{1000}}) {
    SCOPED_TRACE("joint_prefill_rows " + std::to_string(joint));
    Session session(*model_, weights_.get(), &pool_, 64, 4);
    Metrics metrics;
    Scheduler::Options opts;
    opts.max_batch_rows = 8;
    opts.joint_prefill_rows = joint;
    Scheduler sched(&session, tokenizer_.get(), model_->hp.n_vocab, opts, &metrics);
    sched.start();
    std::vector<std::shared_ptr<GenJob>> jobs;
    for (size_t i = 0; i < prompts.size(); ++i) {
      auto job = sched.submit(greedy_params(prompts[i], max_tokens[i]));
      ASSERT_TRUE(job.ok()) << job.status().to_string();
      jobs.push_back(*job);
    }
    int64_t total = 0;
    for (size_t i = 0; i < jobs.size(); ++i) {
      std::string text;
      GenEvent done = drain(*jobs[i], &text);
      ASSERT_TRUE(done.error.empty()) << done.error;
      const auto want = greedy_alone(prompts[i], max_tokens[i]);
      EXPECT_EQ(done.tokens, want) << "request " << i;
      EXPECT_EQ(done.usage.prompt_tokens, static_cast<int64_t>(prompts[i].size()));
      EXPECT_EQ(done.usage.completion_tokens, static_cast<int64_t>(want.size()));
      const bool eog = !want.empty() && tokenizer_->is_end_of_generation(want.back());
      EXPECT_EQ(done.finish, eog ? FinishReason::kStop : FinishReason::kLength);
      std::string pieces;
      for (int32_t t : want) pieces += tokenizer_->piece(t);
      EXPECT_EQ(text, pieces) << "request " << i;
      total += static_cast<int64_t>(want.size());
    }
    // Batching: far fewer forward passes than tokens decoded plus prompts.
    EXPECT_LT(sched.steps(), total);
    EXPECT_EQ(metrics.generated_tokens(), total);
  }
}

TEST_F(ServeSchedulerTest, StopStringEndsGenerationAndIsNotReturned) {
  const std::vector<int32_t> prompt = {1, 40, 41, 42, 43};
  const auto tokens = greedy_alone(prompt, 12);
  std::string full;
  for (int32_t t : tokens) full += tokenizer_->piece(t);
  ASSERT_GE(full.size(), 8u);
  // A stop string from the middle of the greedy text, spanning token boundaries.
  const std::string stop = full.substr(full.size() / 2, 3);
  const std::string want = full.substr(0, full.find(stop));
  Session session(*model_, weights_.get(), &pool_, 64, 2);
  Scheduler sched(&session, tokenizer_.get(), model_->hp.n_vocab, {}, nullptr);
  sched.start();
  GenParams p = greedy_params(prompt, 12);
  p.stop = {"\x01never", stop};
  auto job = sched.submit(p);
  ASSERT_TRUE(job.ok());
  std::string text;
  GenEvent done = drain(**job, &text);
  EXPECT_EQ(done.finish, FinishReason::kStop);
  EXPECT_EQ(text, want);
}

TEST_F(ServeSchedulerTest, CancelledRequestFreesItsSlotWithinAStep) {
  Session session(*model_, weights_.get(), &pool_, 200, 1);
  Scheduler sched(&session, tokenizer_.get(), model_->hp.n_vocab, {}, nullptr);
  sched.start();
  GenParams p = greedy_params({1, 5, 6, 7}, 190);
  p.sampler.temperature = 1.0f;  // no early end of generation by the greedy path
  auto long_job = sched.submit(p);
  ASSERT_TRUE(long_job.ok());
  std::vector<GenEvent> events;
  ASSERT_TRUE((*long_job)->wait(&events, 10000));
  const int64_t steps_at_cancel = sched.steps();
  (*long_job)->cancel();
  std::string text;
  GenEvent done = drain(**long_job, &text);
  EXPECT_EQ(done.error, "cancelled");
  EXPECT_LE(sched.steps() - steps_at_cancel, 1) << "generation went on after the cancel";
  // The one slot is free again and its cache cleared: the next request decodes as if alone.
  const std::vector<int32_t> prompt = {1, 9, 8, 7};
  auto next = sched.submit(greedy_params(prompt, 8));
  ASSERT_TRUE(next.ok());
  text.clear();
  done = drain(**next, &text);
  EXPECT_EQ(done.tokens, greedy_alone(prompt, 8));
}

TEST_F(ServeSchedulerTest, LimitsAreErrorsNotCrashes) {
  Session session(*model_, weights_.get(), &pool_, 32, 1);
  Scheduler::Options opts;
  opts.max_queue = 2;
  Scheduler sched(&session, tokenizer_.get(), model_->hp.n_vocab, opts, nullptr);  // not started: nothing leaves the queue
  ASSERT_TRUE(sched.submit(greedy_params({1, 2}, 4)).ok());
  ASSERT_TRUE(sched.submit(greedy_params({1, 2}, 4)).ok());
  auto full = sched.submit(greedy_params({1, 2}, 4));
  EXPECT_EQ(full.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(sched.submit(greedy_params(std::vector<int32_t>(32, 5), 4)).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(sched.submit(greedy_params({}, 4)).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(sched.submit(greedy_params({1, 100000}, 4)).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(ServeSchedulerTest, OutputEndsAtTheContext) {
  Session session(*model_, weights_.get(), &pool_, 20, 1);
  Scheduler sched(&session, tokenizer_.get(), model_->hp.n_vocab, {}, nullptr);
  sched.start();
  GenParams p = greedy_params({1, 3, 4, 5, 6}, 1000);
  p.sampler.temperature = 1.0f;
  p.sampler.seed = 3;
  auto job = sched.submit(p);
  ASSERT_TRUE(job.ok());
  std::string text;
  GenEvent done = drain(**job, &text);
  ASSERT_TRUE(done.error.empty()) << done.error;
  if (done.finish == FinishReason::kLength) {
    EXPECT_EQ(done.usage.completion_tokens, 20 - 5 + 1);  // the last sampled token needs no position
  }
  EXPECT_LE(done.usage.completion_tokens, 16);
}

TEST_F(ServeSchedulerTest, StopFailsQueuedAndRunningRequests) {
  Session session(*model_, weights_.get(), &pool_, 200, 1);
  auto sched = std::make_unique<Scheduler>(&session, tokenizer_.get(), model_->hp.n_vocab, Scheduler::Options{}, nullptr);
  auto a = sched->submit(greedy_params({1, 2, 3}, 150));
  auto b = sched->submit(greedy_params({1, 2, 3}, 150));
  ASSERT_TRUE(a.ok() && b.ok());
  sched->start();
  sched->stop();
  for (auto* job : {&*a, &*b}) {
    std::string text;
    GenEvent done = drain(**job, &text);
    EXPECT_TRUE(done.error.empty() ? done.finish != FinishReason::kNone : done.shutting_down) << done.error;
  }
  EXPECT_FALSE(sched->submit(greedy_params({1, 2}, 2)).ok());
}

}  // namespace
}  // namespace flea::serve
