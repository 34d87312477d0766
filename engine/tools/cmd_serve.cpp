// flea serve: an OpenAI-compatible HTTP server over one model (engine/src/serve/). Threads: the
// accept thread and the connection threads of the HTTP layer, one scheduler thread that owns the
// model session (continuous batching over --parallel sequences), and the main thread, which binds,
// loads the model while /health answers 503, then waits for SIGINT/SIGTERM and shuts down.
#include <pthread.h>
#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <ctime>

#include "chat/chat_template.h"
#include "commands.h"
#include "engine_cli.h"
#include "serve/http_server.h"
#include "serve/metrics.h"
#include "serve/scheduler.h"
#include "tokenizer/tokenizer.h"

namespace flea::cli {
namespace {

// Idle keep-alive connections each hold a descriptor: allow as many as the hard limit does.
void raise_fd_limit() {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

std::string basename_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

int cmd_serve(int argc, char** argv) {
  CLI::App app("Serve the model over an OpenAI-compatible HTTP API: POST /v1/chat/completions, "
               "POST /v1/completions, GET /v1/models, GET /health (503 while loading), GET /metrics "
               "(Prometheus). Up to --parallel requests are decoded together in one batch per step; "
               "more wait in a queue of --queue. SIGINT/SIGTERM stop it.",
               "flea serve");
  EngineOptions opts;
  serve::HttpOptions http;
  int parallel = 4, queue = 64;
  int64_t ctx = 2048, batch_rows = 64;
  std::string template_name;
  add_engine_flags(app, &opts);
  app.add_option("--host", http.host, "address to listen on (127.0.0.1: this machine only; 0.0.0.0: all)")
      ->capture_default_str();
  app.add_option("--port", http.port, "TCP port (0: any free port, printed at startup)")
      ->check(CLI::Range(0, 65535))->capture_default_str();
  app.add_option("--parallel", parallel, "sequences decoded together (KV cache slots of --ctx positions each)")
      ->check(CLI::Range(1, 256))->capture_default_str();
  app.add_option("--ctx", ctx, "context per sequence in tokens (prompt and output together)")
      ->check(CLI::Range(int64_t{16}, int64_t{1} << 20))->capture_default_str();
  app.add_option("--queue", queue, "requests waiting for a slot beyond --parallel; more get 503")
      ->check(CLI::Range(0, 1 << 20))->capture_default_str();
  app.add_option("--batch-rows", batch_rows, "most rows (decode tokens + prompt chunks) in one forward pass")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 16))->capture_default_str();
  app.add_option("--api-key", http.api_key, "require 'Authorization: Bearer KEY' on /v1/* and /metrics");
  app.add_option("--chat-template", template_name,
                 "chat template family (" + chat::family_names() + "); default: detected from the file's "
                 "tokenizer.chat_template");
  app.add_option("--max-body-bytes", http.max_body_bytes, "largest request body; larger get 413")
      ->check(CLI::Range(size_t{1024}, size_t{1} << 30))->capture_default_str();
  app.add_option("--max-tokens-limit", http.max_tokens_limit,
                 "largest max_tokens a request may ask for (also the cap when it gives none)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24))->capture_default_str();
  app.add_option("--http-threads", http.max_http_threads,
                 "most connection threads (each open keep-alive connection holds one)")
      ->check(CLI::Range(8, 65536))->capture_default_str();
  app.add_option("--keep-alive-s", http.keep_alive_s, "close a keep-alive connection idle this long")
      ->check(CLI::Range(1, 3600))->capture_default_str();
  app.add_option("--io-timeout-s", http.io_timeout_s, "drop a client that neither sends nor reads for this long")
      ->check(CLI::Range(1, 3600))->capture_default_str();
  if (int rc = parse_or_exit(app, argc, argv); rc >= 0) return rc;
  if (opts.backend != "cpu") {
    std::fprintf(stderr, "flea serve: --backend %s: serving needs batched decoding of several sequences, "
                         "which only the cpu backend has\n", opts.backend.c_str());
    return kExitUsage;
  }
  chat::ChatTemplate tmpl;
  if (!template_name.empty()) {
    auto t = chat::template_by_name(template_name);
    if (!t.ok()) return report_error("serve --chat-template", t.status(), kExitUsage);
    tmpl = *t;
  }

  // A vanished client must fail a write, not kill the process; signals go to sigwait below only.
  std::signal(SIGPIPE, SIG_IGN);
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);  // before any thread exists: all inherit it
  raise_fd_limit();

