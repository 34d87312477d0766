#include "serve/metrics.h"

#include <cstdio>

namespace flea::serve {
namespace {

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

void header(std::string* out, const char* name, const char* type, const char* help) {
  *out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

}  // namespace

void Histogram::observe(double v) {
  for (size_t i = 0; i < bounds_.size(); ++i) {
    if (v <= bounds_[i]) {
      ++counts_[i];
      break;
    }
  }
  ++count_;
  sum_ += v;
}

void Histogram::render(const std::string& name, std::string* out) const {
  int64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    *out += name + "_bucket{le=\"" + num(bounds_[i]) + "\"} " + std::to_string(cumulative) + "\n";
  }
  *out += name + "_bucket{le=\"+Inf\"} " + std::to_string(count_) + "\n";
  *out += name + "_sum " + num(sum_) + "\n" + name + "_count " + std::to_string(count_) + "\n";
}

Metrics::Metrics()
    : ttft_({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}),
      tpot_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}) {}

void Metrics::count_request(const std::string& endpoint, int http_status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{endpoint, http_status}];
}
void Metrics::add_prompt_tokens(int64_t n) { std::lock_guard<std::mutex> lock(mu_); prompt_tokens_ += n; }
void Metrics::add_generated_tokens(int64_t n) { std::lock_guard<std::mutex> lock(mu_); generated_tokens_ += n; }
void Metrics::observe_ttft(double s) { std::lock_guard<std::mutex> lock(mu_); ttft_.observe(s); }
void Metrics::observe_time_per_output_token(double s) { std::lock_guard<std::mutex> lock(mu_); tpot_.observe(s); }
void Metrics::set_queue_depth(int64_t n) { std::lock_guard<std::mutex> lock(mu_); queue_depth_ = n; }
void Metrics::set_active_sequences(int64_t n) { std::lock_guard<std::mutex> lock(mu_); active_ = n; }
void Metrics::count_step(int64_t rows) {
  std::lock_guard<std::mutex> lock(mu_);
  ++steps_;
  step_rows_ += rows;
}

int64_t Metrics::requests(const std::string& endpoint, int http_status) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = requests_.find({endpoint, http_status});
  return it == requests_.end() ? 0 : it->second;
}

int64_t Metrics::generated_tokens() const {
  std::lock_guard<std::mutex> lock(mu_);
  return generated_tokens_;
}

std::string Metrics::render(const EngineTotals& engine) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  header(&out, "flea_requests_total", "counter", "HTTP requests by endpoint and status code.");
  for (const auto& [key, n] : requests_) {
    out += "flea_requests_total{endpoint=\"" + key.first + "\",status=\"" + std::to_string(key.second) + "\"} " +
           std::to_string(n) + "\n";
  }
  header(&out, "flea_prompt_tokens_total", "counter", "Prompt tokens of admitted requests.");
  out += "flea_prompt_tokens_total " + std::to_string(prompt_tokens_) + "\n";
  header(&out, "flea_generated_tokens_total", "counter", "Tokens generated.");
  out += "flea_generated_tokens_total " + std::to_string(generated_tokens_) + "\n";
  header(&out, "flea_time_to_first_token_seconds", "histogram", "Request received to first token sampled.");
  ttft_.render("flea_time_to_first_token_seconds", &out);
  header(&out, "flea_time_per_output_token_seconds", "histogram", "Time between consecutive output tokens of a request.");
  tpot_.render("flea_time_per_output_token_seconds", &out);
  header(&out, "flea_queue_depth", "gauge", "Requests waiting for a sequence slot.");
  out += "flea_queue_depth " + std::to_string(queue_depth_) + "\n";
  header(&out, "flea_active_sequences", "gauge", "Sequences being decoded.");
  out += "flea_active_sequences " + std::to_string(active_) + "\n";
  header(&out, "flea_batch_steps_total", "counter", "Forward passes (eval_batch calls) of the scheduler.");
  out += "flea_batch_steps_total " + std::to_string(steps_) + "\n";
  header(&out, "flea_batch_rows_total", "counter", "Rows (tokens) evaluated over all steps.");
  out += "flea_batch_rows_total " + std::to_string(step_rows_) + "\n";
  header(&out, "flea_weight_bytes_read_total", "counter", "Bytes the residency layer read from disk.");
  out += "flea_weight_bytes_read_total " + std::to_string(engine.bytes_read) + "\n";
  header(&out, "flea_weight_stall_seconds_total", "counter", "Time compute waited for weights being read.");
  out += "flea_weight_stall_seconds_total " + num(engine.stall_seconds) + "\n";
  header(&out, "flea_model_loaded", "gauge", "1 once the model is loaded and requests are served.");
  out += std::string("flea_model_loaded ") + (engine.loaded ? "1" : "0") + "\n";
  return out;
}

}  // namespace flea::serve
