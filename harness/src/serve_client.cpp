#include "serve_client.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <sstream>
#include <thread>

#include "flea/clock.h"
#include "stats.h"

namespace flea::harness {

void SseParser::feed(const char* data, size_t n, std::vector<std::string>* events) {
  for (size_t i = 0; i < n; ++i) {
    const char c = data[i];
    if (c != '\n') {
      buf_ += c;
      continue;
    }
    std::string line = std::move(buf_);
    buf_.clear();
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) {  // end of event
      if (has_data_) events->push_back(std::move(data_));
      data_.clear();
      has_data_ = false;
      continue;
    }
    if (line.compare(0, 5, "data:") != 0) continue;  // comments (":"), event:, id:, retry:
    size_t start = 5;
    if (start < line.size() && line[start] == ' ') ++start;
    if (has_data_) data_ += '\n';
    data_ += line.substr(start);
    has_data_ = true;
  }
}

namespace {

std::string short_text(const std::string& s, size_t n = 300) {
  std::string t = s.size() > n ? s.substr(0, n) + "..." : s;
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
  return t;
}

// One event's payload into the sample: a token chunk, the usage chunk, [DONE], or an error.
void take_event(const std::string& payload, int64_t now_ns, RequestSample* s) {
  if (payload == "[DONE]") {
    s->done = true;
    return;
  }
  Json j;
  try {
    j = Json::parse(payload);
  } catch (const std::exception&) {
    if (s->error.empty()) s->error = "stream: not JSON: " + short_text(payload, 120);
    return;
  }
  if (j.contains("error")) {
    if (s->error.empty()) s->error = "stream error: " + short_text(j["error"].dump());
    return;
  }
  if (j.contains("choices") && j["choices"].is_array() && !j["choices"].empty()) {
    if (s->first_token_ns < 0) s->first_token_ns = now_ns;
    s->token_ns.push_back(now_ns);
  }
  if (j.contains("usage") && j["usage"].is_object()) {
    const Json& u = j["usage"];
    if (u.contains("completion_tokens") && u["completion_tokens"].is_number_integer()) {
      s->usage_completion_tokens = u["completion_tokens"].get<int64_t>();
    }
    if (u.contains("prompt_tokens") && u["prompt_tokens"].is_number_integer()) {
      s->usage_prompt_tokens = u["prompt_tokens"].get<int64_t>();
    }
  }
}

// `stopped` true cancels the request at its next chunk (Ctrl-C stops a point within one token).
RequestSample one_request(httplib::Client* cli, const std::string& body, int64_t t0_ns, int client,
                          const std::function<bool()>& stopped) {
  RequestSample s;
  s.client = client;
  SseParser sse;
  std::vector<std::string> events;
  std::string error_body;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.headers = {{"Content-Type", "application/json"}, {"Accept", "text/event-stream"}};
  req.body = body;
  req.response_handler = [&](const httplib::Response& res) {
    s.status = res.status;
    return true;
  };
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    if (stopped && stopped()) return false;
    if (s.status != 200) {
      if (error_body.size() < 4096) error_body.append(data, std::min<size_t>(n, 4096));
      return true;
    }
    const int64_t now = steady_now_ns() - t0_ns;
    events.clear();
    sse.feed(data, n, &events);
    for (const auto& e : events) take_event(e, now, &s);
    return true;
  };
  httplib::Response res;
  httplib::Error err = httplib::Error::Success;
  s.send_ns = steady_now_ns() - t0_ns;
  const bool sent = cli->send(req, res, err);
  s.end_ns = steady_now_ns() - t0_ns;
  if (!sent) {
    s.error = "transport: " + httplib::to_string(err);
  } else if (s.status != 200) {
    s.error = "HTTP " + std::to_string(s.status) + ": " + short_text(error_body);
  } else if (s.error.empty() && !s.done) {
    s.error = "stream ended without [DONE]" + (sse.pending() ? " (" + std::to_string(sse.pending()) + " bytes of an unfinished event)" : std::string());
  } else if (s.error.empty() && s.token_ns.empty()) {
    s.error = "no token chunk in the stream";
  }
  return s;
}

Json pct_json(std::vector<double> v) {
  if (v.empty()) return nullptr;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  return Json{{"p50", percentile_sorted(v, 0.50)}, {"p90", percentile_sorted(v, 0.90)},
              {"p99", percentile_sorted(v, 0.99)}, {"mean", sum / static_cast<double>(v.size())},
              {"min", v.front()}, {"max", v.back()}, {"n", static_cast<int64_t>(v.size())}};
}

}  // namespace

LoadResult run_load(const LoadOptions& o) {
  LoadResult out;
  const Json body = {{"prompt", o.prompt}, {"max_tokens", o.max_tokens}, {"temperature", 0.0},
                     {"stream", true}, {"stream_options", {{"include_usage", true}}}};
  const std::string body_text = body.dump();
  std::atomic<int> next{0};
  std::mutex mu;
  const int64_t t0 = steady_now_ns();
  auto client = [&](int c) {
    httplib::Client cli(o.host, o.port);
    cli.set_keep_alive(true);
    // Headers and body go out as separate writes; with Nagle on, the body would wait for the
    // server's delayed ACK (~40 ms) and inflate every TTFT.
    cli.set_tcp_nodelay(true);
    cli.set_connection_timeout(o.timeout_s, 0);
    cli.set_read_timeout(o.timeout_s, 0);
    cli.set_write_timeout(o.timeout_s, 0);
    while (next.fetch_add(1) < o.requests) {
      if (o.stopped && o.stopped()) break;
      RequestSample s = one_request(&cli, body_text, t0, c, o.stopped);
      std::lock_guard<std::mutex> lock(mu);
      out.samples.push_back(std::move(s));
    }
  };
  std::vector<std::thread> threads;
  for (int c = 0; c < o.concurrency; ++c) threads.emplace_back(client, c);
  for (auto& t : threads) t.join();
  int64_t first = INT64_MAX, last = 0;
  for (const auto& s : out.samples) {
    first = std::min(first, s.send_ns);
    last = std::max(last, s.end_ns);
  }
  out.wall_ns = out.samples.empty() ? 0 : last - first;
  out.interrupted = o.stopped && o.stopped() && static_cast<int>(out.samples.size()) < o.requests;
  return out;
}

