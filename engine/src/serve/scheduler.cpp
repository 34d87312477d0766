#include "serve/scheduler.h"

#include <algorithm>

#include "flea/clock.h"

namespace flea::serve {

bool GenJob::wait(std::vector<GenEvent>* out, int64_t timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return !events_.empty(); })) return false;
  while (!events_.empty()) {
    out->push_back(std::move(events_.front()));
    events_.pop_front();
  }
  return true;
}

bool GenJob::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_;
}

void GenJob::push(GenEvent ev) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    finished_ = ev.done;
    events_.push_back(std::move(ev));
  }
  cv_.notify_all();
}

Scheduler::Scheduler(Evaluator* eval, const Tokenizer* tokenizer, int64_t n_vocab, Options opts, Metrics* metrics)
    : eval_(eval), tokenizer_(tokenizer), n_vocab_(n_vocab), opts_(opts), metrics_(metrics),
      slots_(static_cast<size_t>(eval->n_seq())) {
  opts_.max_batch_rows = std::max<int64_t>(opts_.max_batch_rows, eval->n_seq() + 1);
}

Scheduler::~Scheduler() { stop(); }

void Scheduler::start() {
  FLEA_CHECK(!thread_.joinable(), "Scheduler::start called twice");
  thread_ = std::thread([this] { loop(); });
}

void Scheduler::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::deque<std::shared_ptr<GenJob>> queued;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queued.swap(queue_);
  }
  for (auto& job : queued) {
    GenEvent ev;
    ev.done = true;
    ev.error = "the server is shutting down";
    ev.shutting_down = true;
    job->push(std::move(ev));
  }
  for (int seq = 0; seq < n_slots(); ++seq) {
    if (slots_[static_cast<size_t>(seq)].job) finish(seq, FinishReason::kNone, "the server is shutting down", true);
  }
}

StatusOr<std::shared_ptr<GenJob>> Scheduler::submit(GenParams params) {
  if (params.prompt.empty()) return invalid_argument("the prompt is empty");
  if (static_cast<int64_t>(params.prompt.size()) >= n_ctx()) {
    return invalid_argument("the prompt has " + std::to_string(params.prompt.size()) +
                            " tokens; the context holds " + std::to_string(n_ctx()) +
                            " (prompt and output together): shorten the prompt");
  }
  for (int32_t t : params.prompt) {
    if (t < 0 || t >= n_vocab_) return invalid_argument("prompt token " + std::to_string(t) + " outside the vocabulary");
  }
  if (params.max_tokens < 1) return invalid_argument("max_tokens must be >= 1");
  auto sampler = Sampler::create(params.sampler);
  if (!sampler.ok()) return sampler.status();
  auto job = std::make_shared<GenJob>(std::move(params));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return resource_exhausted("the server is shutting down");
    if (static_cast<int>(queue_.size()) >= opts_.max_queue) {
      return resource_exhausted("the request queue is full (" + std::to_string(opts_.max_queue) +
                                " waiting, --queue): retry later");
    }
    queue_.push_back(job);
    if (metrics_) metrics_->set_queue_depth(static_cast<int64_t>(queue_.size()));
  }
  cv_.notify_all();
  return job;
}

void Scheduler::loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      const auto any_active = [&] {
        return std::any_of(slots_.begin(), slots_.end(), [](const Slot& s) { return s.job != nullptr; });
      };
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty() || any_active(); });
      if (stopping_) return;
      admit_locked();
    }
    step();
  }
}

void Scheduler::admit_locked() {
  // Requests whose clients left while queued never take a slot.
  for (auto it = queue_.begin(); it != queue_.end();) {
    if ((*it)->cancelled()) {
      GenEvent ev;
      ev.done = true;
      ev.error = "cancelled";
      (*it)->push(std::move(ev));
      it = queue_.erase(it);
    } else {
      ++it;
    }
  }
  for (size_t seq = 0; seq < slots_.size() && !queue_.empty(); ++seq) {
    Slot& s = slots_[seq];
    if (s.job) continue;
    s = Slot{};
    s.job = std::move(queue_.front());
    queue_.pop_front();
    s.sampler.emplace(*Sampler::create(s.job->params().sampler));  // validated in submit()
    for (int32_t t : s.job->params().prompt) s.sampler->accept(t);
    if (metrics_) metrics_->add_prompt_tokens(static_cast<int64_t>(s.job->params().prompt.size()));
  }
  if (metrics_) {
    metrics_->set_queue_depth(static_cast<int64_t>(queue_.size()));
    metrics_->set_active_sequences(
        std::count_if(slots_.begin(), slots_.end(), [](const Slot& s) { return s.job != nullptr; }));
  }
}