  serve::Metrics metrics;
  serve::HttpServer server(http, &metrics);
  if (Status st = server.bind(); !st.ok()) return report_error("serve", st, kExitFailure);
  server.start();
  std::fprintf(stderr, "flea serve: listening on http://%s:%d (loading %s)\n", http.host.c_str(), server.port(),
               opts.model.c_str());

  opts.n_ctx = ctx;
  opts.n_seq = parallel;
  opts.n_rows = std::max<int64_t>(batch_rows, parallel + 1);
  opts.n_logit_rows = opts.n_rows;  // every row's logits are kept (scheduler.cpp)
  auto engine = open_engine(opts);
  if (!engine.ok()) return report_error("serve", engine.status(), kExitUsage);
  auto tokenizer = Tokenizer::from_gguf(engine->model->file);
  if (!tokenizer.ok()) return report_error("serve: the model's vocabulary", tokenizer.status(), kExitUsage);
  if (template_name.empty()) {
    auto source = engine->model->file.get_string("tokenizer.chat_template");
    std::string warning;
    tmpl = chat::detect_template(source.ok() ? *source : "", &warning);
    if (!warning.empty()) std::fprintf(stderr, "flea serve: warning: %s\n", warning.c_str());
  }
  auto session = make_session(*engine, ctx, parallel);
  if (!session.ok()) return report_error("serve", session.status(), kExitUsage);

  serve::Scheduler::Options so;
  so.max_queue = queue;
  so.max_batch_rows = batch_rows;
  // A prompt row joins the sampling pass while its wasted output-matrix work (n_vocab x n_embd)
  // stays below one more pass over the layers' weights.
  const auto& hp = engine->model->hp;
  const double layer_params = static_cast<double>(hp.n_layer) *
      static_cast<double>(2 * hp.n_embd * hp.n_embd + 2 * hp.n_embd * hp.n_embd_kv() + 3 * hp.n_embd * hp.n_ff);
  so.joint_prefill_rows = static_cast<int64_t>(layer_params / static_cast<double>(hp.n_vocab * hp.n_embd));
  serve::Scheduler scheduler(session->get(), &*tokenizer, engine->model->hp.n_vocab, so, &metrics);
  scheduler.start();
  serve::ServedModel served;
  served.id = basename_of(opts.model);
  served.created = static_cast<int64_t>(std::time(nullptr));
  served.scheduler = &scheduler;
  served.tokenizer = &*tokenizer;
  served.chat_template = tmpl;
  Telemetry* telemetry = engine->telemetry.get();
  served.engine_totals = [telemetry] {
    serve::Metrics::EngineTotals t;
    t.bytes_read = telemetry->read_bytes();
    t.stall_seconds = static_cast<double>(telemetry->stall_ns()) / 1e9;
    return t;
  };
  server.set_model(&served);
  std::fprintf(stderr, "flea serve: ready: %s, %d parallel sequences of %lld tokens, chat template %s, weights %s\n",
               served.id.c_str(), parallel, static_cast<long long>(ctx), tmpl.name.c_str(),
               engine->weights->name().c_str());

  int sig = 0;
  sigwait(&stop_signals, &sig);
  std::fprintf(stderr, "flea serve: %s: shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  scheduler.stop();  // first: connection threads waiting on jobs get their final event
  server.stop();
  std::fprintf(stderr, "flea serve: stopped\n");
  return kExitOk;
}

}  // namespace
}  // namespace flea::cli

FLEA_REGISTER_COMMAND(serve, "serve the model over an OpenAI-compatible HTTP API", flea::cli::cmd_serve);
