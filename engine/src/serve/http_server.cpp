// Why cpp-httplib: it is what Debian keeps (libcpp-httplib-dev 0.11.4 in bookworm), it is one small
// library with no framework around it, and a thread per connection is the right shape here: the
// work is in the scheduler thread, a connection thread only parses JSON and waits for tokens.
// (Boost.Beast would mean Asio and hand-written HTTP framing for the same result.) Debian's package
// is not header-only: the header declares, libcpp-httplib.so (built with OpenSSL/zlib/brotli)
// defines, so this file is compiled with its pkg-config flags (the class layout depends on them)
// and lives in flea_http, linked only by the flea-serve binary (engine/CMakeLists.txt).
//
// What this version does, checked in its header and behaviour:
// - Threads: the accept loop hands each connection to Server::new_task_queue; the default pool has
//   max(8, cores - 1) threads and a keep-alive connection holds its thread until it has been idle
//   keep_alive_timeout seconds. 1000 idle connections would starve /health behind a fixed pool, so
//   ElasticPool below grows to max_http_threads threads and shrinks back when they idle.
// - The listen backlog is compiled in as 5 (CPPHTTPLIB_LISTEN_BACKLOG); bind() raises it with a
//   second listen() on the socket (Linux updates the backlog of a listening socket).
// - Bodies: set_payload_max_length() makes the library answer 413 before the handler runs, but only
//   after reading and discarding the declared length; the pre-routing handler (which runs before
//   the body is read) refuses a Content-Length far over the limit at once and closes the connection.
// - Streaming: Response::set_chunked_content_provider() writes HTTP chunks; the provider is called
//   again and again until it calls sink.done(), so it blocks up to 100 ms for the next tokens rather
//   than spin. A write to a vanished client fails (EPIPE/ECONNRESET: SIGPIPE must be ignored, the
//   library sends without MSG_NOSIGNAL) and DataSink::write returns false; is_writable() only polls
//   the socket for writability, which a closed peer still passes, so the failed write is the signal.
//   The provider then cancels the job and the scheduler frees the slot at its next step. Writes
//   block at most io_timeout_s (SO_SNDTIMEO), so a client that stops reading is dropped the same way.
//   The resource releaser runs however the response ends and cancels a job still running.
// - The library gzip/brotli-compresses any text/* response when the client accepts it, including
//   text/event-stream, buffering tokens inside zlib: streaming responses drop Accept-Encoding.
// - Server::stop() closes the listening socket; open streams see is_shutting_down and end.
#include "serve/http_server.h"

#include <sys/socket.h>

#include <atomic>
#include <cstdlib>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <httplib.h>
#include <mutex>
#include <thread>

#include "flea/clock.h"

namespace flea::serve {
namespace {

// A task queue whose threads grow on demand up to max_threads (a connection never waits behind
// idle keep-alive connections unless max_threads are all busy) and exit after 10 s without work
// beyond the first kMinThreads.
class ElasticPool : public httplib::TaskQueue {
 public:
  explicit ElasticPool(size_t max_threads) : max_threads_(std::max<size_t>(max_threads, kMinThreads)) {}
  ~ElasticPool() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    std::unique_lock<std::mutex> lock(mu_);
    jobs_.push_back(std::move(fn));
    if (idle_ < jobs_.size() && live_ < max_threads_) {
      ++live_;
      try {
        std::thread([this] { work(); }).detach();
      } catch (const std::system_error&) {
        --live_;  // the kernel refused a thread: the job waits for a busy one
      }
    }
    cv_.notify_one();
  }

  void shutdown() override {
    std::unique_lock<std::mutex> lock(mu_);
    shutdown_ = true;
    cv_.notify_all();
    done_cv_.wait(lock, [&] { return live_ == 0; });
  }

 private:
  static constexpr size_t kMinThreads = 8;

  void work() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      ++idle_;
      const bool got = cv_.wait_for(lock, std::chrono::seconds(10), [&] { return !jobs_.empty() || shutdown_; });
      --idle_;
      if (jobs_.empty() && (shutdown_ || (!got && live_ > kMinThreads))) break;
      if (jobs_.empty()) continue;
      auto fn = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      fn();
      lock.lock();
    }
    --live_;
    done_cv_.notify_all();
  }

  const size_t max_threads_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::deque<std::function<void()>> jobs_;
  size_t live_ = 0, idle_ = 0;
  bool shutdown_ = false;
};

