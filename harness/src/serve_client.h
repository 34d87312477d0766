// The load client of serving points: K threads, each sending streamed /v1/completions requests
// back to back over one keep-alive connection, timing every token chunk as it arrives.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "scenario.h"

namespace flea::harness {

// The server's counter of weight bytes read from storage (flea serve's /metrics, Prometheus text).
inline constexpr const char* kServeBytesReadMetric = "flea_weight_bytes_read_total";

// Server-sent events split into `data:` payloads, whatever the read boundaries (a line, or the
// "\n\n" ending an event, may arrive over several reads). Comments and other fields are ignored;
// several data lines of one event are joined by '\n' (the SSE rule).
class SseParser {
 public:
  // Appends the payloads of the events this chunk completes to *events.
  void feed(const char* data, size_t n, std::vector<std::string>* events);
  // Bytes of an unfinished event still buffered.
  size_t pending() const { return buf_.size(); }

 private:
  std::string buf_;   // an unfinished line
  std::string data_;  // data lines of the current event
  bool has_data_ = false;
};

// What one request saw; times are ns after the load started (steady clock).
struct RequestSample {
  int client = 0;
  int64_t send_ns = 0, first_token_ns = -1, end_ns = 0;
  std::vector<int64_t> token_ns;  // arrival of each token chunk
  int64_t usage_completion_tokens = -1, usage_prompt_tokens = -1;  // -1: no usage chunk
  int status = 0;                 // HTTP status, 0 when none came back
  bool done = false;              // `data: [DONE]` seen
  std::string error;              // "" = ok
  // Output tokens: the usage chunk's figure, else the token chunks counted.
  int64_t output_tokens() const {
    return usage_completion_tokens >= 0 ? usage_completion_tokens : static_cast<int64_t>(token_ns.size());
  }
};

struct LoadOptions {
  std::string host = "127.0.0.1";
  int port = 0;
  int concurrency = 1;
  int requests = 1;          // over all clients
  std::string prompt;        // text sent as `prompt`
  int64_t max_tokens = 16;
  int timeout_s = 600;       // per request (connect, read)
  std::function<bool()> stopped;  // true: clients stop after their current request
};

struct LoadResult {
  std::vector<RequestSample> samples;  // in completion order
  int64_t wall_ns = 0;                 // first send → last response
  bool interrupted = false;
};

LoadResult run_load(const LoadOptions& o);

// Percentiles (p50, p90, p99) and the rates of a load: the record's `serving` object. Failed
// requests count in `errors` only; TTFT/TPOT/ITL come from the requests that succeeded.
Json serving_summary(const LoadResult& load, int concurrency);
// The raw per-request samples for the record (ms, relative to the request's send).
Json request_samples_json(const LoadResult& load);

// Text that the server's tokenizer turns into about n tokens (common short English words, one token
// each on the llama vocabularies); deterministic.
std::string make_prompt_text(int64_t n_tokens);

// The sum of a Prometheus counter over its label sets; -1 when the text has no such metric.
double prometheus_value(const std::string& text, const std::string& name);

// Blocking GETs for /health and /metrics: the status (0 when no connection) and body.
int http_get(const std::string& host, int port, const std::string& path, int timeout_s, std::string* body);

}  // namespace flea::harness