Json serving_summary(const LoadResult& load, int concurrency) {
  std::vector<double> ttft_ms, tpot_ms, itl_ms, e2e_ms;
  int64_t ok = 0, errors = 0, out_tokens = 0;
  Json first_errors = Json::array();
  for (const auto& s : load.samples) {
    if (!s.error.empty()) {
      ++errors;
      if (first_errors.size() < 5) first_errors.push_back(s.error);
      continue;
    }
    ++ok;
    out_tokens += s.output_tokens();
    ttft_ms.push_back(static_cast<double>(s.first_token_ns - s.send_ns) / 1e6);
    e2e_ms.push_back(static_cast<double>(s.end_ns - s.send_ns) / 1e6);
    const size_t n = s.token_ns.size();
    if (n >= 2) {
      tpot_ms.push_back(static_cast<double>(s.token_ns[n - 1] - s.token_ns[0]) / 1e6 / static_cast<double>(n - 1));
      for (size_t i = 1; i < n; ++i) itl_ms.push_back(static_cast<double>(s.token_ns[i] - s.token_ns[i - 1]) / 1e6);
    }
  }
  const double wall_s = static_cast<double>(load.wall_ns) / 1e9;
  return Json{{"concurrency", concurrency},
              {"requests", static_cast<int64_t>(load.samples.size())},
              {"ok", ok},
              {"errors", errors},
              {"first_errors", first_errors},
              {"output_tokens", out_tokens},
              {"wall_s", wall_s},
              {"request_throughput_rps", wall_s > 0 ? Json(static_cast<double>(ok) / wall_s) : Json(nullptr)},
              {"output_tok_s", wall_s > 0 ? Json(static_cast<double>(out_tokens) / wall_s) : Json(nullptr)},
              {"ttft_ms", pct_json(ttft_ms)},
              {"tpot_ms", pct_json(tpot_ms)},
              {"itl_ms", pct_json(itl_ms)},
              {"e2e_ms", pct_json(e2e_ms)}};
}

Json request_samples_json(const LoadResult& load) {
  Json out = Json::array();
  for (const auto& s : load.samples) {
    Json tokens = Json::array();
    for (int64_t t : s.token_ns) tokens.push_back(static_cast<double>(t - s.send_ns) / 1e6);
    out.push_back({{"client", s.client},
                   {"send_ms", static_cast<double>(s.send_ns) / 1e6},
                   {"ttft_ms", s.first_token_ns >= 0 ? Json(static_cast<double>(s.first_token_ns - s.send_ns) / 1e6) : Json(nullptr)},
                   {"total_ms", static_cast<double>(s.end_ns - s.send_ns) / 1e6},
                   {"token_ms", tokens},
                   {"completion_tokens", s.usage_completion_tokens >= 0 ? Json(s.usage_completion_tokens) : Json(nullptr)},
                   {"prompt_tokens", s.usage_prompt_tokens >= 0 ? Json(s.usage_prompt_tokens) : Json(nullptr)},
                   {"status", s.status},
                   {"error", s.error.empty() ? Json(nullptr) : Json(s.error)}});
  }
  return out;
}

std::string make_prompt_text(int64_t n_tokens) {
  static const char* kWords[] = {"the", "cat", "sat", "on", "a", "mat", "and", "the", "dog", "ran",
                                 "to", "the", "old", "red", "barn", "in", "one", "cold", "long", "day"};
  std::string s;
  for (int64_t i = 0; i < n_tokens; ++i) {
    if (i) s += ' ';
    s += kWords[i % (sizeof(kWords) / sizeof(kWords[0]))];
  }
  return s;
}

double prometheus_value(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  std::string line;
  double sum = 0;
  bool found = false;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line.compare(0, name.size(), name) != 0) continue;
    const char after = line.size() > name.size() ? line[name.size()] : '\0';
    if (after != ' ' && after != '{') continue;  // another metric with this prefix
    size_t value_at = name.size();
    if (after == '{') {
      value_at = line.find('}', name.size());
      if (value_at == std::string::npos) continue;
      ++value_at;
    }
    try {
      sum += std::stod(line.substr(value_at));
      found = true;
    } catch (const std::exception&) {
    }
  }
  return found ? sum : -1;
}

int http_get(const std::string& host, int port, const std::string& path, int timeout_s, std::string* body) {
  httplib::Client cli(host, port);
  cli.set_connection_timeout(timeout_s, 0);
  cli.set_read_timeout(timeout_s, 0);
  auto res = cli.Get(path.c_str());
  if (!res) return 0;
  if (body != nullptr) *body = res->body;
  return res->status;
}

}  // namespace flea::harness