// Access to the listening socket (protected in httplib::Server) to raise the backlog.
class Server : public httplib::Server {
 public:
  bool raise_backlog(int backlog) { return ::listen(svr_sock_, backlog) == 0; }
};

std::string endpoint_label(const std::string& path) {
  static const char* kKnown[] = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics"};
  for (const char* k : kKnown) {
    if (path == k) return k;
  }
  return "other";
}

std::string random_hex(size_t n) {
  static std::atomic<uint64_t> counter{0};
  uint64_t x = (static_cast<uint64_t>(steady_now_ns()) ^ (counter.fetch_add(1) * 0x9E3779B97F4A7C15ull));
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    s += "0123456789abcdef"[x & 15];
  }
  return s;
}

}  // namespace

struct HttpServer::Impl {
  HttpOptions opts;
  Metrics* metrics;
  Server svr;
  std::thread thread;
  std::atomic<const ServedModel*> model{nullptr};

  void send_error(httplib::Response& res, const ApiError& e) {
    res.status = e.http_status;
    res.set_content(error_body(e), "application/json");
  }

  void routes();
  void completions(const httplib::Request& req, httplib::Response& res, Endpoint endpoint);
};

HttpServer::HttpServer(HttpOptions opts, Metrics* metrics) : impl_(std::make_unique<Impl>()) {
  impl_->opts = std::move(opts);
  impl_->metrics = metrics;
  impl_->routes();
}

HttpServer::~HttpServer() { stop(); }

Status HttpServer::bind() {
  auto& o = impl_->opts;
  bool ok = o.port == 0 ? (o.port = impl_->svr.bind_to_any_port(o.host)) > 0 : impl_->svr.bind_to_port(o.host, o.port);
  if (!ok) {
    return io_error("cannot listen on " + o.host + ":" + std::to_string(o.port) +
                    " (address in use, not an address of this machine, or a port below 1024)");
  }
  impl_->svr.raise_backlog(4096);
  return ok_status();
}

int HttpServer::port() const { return impl_->opts.port; }

void HttpServer::start() {
  impl_->thread = std::thread([this] { impl_->svr.listen_after_bind(); });
}

void HttpServer::set_model(const ServedModel* model) { impl_->model.store(model); }

void HttpServer::stop() {
  if (!impl_->thread.joinable()) return;
  impl_->svr.stop();
  impl_->thread.join();
}

