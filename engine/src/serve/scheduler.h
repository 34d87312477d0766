// Continuous batching for `flea serve`: one thread owns the model's Evaluator (n_seq sequence slots)
// and drives every request through it. Each step it
//   1. drops cancelled requests (their clients went away) and frees their slots,
//   2. admits queued requests into free slots (the bounded queue is FIFO),
//   3. builds ONE eval_batch of every decoding sequence's pending token plus prompt chunks of the
//      sequences still in prefill (at most max_batch_rows rows), so each layer's weights are fetched
//      once per step for all of them (long prompt chunks get a logit-less pass before it, see
//      Options::joint_prefill_rows),
//   4. samples each sequence's next token from its row, detokenizes, checks EOS / stop strings /
//      max_tokens / the context, and hands the released text to the request's GenJob.
// A finished sequence's cache is cleared (truncate(seq, 0)) and its slot is taken at the next step.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "model/llama.h"
#include "sampling/sampler.h"
#include "serve/metrics.h"
#include "serve/openai.h"
#include "tokenizer/tokenizer.h"

namespace flea::serve {

struct GenParams {
  std::vector<int32_t> prompt;     // non-empty, shorter than the context
  int64_t max_tokens = 16;         // >= 1; generation also ends when the context is full
  SamplerConfig sampler;
  std::vector<std::string> stop;   // texts that end generation (not included in the output)
  int64_t received_ns = 0;         // steady clock when the request arrived (TTFT is measured from it)
};

struct GenEvent {
  bool done = false;
  std::vector<int32_t> tokens;  // tokens sampled since the previous event (done: every token, for tests)
  std::string text;             // text released since the previous event (held back: stop-string prefixes,
                                // incomplete UTF-8)
  FinishReason finish = FinishReason::kNone;
  std::string error;            // done with an engine error, a cancel or shutdown
  bool shutting_down = false;   // the error is the server stopping (HTTP 503, not 500)
  Usage usage;                  // done only
};

// One request, shared by the HTTP thread that waits on it and the scheduler that feeds it.
class GenJob {
 public:
  explicit GenJob(GenParams params) : params_(std::move(params)) {}
  const GenParams& params() const { return params_; }

  // Waits up to timeout_ms for events and moves every pending one into *out; false on timeout.
  bool wait(std::vector<GenEvent>* out, int64_t timeout_ms);
  // The consumer is gone (client disconnected): the scheduler frees the slot at its next step.
  void cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }
  bool finished() const;

 private:
  friend class Scheduler;
  void push(GenEvent ev);

  const GenParams params_;
  std::atomic<bool> cancelled_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<GenEvent> events_;
  bool finished_ = false;
};

class Scheduler {
 public:
  struct Options {
    int max_queue = 64;           // requests waiting for a slot; beyond that submit() refuses
    int64_t max_batch_rows = 64;  // rows per step (raised to n_seq + 1 so prefill always progresses)
    // Prompt rows whose logits are not needed that may join the sampling pass; more go in a
    // logit-less pass of their own first. The joint pass computes the output matrix for every row,
    // the separate one reads the weights again: cmd_serve sizes this from the model's shapes.
    int64_t joint_prefill_rows = 0;
  };
  // `eval` must support eval_batch (the CPU Session); `tokenizer` detokenizes and knows EOS.
  Scheduler(Evaluator* eval, const Tokenizer* tokenizer, int64_t n_vocab, Options opts, Metrics* metrics);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  void start();  // the scheduler thread
  // Ends the thread; requests still queued or running get a done event with an error.
  void stop();

  // kResourceExhausted when the queue is full or the scheduler stopped; kInvalidArgument for an
  // empty prompt or one that leaves no room in the context.
  StatusOr<std::shared_ptr<GenJob>> submit(GenParams params);

  int64_t n_ctx() const { return eval_->n_ctx(); }
  int n_slots() const { return static_cast<int>(slots_.size()); }
  int64_t steps() const { return steps_.load(); }

 private:
  struct Slot {
    std::shared_ptr<GenJob> job;  // null: free
    std::optional<Sampler> sampler;
    size_t prompt_done = 0;       // prompt tokens in the cache
    int64_t n_cached = 0;         // positions in the cache
    int32_t pending = -1;         // sampled, not yet in the cache (decode phase)
    std::vector<int32_t> generated;
    std::string unsent;           // detokenized text not yet released
    int64_t last_token_ns = 0;
  };

  void loop();
  void step();
  void admit_locked();
  void release(int seq);
  // Samples handled: returns true when the sequence finished.
  void on_token(int seq, int32_t token);
  void finish(int seq, FinishReason reason, const std::string& error = "", bool shutting_down = false);

  Evaluator* eval_;
  const Tokenizer* tokenizer_;
  int64_t n_vocab_;
  Options opts_;
  Metrics* metrics_;
  std::vector<Slot> slots_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<GenJob>> queue_;
  bool stopping_ = false;
  std::thread thread_;
  std::atomic<int64_t> steps_{0};
  std::vector<float> logits_;
};

}  // namespace flea::serve
