// Prometheus text exposition for `flea serve` (GET /metrics): request counts by endpoint and status,
// prompt and generated tokens, TTFT and time-per-output-token histograms, queue depth, active
// sequences, and the residency layer's bytes read and stall time. Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace flea::serve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds_s) : bounds_(std::move(bounds_s)), counts_(bounds_.size(), 0) {}
  void observe(double v);
  // `name`_bucket{le=...} (cumulative), `name`_sum, `name`_count.
  void render(const std::string& name, std::string* out) const;
  int64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<int64_t> counts_;  // [bounds] not cumulative
  int64_t count_ = 0;
  double sum_ = 0.0;
};

class Metrics {
 public:
  Metrics();
  void count_request(const std::string& endpoint, int http_status);
  void add_prompt_tokens(int64_t n);
  void add_generated_tokens(int64_t n);
  void observe_ttft(double seconds);
  void observe_time_per_output_token(double seconds);
  void set_queue_depth(int64_t n);
  void set_active_sequences(int64_t n);
  void count_step(int64_t rows);  // one eval_batch of `rows` rows

  // Engine-side totals read at scrape time.
  struct EngineTotals {
    uint64_t bytes_read = 0;
    double stall_seconds = 0.0;
    bool loaded = false;
  };
  std::string render(const EngineTotals& engine) const;

  int64_t requests(const std::string& endpoint, int http_status) const;
  int64_t generated_tokens() const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, int64_t> requests_;
  int64_t prompt_tokens_ = 0, generated_tokens_ = 0;
  int64_t queue_depth_ = 0, active_ = 0;
  int64_t steps_ = 0, step_rows_ = 0;
  Histogram ttft_;
  Histogram tpot_;
};

}  // namespace flea::serve