void HttpServer::Impl::routes() {
  const int max_threads = opts.max_http_threads;
  svr.new_task_queue = [max_threads] { return new ElasticPool(static_cast<size_t>(max_threads)); };
  svr.set_payload_max_length(opts.max_body_bytes);
  svr.set_keep_alive_timeout(opts.keep_alive_s);
  svr.set_keep_alive_max_count(1000);
  svr.set_read_timeout(opts.io_timeout_s, 0);
  svr.set_write_timeout(opts.io_timeout_s, 0);
  // Each SSE chunk is one small write: without TCP_NODELAY, Nagle holds it until the client's
  // delayed ACK (~40 ms), and tokens arrive in bursts (seen by the harness's serving points).
  svr.set_tcp_nodelay(true);

  svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    // The library answers 413 only after reading (and discarding) the whole declared body, up to a
    // read timeout. A body far over the limit is refused here, before it is read, and the
    // connection closed (its unread bytes would be parsed as the next request). One a little over
    // is left to the library: it reads it, so the client's send completes and sees the 413 rather
    // than a reset.
    const std::string declared = req.get_header_value("Content-Length");
    const unsigned long long kSlackBytes = 16ull << 20;
    if (!declared.empty() && std::strtoull(declared.c_str(), nullptr, 10) > opts.max_body_bytes + kSlackBytes) {
      res.set_header("Connection", "close");
      send_error(res, ApiError{413, "invalid_request_error", "body_too_large",
                               "the request body (" + declared + " bytes) exceeds " +
                                   std::to_string(opts.max_body_bytes) + " bytes (--max-body-bytes)"});
      return httplib::Server::HandlerResponse::Handled;
    }
    const bool protected_path = req.path.rfind("/v1/", 0) == 0 || req.path == "/metrics";
    if (!opts.api_key.empty() && protected_path &&
        req.get_header_value("Authorization") != "Bearer " + opts.api_key) {
      res.set_header("WWW-Authenticate", "Bearer");
      send_error(res, ApiError{401, "authentication_error", "invalid_api_key",
                               "missing or wrong API key: send the header 'Authorization: Bearer <key>'"});
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // Library-made errors (no route, 413, unparsable request) get the OpenAI error body too.
  svr.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty() || res.content_provider_) return httplib::Server::HandlerResponse::Unhandled;
    ApiError e{res.status, "invalid_request_error", "http_" + std::to_string(res.status), ""};
    switch (res.status) {
      case 404: e.code = "not_found", e.message = "no route " + req.method + " " + req.path; break;
      case 413: e.code = "body_too_large",
                e.message = "the request body exceeds " + std::to_string(opts.max_body_bytes) + " bytes (--max-body-bytes)";
                break;
      case 414: e.message = "the request URI is too long"; break;
      default: e.message = "HTTP " + std::to_string(res.status) + ": the request could not be handled";
    }
    send_error(res, e);
    return httplib::Server::HandlerResponse::Handled;
  }));
  svr.set_exception_handler([this](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, ApiError{500, "server_error", "internal_error", "internal error: " + what});
  });
  svr.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    metrics->count_request(endpoint_label(req.path), res.status);
  });

  auto not_allowed = [this](const char* allowed) {
    return [this, allowed](const httplib::Request& req, httplib::Response& res) {
      res.set_header("Allow", allowed);
      send_error(res, ApiError{405, "invalid_request_error", "method_not_allowed",
                               req.method + " is not allowed on " + req.path + " (use " + allowed + ")"});
    };
  };
  for (const char* path : {"/v1/chat/completions", "/v1/completions"}) {
    svr.Get(path, not_allowed("POST"));
    svr.Put(path, not_allowed("POST"));
    svr.Delete(path, not_allowed("POST"));
    svr.Patch(path, not_allowed("POST"));
  }
  for (const char* path : {"/v1/models", "/health", "/metrics"}) {
    svr.Post(path, not_allowed("GET"));
    svr.Put(path, not_allowed("GET"));
    svr.Delete(path, not_allowed("GET"));
    svr.Patch(path, not_allowed("GET"));
  }

  svr.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (!model.load()) {
      return send_error(res, ApiError{503, "server_error", "model_loading", "the model is loading"});
    }
    res.set_content("{\"status\":\"ok\"}", "application/json");
  });
  svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    const ServedModel* m = model.load();
    Metrics::EngineTotals totals;
    if (m && m->engine_totals) totals = m->engine_totals();
    totals.loaded = m != nullptr;
    res.set_content(metrics->render(totals), "text/plain; version=0.0.4");
  });
  svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    const ServedModel* m = model.load();
    if (!m) return send_error(res, ApiError{503, "server_error", "model_loading", "the model is loading"});
    res.set_content(models_body(m->id, m->created), "application/json");
  });
  svr.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    completions(req, res, Endpoint::kChat);
  });
  svr.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    completions(req, res, Endpoint::kCompletion);
  });
}

namespace {

// One streaming response: the provider's state between calls.
struct StreamState {
  std::shared_ptr<GenJob> job;
  Endpoint endpoint;
  ResponseIds ids;
  bool include_usage = false;
  bool role_sent = false;
  bool finished = false;
};

// Writes the SSE events for `events`; false when the client is gone.
bool write_events(StreamState& st, std::vector<GenEvent>& events, httplib::DataSink& sink) {
  static const std::string kRole = "assistant";
  std::string out;
  for (GenEvent& ev : events) {
    const std::string* role = st.endpoint == Endpoint::kChat && !st.role_sent ? &kRole : nullptr;
    if (!ev.text.empty()) {
      out += stream_chunk(st.endpoint, st.ids, role, ev.text, FinishReason::kNone, st.include_usage);
      st.role_sent = true;
      role = nullptr;
    }
    if (!ev.done) continue;
    if (!ev.error.empty()) {
      out += stream_error(ev.shutting_down ? ApiError{503, "server_error", "shutting_down", ev.error}
                                           : ApiError{500, "server_error", "generation_failed", ev.error});
    } else {
      out += stream_chunk(st.endpoint, st.ids, role, "", ev.finish, st.include_usage);
      if (st.include_usage) out += usage_chunk(st.endpoint, st.ids, ev.usage);
    }
    out += stream_done();
    st.finished = true;
  }
  // An empty write would end the chunked body (the library reads length 0 as "no more data").
  return out.empty() || sink.write(out.data(), out.size());
}

}  // namespace

