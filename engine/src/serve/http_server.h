// The HTTP side of `flea serve`: routes, API-key check, body/queue limits, JSON and SSE responses,
// over cpp-httplib (see http_server.cpp for why that library and how streaming and disconnects work
// with it). The server listens before the model is loaded: /health answers 503 until set_model().
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "chat/chat_template.h"
#include "flea/status.h"
#include "serve/metrics.h"
#include "serve/scheduler.h"
#include "tokenizer/tokenizer.h"

namespace flea::serve {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                      // 0: any free port (port() tells which)
  std::string api_key;                  // non-empty: /v1/* and /metrics need "Authorization: Bearer <key>"
  size_t max_body_bytes = 1 << 20;      // larger bodies get 413
  int64_t max_tokens_limit = 4096;      // max_tokens above this get 400; also the default cap
  int max_http_threads = 1024;          // connection threads (each keep-alive connection holds one)
  int keep_alive_s = 5;                 // an idle connection is closed after this
  int io_timeout_s = 10;                // a client that stops reading or sending for this long is dropped
};

// The model side, once loaded.
struct ServedModel {
  std::string id;        // what /v1/models lists and responses echo
  int64_t created = 0;   // unix seconds
  Scheduler* scheduler = nullptr;
  const Tokenizer* tokenizer = nullptr;
  chat::ChatTemplate chat_template;
  std::function<Metrics::EngineTotals()> engine_totals;  // bytes read and stall, for /metrics
};

class HttpServer {
 public:
  HttpServer(HttpOptions opts, Metrics* metrics);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  Status bind();  // the listening socket (errors name host and port)
  int port() const;
  void start();   // accepts connections on its own thread
  // From now on completions are served; `model` must outlive stop().
  void set_model(const ServedModel* model);
  void stop();    // stops accepting, ends open streams, joins the connection threads

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace flea::serve
