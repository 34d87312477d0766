#include "serve_point.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "flea/clock.h"
#include "serve_client.h"

namespace flea::harness {
namespace {

constexpr double kPollS = 0.05;
constexpr size_t kLogTailBytes = 1500;

void sleep_s(double s) { std::this_thread::sleep_for(std::chrono::duration<double>(s)); }

}  // namespace

StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::start(const std::vector<std::string>& argv,
                                                              const std::string& host, int port) {
  char log_tmpl[] = "/tmp/flea-harness-serve-XXXXXX";
  const int log_fd = mkstemp(log_tmpl);
  if (log_fd < 0) return internal_error(std::string("mkstemp failed: ") + std::strerror(errno));
  unlink(log_tmpl);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(log_fd);
    return internal_error(std::string("fork failed: ") + std::strerror(errno));
  }
  if (pid == 0) {
    setpgid(0, 0);
    // The harness killed outright (no destructor runs) must not leave a server behind.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGALRM, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    execv(args[0], args.data());
    std::fprintf(stderr, "cannot execute %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  setpgid(pid, pid);
  std::unique_ptr<ServerProcess> p(new ServerProcess());
  p->pid_ = pid;
  p->log_fd_ = log_fd;
  p->port_ = port;
  p->host_ = host;
  return p;
}

bool ServerProcess::reap(bool block) {
  if (exited_ || pid_ < 0) return true;
  struct rusage ru;
  std::memset(&ru, 0, sizeof(ru));
  int status = 0;
  pid_t w;
  while ((w = wait4(pid_, &status, block ? 0 : WNOHANG, &ru)) < 0 && errno == EINTR) {
  }
  if (w == pid_ || (w < 0 && errno == ECHILD)) {
    exited_ = true;
    wait_status_ = status;
    max_rss_bytes_ = static_cast<int64_t>(ru.ru_maxrss) * 1024;
    // Whatever it started in its group (none expected) goes with it.
    kill(-pid_, SIGKILL);
    return true;
  }
  return false;
}

bool ServerProcess::running() { return !reap(false); }

void ServerProcess::stop(double grace_s) {
  if (pid_ < 0) return;
  if (!reap(false)) {
    kill(-pid_, SIGTERM);
    const int64_t deadline = steady_now_ns() + static_cast<int64_t>(grace_s * 1e9);
    while (!reap(false) && steady_now_ns() < deadline) sleep_s(kPollS);
    if (!exited_) {
      kill(-pid_, SIGKILL);
      reap(true);
    }
  }
  if (log_fd_ >= 0) {
    close(log_fd_);
    log_fd_ = -1;
  }
}

std::string ServerProcess::log_tail(size_t n) const {
  if (log_fd_ < 0) return "";
  const off_t size = lseek(log_fd_, 0, SEEK_END);
  if (size <= 0) return "";
  const off_t from = size > static_cast<off_t>(n) ? size - static_cast<off_t>(n) : 0;
  std::string s(static_cast<size_t>(size - from), '\0');
  const ssize_t got = pread(log_fd_, s.data(), s.size(), from);
  s.resize(got > 0 ? static_cast<size_t>(got) : 0);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string ServerProcess::exit_text() const {
  if (!exited_) return "";
  if (WIFSIGNALED(wait_status_)) {
    const int sig = WTERMSIG(wait_status_);
    return "killed by signal " + std::to_string(sig) + " (" + strsignal(sig) + ")";
  }
  return "exited " + std::to_string(WEXITSTATUS(wait_status_));
}

Status ServerProcess::wait_healthy(double timeout_s, const std::function<bool()>& stopped) {
  const int64_t t0 = steady_now_ns();
  const int64_t deadline = t0 + static_cast<int64_t>(timeout_s * 1e9);
  int last_status = 0;
  std::string last_body;
  while (true) {
    if (!running()) {
      std::string e = "server " + exit_text() + " before /health answered 200";
      const std::string t = log_tail(kLogTailBytes);
      return io_error(t.empty() ? e : e + ": " + t);
    }
    if (stopped && stopped()) return cancelled("interrupted while waiting for the server's /health");
    last_status = http_get(host_, port_, "/health", 2, &last_body);
    if (last_status == 200) return Status();
    if (steady_now_ns() >= deadline) break;
    sleep_s(last_status == 0 ? kPollS : 4 * kPollS);
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f", timeout_s);
  std::string e = std::string("server not healthy within health_timeout_s ") + buf + " s (last /health: " +
                  (last_status == 0 ? std::string("no connection") : "HTTP " + std::to_string(last_status)) + ")";
  const std::string t = log_tail(kLogTailBytes);
  return io_error(t.empty() ? e + "; it wrote nothing" : e + "; its log ends: " + t);
}

StatusOr<int> pick_free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return internal_error(std::string("socket: ") + std::strerror(errno));
  sockaddr_in a;
  std::memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    const int e = errno;
    close(fd);
    return internal_error(std::string("cannot find a free port: ") + std::strerror(e));
  }
  close(fd);
  return static_cast<int>(ntohs(a.sin_port));
}

std::vector<std::string> serve_argv(const std::string& flea, const Json& p, const std::string& model_path) {
  const Json& sv = p["serve"];
  std::vector<std::string> a = {flea, "serve", "--model", model_path};
  push_residency_flags(&a, p);
  for (const char* k : {"parallel", "ctx"}) {
    a.push_back(std::string("--") + k);
    a.push_back(std::to_string(sv[k].get<int64_t>()));
  }
  a.push_back("--host");
  a.push_back("127.0.0.1");
  return a;
}

StatusOr<ServerProcess*> ServeSession::server_for(const std::vector<std::string>& argv, int port,
                                                  double health_timeout_s, const std::function<bool()>& stopped,
                                                  bool* reused, double* startup_s) {
  const std::string key = shell_quote(argv) + " port=" + std::to_string(port);
  *startup_s = 0;
  if (server_ && key == key_ && server_->running()) {
    *reused = true;
    return server_.get();
  }
  *reused = false;
  stop();
  // A configuration that did not come up is not retried for every concurrency value.
  if (key == failed_key_) return io_error(failed_error_ + " (not retried: the same server command failed to start for an earlier point)");
  int chosen = port;
  if (chosen == 0) {
    FLEA_ASSIGN_OR_RETURN(chosen, pick_free_port());
  }
  std::vector<std::string> full = argv;
  full.push_back("--port");
  full.push_back(std::to_string(chosen));
  const int64_t t0 = steady_now_ns();
  FLEA_ASSIGN_OR_RETURN(std::unique_ptr<ServerProcess> s, ServerProcess::start(full, "127.0.0.1", chosen));
  Status healthy = s->wait_healthy(health_timeout_s, stopped);
  *startup_s = static_cast<double>(steady_now_ns() - t0) / 1e9;
  if (!healthy.ok()) {
    s->stop();
    if (healthy.code() != StatusCode::kCancelled) {
      failed_key_ = key;
      failed_error_ = healthy.message();
    }
    return healthy;
  }
  server_ = std::move(s);
  key_ = key;
  return server_.get();
}

void ServeSession::stop() {
  if (server_) server_->stop();
  server_.reset();
  key_.clear();
}

namespace {

Json serve_failed(const RunSpec& r, const std::string& error, const std::vector<std::string>& argv) {
  Json rec;
  rec["id"] = r.id;
  rec["point"] = r.point;
  rec["status"] = "failed";
  rec["error"] = error;
  rec["engine"] = r.engine;
  rec["model"] = {{"path", r.model.path}};
  rec["command"] = shell_quote(argv);
  return rec;
}

// The server's bytes-read counter, -1 when /metrics has none (or does not answer).
double scrape_bytes_read(const ServerProcess& s) {
  std::string body;
  if (http_get(s.host(), s.port(), "/metrics", 10, &body) != 200) return -1;
  return prometheus_value(body, kServeBytesReadMetric);
}

}  // namespace

Json run_serve_point(const RunSpec& r, const RunEnv& env, ServeSession* session) {
  const Json& sv = r.point["serve"];
  const std::vector<std::string> argv = serve_argv(env.flea, r.point, r.model.path);
  if (r.point.value("memory_limit_mb", int64_t{0}) > 0) {
    return serve_failed(r, "memory_limit_mb is not supported on serving points yet (the server runs outside a cgroup)", argv);
  }
  const auto stopped = [] { return stop_signal() != 0; };
  bool reused = false;
  double startup_s = 0;
  auto server = session->server_for(argv, static_cast<int>(sv["port"].get<int64_t>()),
                                    sv["health_timeout_s"].get<double>(), stopped, &reused, &startup_s);
  if (!server.ok()) {
    if (stop_signal() != 0) {
      Json rec = serve_failed(r, "interrupted", argv);
      rec["status"] = "skipped";
      return rec;
    }
    return serve_failed(r, "flea serve: " + server.status().message(), argv);
  }
  ServerProcess* srv = *server;
  LoadOptions lo;
  lo.host = srv->host();
  lo.port = srv->port();
  lo.concurrency = static_cast<int>(r.point["concurrency"].get<int64_t>());
  lo.prompt = make_prompt_text(sv["prompt_tokens"].get<int64_t>());
  lo.max_tokens = sv["output_tokens"].get<int64_t>();
  lo.timeout_s = env.settings["timeout_s"].get<int>();
  lo.stopped = stopped;
  Json warnings = Json::array();

  const int64_t warmup = sv["warmup_requests"].get<int64_t>();
  int64_t warmup_errors = 0;
  if (warmup > 0) {
    LoadOptions w = lo;
    w.requests = static_cast<int>(warmup);
    w.concurrency = static_cast<int>(std::min<int64_t>(warmup, lo.concurrency));
    const LoadResult wl = run_load(w);
    for (const auto& s : wl.samples) warmup_errors += !s.error.empty();
  }
  const double bytes_before = scrape_bytes_read(*srv);
  lo.requests = static_cast<int>(sv["requests"].get<int64_t>());
  const LoadResult load = run_load(lo);
  const double bytes_after = scrape_bytes_read(*srv);
  const bool alive = srv->running();
  if (stop_signal() != 0 && load.interrupted) {
    Json rec = serve_failed(r, "interrupted", argv);
    rec["status"] = "skipped";
    return rec;
  }

  Json serving = serving_summary(load, lo.concurrency);
  serving["warmup_requests"] = warmup;
  serving["warmup_errors"] = warmup_errors;
  serving["prompt_tokens_requested"] = sv["prompt_tokens"];
  serving["output_tokens_requested"] = sv["output_tokens"];
  const int64_t out_tokens = serving["output_tokens"].get<int64_t>();
  if (bytes_before >= 0 && bytes_after >= 0) {
    serving["bytes_read"] = bytes_after - bytes_before;
    serving["bytes_read_per_token"] =
        out_tokens > 0 ? Json((bytes_after - bytes_before) / static_cast<double>(out_tokens)) : Json(nullptr);
  } else {
    serving["bytes_read"] = nullptr;
    serving["bytes_read_per_token"] = nullptr;
    warnings.push_back(std::string("the server's /metrics has no ") + kServeBytesReadMetric +
                       ": bytes_read_per_token is unknown");
  }
  // The prompt is text; what the server's tokenizer made of it is in the usage chunks.
  std::vector<double> prompt_seen;
  for (const auto& s : load.samples) {
    if (s.usage_prompt_tokens >= 0) prompt_seen.push_back(static_cast<double>(s.usage_prompt_tokens));
  }
  serving["prompt_tokens_effective"] = prompt_seen.empty() ? Json(nullptr) : Json(prompt_seen.front());

  Json rec;
  rec["id"] = r.id;
  rec["point"] = r.point;
  rec["engine"] = r.engine;
  rec["model"] = {{"path", r.model.path}};
  rec["command"] = shell_quote(argv) + " --port " + std::to_string(srv->port());
  rec["server"] = {{"reused", reused}, {"startup_s", reused ? Json(nullptr) : Json(startup_s)},
                   {"port", srv->port()}, {"pid", srv->pid()}, {"alive_after", alive}};
  rec["serving"] = serving;
  rec["samples"] = {{"requests", request_samples_json(load)}};
  rec["harness"] = {{"load_wall_ns", load.wall_ns}};
  const int64_t ok = serving["ok"].get<int64_t>();
  if (!alive) {
    rec["status"] = "failed";
    rec["error"] = "flea serve " + srv->exit_text() + " during the point: " + srv->log_tail(kLogTailBytes);
    session->stop();
  } else if (ok == 0) {
    rec["status"] = "failed";
    rec["error"] = "every request failed; first: " +
                   (serving["first_errors"].empty() ? std::string("none sent") : serving["first_errors"][0].get<std::string>());
  } else {
    rec["status"] = "ok";
    rec["error"] = nullptr;
    if (serving["errors"].get<int64_t>() > 0) {
      warnings.push_back(std::to_string(serving["errors"].get<int64_t>()) + " of " +
                         std::to_string(serving["requests"].get<int64_t>()) + " requests failed; first: " +
                         serving["first_errors"][0].get<std::string>());
    }
  }
  if (!warnings.empty()) rec["warnings"] = warnings;
  return rec;
}

}  // namespace flea::harness