void HttpServer::Impl::completions(const httplib::Request& req, httplib::Response& res, Endpoint endpoint) {
  const int64_t received_ns = steady_now_ns();
  const ServedModel* m = model.load();
  if (!m) return send_error(res, ApiError{503, "server_error", "model_loading", "the model is loading"});
  ParseLimits limits;
  limits.max_tokens_limit = opts.max_tokens_limit;
  CompletionRequest r;
  ApiError err;
  if (!parse_completion_request(req.body, endpoint, limits, &r, &err)) return send_error(res, err);

  GenParams p;
  p.received_ns = received_ns;
  if (endpoint == Endpoint::kChat) {
    auto text = chat::render(m->chat_template, r.messages, true);
    if (!text.ok()) return send_error(res, invalid_request("invalid_messages", text.status().message()));
    const std::string& bos = m->chat_template.bos_text;
    const bool has_bos = !bos.empty() && text->compare(0, bos.size(), bos) == 0;
    p.prompt = m->tokenizer->encode(*text, !has_bos && m->tokenizer->add_bos_default(), true);
    p.stop = m->chat_template.stop_texts;
  } else {
    p.prompt = m->tokenizer->encode(r.prompt, m->tokenizer->add_bos_default(), false);
  }
  p.stop.insert(p.stop.end(), r.stop.begin(), r.stop.end());
  const int64_t n_ctx = m->scheduler->n_ctx();
  const int64_t n_prompt = static_cast<int64_t>(p.prompt.size());
  if (n_prompt >= n_ctx) {
    return send_error(res, invalid_request("context_length_exceeded",
                                           "the prompt is " + std::to_string(n_prompt) + " tokens; this server's context is " +
                                               std::to_string(n_ctx) + " tokens for prompt and output together (--ctx)"));
  }
  // Without max_tokens: until the context is full, capped by the server's limit.
  p.max_tokens = r.max_tokens.value_or(std::min(opts.max_tokens_limit, n_ctx - n_prompt));
  p.sampler.temperature = static_cast<float>(r.temperature);
  p.sampler.top_p = static_cast<float>(r.top_p);
  p.sampler.top_k = 0;
  p.sampler.repeat_penalty = 1.0f;
  p.sampler.seed = r.seed ? *r.seed : static_cast<uint64_t>(received_ns) ^ 0x5DEECE66Dull;

  auto job = m->scheduler->submit(std::move(p));
  if (!job.ok()) {
    if (job.status().code() == StatusCode::kResourceExhausted) {
      res.set_header("Retry-After", "1");
      return send_error(res, ApiError{503, "server_error", "queue_full", job.status().message()});
    }
    return send_error(res, invalid_request("invalid_request", job.status().message()));
  }
  ResponseIds ids{(endpoint == Endpoint::kChat ? "chatcmpl-" : "cmpl-") + random_hex(24),
                  static_cast<int64_t>(std::time(nullptr)), r.model.empty() ? m->id : r.model};

  if (!r.stream) {
    std::string text;
    for (;;) {
      std::vector<GenEvent> events;
      (*job)->wait(&events, 1000);
      for (GenEvent& ev : events) {
        text += ev.text;
        if (!ev.done) continue;
        if (ev.shutting_down) return send_error(res, ApiError{503, "server_error", "shutting_down", ev.error});
        if (!ev.error.empty()) return send_error(res, ApiError{500, "server_error", "generation_failed", ev.error});
        res.set_content(completion_body(endpoint, ids, text, ev.finish, ev.usage), "application/json");
        return;
      }
    }
  }

  // Streaming. The Request object is non-const inside the library (it is its local); dropping
  // Accept-Encoding keeps the SSE stream uncompressed, so each token leaves when it is sampled.
  const_cast<httplib::Request&>(req).headers.erase("Accept-Encoding");
  auto st = std::make_shared<StreamState>();
  st->job = *job;
  st->endpoint = endpoint;
  st->ids = ids;
  st->include_usage = r.include_usage;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [st](size_t, httplib::DataSink& sink) {
        if (st->finished) {
          sink.done();
          return true;
        }
        std::vector<GenEvent> events;
        st->job->wait(&events, 100);
        if (!write_events(*st, events, sink)) {
          st->job->cancel();  // the client is gone: the scheduler frees the slot next step
          return false;
        }
        if (st->finished) sink.done();
        return true;
      },
      [st](bool) {
        if (!st->job->finished()) st->job->cancel();
      });
}

}  // namespace flea::serve
