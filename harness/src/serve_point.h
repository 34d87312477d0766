// Serving points (scenario key `serve:`): `flea serve` started once per server configuration and
// reused by the following points with the same command line (the concurrency sweep), then loaded
// by serve_client's clients. The server is always stopped: SIGTERM to its process group, SIGKILL
// after a grace period, on a failed point, a changed configuration, the end of the sweep or Ctrl-C.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "flea/status.h"
#include "runner.h"
#include "scenario.h"
#include "sweep.h"

namespace flea::harness {

// One server subprocess, in its own process group, its stdout and stderr in one scratch file.
class ServerProcess {
 public:
  // Forks and execs argv (no shell); `port` is where it will listen (it is in argv already).
  static StatusOr<std::unique_ptr<ServerProcess>> start(const std::vector<std::string>& argv,
                                                        const std::string& host, int port);
  ~ServerProcess() { stop(); }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Polls GET /health until it answers 200. Fails with the server's log tail when it exits first,
  // when timeout_s pass, or when `stopped` turns true (the server keeps running; stop() ends it).
  Status wait_healthy(double timeout_s, const std::function<bool()>& stopped);
  // SIGTERM to the group, SIGKILL when it has not exited after grace_s; reaps it. Idempotent.
  void stop(double grace_s = 10);
  // False once it exited (reaped here).
  bool running();
  // The last n bytes of what it wrote to stdout and stderr.
  std::string log_tail(size_t n) const;
  // "exited 2" / "killed by signal 9 (Killed)" once it ended, else "".
  std::string exit_text() const;

  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  const std::string& host() const { return host_; }
  int64_t max_rss_bytes() const { return max_rss_bytes_; }

 private:
  ServerProcess() = default;
  bool reap(bool block);

  pid_t pid_ = -1;
  int log_fd_ = -1;
  int port_ = 0;
  std::string host_;
  bool exited_ = false;
  int wait_status_ = 0;
  int64_t max_rss_bytes_ = 0;
};

// A TCP port on 127.0.0.1 that nothing listens on now (bind to port 0, read it back, close).
StatusOr<int> pick_free_port();

// `flea serve` arguments for a serving point, without --port (the reuse key is these arguments).
std::vector<std::string> serve_argv(const std::string& flea, const Json& point, const std::string& model_path);

// The server shared by consecutive serving points.
class ServeSession {
 public:
  // The running server when `argv` (without --port) matches the last one and it is still alive,
  // else the old one stopped and a new one started and waited for. *reused says which.
  StatusOr<ServerProcess*> server_for(const std::vector<std::string>& argv, int port, double health_timeout_s,
                                      const std::function<bool()>& stopped, bool* reused, double* startup_s);
  // Stops the server (if any).
  void stop();
  ~ServeSession() { stop(); }

 private:
  std::string key_;
  std::unique_ptr<ServerProcess> server_;
  std::string failed_key_, failed_error_;  // the last command that never became healthy
};

// Runs one serving point: server (reused or started), warmup requests, the timed load with the
// /metrics bytes-read counter read before and after, and the record (status ok|failed|skipped).
Json run_serve_point(const RunSpec& r, const RunEnv& env, ServeSession* session);

}  // namespace flea::harness