void Scheduler::release(int seq) {
  Slot& s = slots_[static_cast<size_t>(seq)];
  s.job.reset();
  s.sampler.reset();
  // Truncating to 0 only rewinds the position counter: the next request overwrites the cache.
  Status st = eval_->truncate(seq, 0);
  FLEA_CHECK(st.ok(), st.message());
  if (metrics_) {
    metrics_->set_active_sequences(
        std::count_if(slots_.begin(), slots_.end(), [](const Slot& s) { return s.job != nullptr; }));
  }
}

void Scheduler::finish(int seq, FinishReason reason, const std::string& error, bool shutting_down) {
  Slot& s = slots_[static_cast<size_t>(seq)];
  GenEvent ev;
  ev.done = true;
  ev.shutting_down = shutting_down;
  ev.finish = reason;
  ev.error = error;
  ev.tokens = s.generated;
  if (error.empty()) ev.text = std::move(s.unsent);
  ev.usage.prompt_tokens = static_cast<int64_t>(s.job->params().prompt.size());
  ev.usage.completion_tokens = static_cast<int64_t>(s.generated.size());
  s.job->push(std::move(ev));
  release(seq);
}

void Scheduler::on_token(int seq, int32_t token) {
  Slot& s = slots_[static_cast<size_t>(seq)];
  const GenParams& p = s.job->params();
  const int64_t now = steady_now_ns();
  if (metrics_) {
    if (s.generated.empty()) {
      metrics_->observe_ttft(static_cast<double>(now - p.received_ns) / 1e9);
    } else {
      metrics_->observe_time_per_output_token(static_cast<double>(now - s.last_token_ns) / 1e9);
    }
    metrics_->add_generated_tokens(1);
  }
  s.last_token_ns = now;
  s.generated.push_back(token);
  s.sampler->accept(token);
  if (tokenizer_->is_end_of_generation(token)) return finish(seq, FinishReason::kStop);

  s.unsent += tokenizer_->piece(token);
  size_t stop_at = std::string::npos;
  for (const auto& stop : p.stop) stop_at = std::min(stop_at, s.unsent.find(stop));
  if (stop_at != std::string::npos) {
    s.unsent.resize(stop_at);
    return finish(seq, FinishReason::kStop);
  }
  const bool out_of_tokens = static_cast<int64_t>(s.generated.size()) >= p.max_tokens;
  // The pending token needs a position of its own.
  const bool out_of_context = s.n_cached >= eval_->n_ctx();
  if (out_of_tokens || out_of_context) return finish(seq, FinishReason::kLength);

  // Release what cannot become part of a stop string or of an unfinished UTF-8 character.
  size_t hold = incomplete_utf8_tail(s.unsent);
  for (const auto& stop : p.stop) {
    for (size_t k = std::min(stop.size() - 1, s.unsent.size()); k > hold; --k) {
      if (s.unsent.compare(s.unsent.size() - k, k, stop, 0, k) == 0) {
        hold = k;
        break;
      }
    }
  }
  GenEvent ev;
  ev.tokens = {token};
  ev.text = s.unsent.substr(0, s.unsent.size() - hold);
  s.unsent.erase(0, s.unsent.size() - hold);
  s.job->push(std::move(ev));
  s.pending = token;
}

void Scheduler::step() {
  for (int seq = 0; seq < n_slots(); ++seq) {
    const Slot& s = slots_[static_cast<size_t>(seq)];
    if (s.job && s.job->cancelled()) {
      GenEvent ev;
      ev.done = true;
      ev.error = "cancelled";
      s.job->push(std::move(ev));
      release(seq);
    }
  }
  // Rows whose logits are sampled ("loud": every decoding sequence's pending token, the last token
  // of a prompt) and prompt rows that only fill the cache ("quiet"), in slot order.
  std::vector<BatchRow> loud, quiet;
  std::vector<int> loud_seq;
  for (int seq = 0; seq < n_slots(); ++seq) {
    Slot& s = slots_[static_cast<size_t>(seq)];
    if (!s.job || s.prompt_done < s.job->params().prompt.size()) continue;
    loud.push_back({seq, s.pending});
    loud_seq.push_back(seq);
  }
  int64_t room = opts_.max_batch_rows - static_cast<int64_t>(loud.size());
  for (int seq = 0; seq < n_slots() && room > 0; ++seq) {
    Slot& s = slots_[static_cast<size_t>(seq)];
    if (!s.job || s.prompt_done >= s.job->params().prompt.size()) continue;
    const auto& prompt = s.job->params().prompt;
    const size_t take = std::min<size_t>(static_cast<size_t>(room), prompt.size() - s.prompt_done);
    room -= static_cast<int64_t>(take);
    const bool last_chunk = s.prompt_done + take == prompt.size();
    for (size_t i = 0; i + (last_chunk ? 1 : 0) < take; ++i) quiet.push_back({seq, prompt[s.prompt_done + i]});
    if (last_chunk) {
      loud.push_back({seq, prompt.back()});
      loud_seq.push_back(seq);
    }
  }
  if (loud.empty() && quiet.empty()) return;
  // One pass returns logits for every row or only the last, so joining quiet rows to the pass makes
  // the output matrix run on each of them. Beyond joint_prefill_rows they get a logit-less pass of
  // their own (which reads the weights once more).
  std::vector<BatchRow> rows;
  std::vector<size_t> loud_row;  // row index in the logits of the pass that samples
  Status st;
  if (static_cast<int64_t>(quiet.size()) > opts_.joint_prefill_rows) {
    st = eval_->eval_batch(quiet, nullptr, false);
    steps_.fetch_add(1);
    if (metrics_) metrics_->count_step(static_cast<int64_t>(quiet.size()));
    rows = quiet;
    for (size_t i = 0; i < loud.size(); ++i) loud_row.push_back(i);
    if (st.ok() && !loud.empty()) {
      st = eval_->eval_batch(loud, &logits_, true);
      steps_.fetch_add(1);
      if (metrics_) metrics_->count_step(static_cast<int64_t>(loud.size()));
    }
    rows.insert(rows.end(), loud.begin(), loud.end());
  } else {
    // Each sequence's rows stay in position order: its quiet rows come before its loud one.
    rows = quiet;
    for (const BatchRow& r : loud) {
      loud_row.push_back(rows.size());
      rows.push_back(r);
    }
    st = eval_->eval_batch(rows, &logits_, true);
    steps_.fetch_add(1);
    if (metrics_) metrics_->count_step(static_cast<int64_t>(rows.size()));
  }
  if (!st.ok()) {
    // The cache of every sequence in the batch is now in doubt: fail them all, keep serving.
    for (int seq = 0; seq < n_slots(); ++seq) {
      if (slots_[static_cast<size_t>(seq)].job) finish(seq, FinishReason::kNone, "engine error: " + st.message());
    }
    return;
  }
  for (const BatchRow& r : rows) {
    Slot& s = slots_[static_cast<size_t>(r.seq)];
    ++s.n_cached;
    if (s.prompt_done < s.job->params().prompt.size()) ++s.prompt_done;
  }
  std::vector<std::pair<int, size_t>> sample_rows;
  for (size_t i = 0; i < loud.size(); ++i) sample_rows.emplace_back(loud_seq[i], loud_row[i]);
  for (const auto& [seq, row] : sample_rows) {
    Slot& s = slots_[static_cast<size_t>(seq)];
    const int32_t token = s.sampler->sample(&logits_[row * static_cast<size_t>(n_vocab_)], static_cast<int32_t>(n_vocab_));
    on_token(seq, token);
  }
  if (metrics_) {
    metrics_->set_active_sequences(
        std::count_if(slots_.begin(), slots_.end(), [](const Slot& s) { return s.job != nullptr; }));
  }
}

}  // namespace flea::serve
