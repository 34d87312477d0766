#include "runner.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "cgroup.h"
#include "flea/clock.h"
#include "env.h"
#include "memory_limit.h"
#include "serve_point.h"
#include "stats.h"

namespace flea::harness {
namespace {

volatile sig_atomic_t g_stop = 0;
volatile sig_atomic_t g_alarm = 0;

void on_stop(int sig) { g_stop = sig; }
void on_alarm(int) { g_alarm = 1; }

std::string slurp_fd(int fd) {
  std::string s;
  lseek(fd, 0, SEEK_SET);
  char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) s.append(buf, static_cast<size_t>(n));
  return s;
}

std::string tail(const std::string& s, size_t n) {
  std::string t = s.size() > n ? s.substr(s.size() - n) : s;
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
  return t;
}

Json num_or_null(const Json& j, const char* key) {
  if (j.is_object() && j.contains(key) && j[key].is_number()) return j[key];
  return nullptr;
}

std::vector<double> as_doubles(const Json& j) {
  std::vector<double> v;
  if (!j.is_array()) return v;
  for (const auto& x : j) {
    if (x.is_number()) v.push_back(x.get<double>());
  }
  return v;
}

Json summary_json(const Summary& s) {
  if (s.n == 0) return nullptr;
  return Json{{"median", s.median}, {"p95", s.p95}, {"p99", s.p99}, {"min", s.min}, {"max", s.max},
              {"mad", s.mad}, {"mean", s.mean}, {"n", s.n}};
}

std::string real(const std::string& p) {
  char buf[PATH_MAX];
  return realpath(p.c_str(), buf) ? std::string(buf) : p;
}

}  // namespace

void install_signal_handlers() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_stop;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: wait4 returns EINTR
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sa.sa_handler = on_alarm;
  sigaction(SIGALRM, &sa, nullptr);
}

int stop_signal() { return g_stop; }

std::string shell_quote(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) {
    bool plain = !a.empty() && a.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@") == std::string::npos;
    s += (s.empty() ? "" : " ") + (plain ? a : "'" + a + "'");
  }
  return s;
}

ChildResult run_child(const std::vector<std::string>& argv, int timeout_s, const MemoryCgroup* cgroup) {
  ChildResult r;
  char out_tmpl[] = "/tmp/flea-harness-out-XXXXXX";
  char err_tmpl[] = "/tmp/flea-harness-err-XXXXXX";
  // Files, not pipes: the harness only waits while the engine runs (no reader thread competing
  // with it), and a large output cannot block the child.
  int out_fd = mkstemp(out_tmpl), err_fd = mkstemp(err_tmpl);
  if (out_fd < 0 || err_fd < 0) {
    r.start_error = std::string("mkstemp failed: ") + std::strerror(errno);
    if (out_fd >= 0) close(out_fd);
    if (err_fd >= 0) close(err_fd);
    return r;
  }
  unlink(out_tmpl);
  unlink(err_tmpl);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  // Joining the cgroup: the child writes "0" (itself) to cgroup.procs and, if that fails, its
  // errno down a close-on-exec pipe; the parent reads until exec closes the pipe.
  const int procs_fd = cgroup != nullptr ? cgroup->procs_fd() : -1;
  int join_pipe[2] = {-1, -1};
  if (procs_fd >= 0 && pipe2(join_pipe, O_CLOEXEC) != 0) {
    r.start_error = std::string("pipe2 failed: ") + std::strerror(errno);
    close(out_fd);
    close(err_fd);
    return r;
  }
  const int64_t t0 = steady_now_ns();
  pid_t pid = fork();
  if (pid < 0) {
    r.start_error = std::string("fork failed: ") + std::strerror(errno);
    close(out_fd);
    close(err_fd);
    if (join_pipe[0] >= 0) {
      close(join_pipe[0]);
      close(join_pipe[1]);
    }
    return r;
  }
  if (pid == 0) {
    if (procs_fd >= 0 && write(procs_fd, "0", 1) != 1) {
      const int e = errno;
      (void)!write(join_pipe[1], &e, sizeof(e));
      _exit(127);
    }
    setpgid(0, 0);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGALRM, SIG_DFL);
    dup2(out_fd, 1);
    dup2(err_fd, 2);
    execv(args[0], args.data());
    std::fprintf(stderr, "cannot execute %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  setpgid(pid, pid);
  if (join_pipe[0] >= 0) {
    close(join_pipe[1]);
    int e = 0;
    ssize_t n;
    while ((n = read(join_pipe[0], &e, sizeof(e))) < 0 && errno == EINTR) {
    }
    close(join_pipe[0]);
    if (n == static_cast<ssize_t>(sizeof(e))) {
      int status = 0;
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      r.start_error = "cannot join the memory cgroup: write to " + cgroup->path() + "/cgroup.procs: " + std::strerror(e);
      close(out_fd);
      close(err_fd);
      return r;
    }
  }
  r.started = true;
  g_alarm = 0;
  if (timeout_s > 0) alarm(static_cast<unsigned>(timeout_s));
  int status = 0;
  struct rusage ru;
  std::memset(&ru, 0, sizeof(ru));
  bool sent_term = false, sent_kill = false;
  while (true) {
    pid_t w = wait4(pid, &status, 0, &ru);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) break;
    if (g_alarm) {
      g_alarm = 0;
      if (sent_term && !sent_kill) {  // did not stop on SIGTERM within the grace period
        kill(-pid, SIGKILL);
        sent_kill = true;
      } else if (!sent_term) {
        r.timed_out = true;
        kill(-pid, SIGKILL);
        sent_kill = true;
      }
    }
    if (g_stop && !sent_term && !sent_kill) {
      r.interrupted = true;
      kill(-pid, SIGTERM);
      sent_term = true;
      alarm(2);
    }
  }
  alarm(0);
  r.wall_ns = steady_now_ns() - t0;
  r.max_rss_bytes = static_cast<int64_t>(ru.ru_maxrss) * 1024;
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  else if (WIFSIGNALED(status)) r.term_signal = WTERMSIG(status);
  r.out = slurp_fd(out_fd);
  r.err = slurp_fd(err_fd);
  close(out_fd);
  close(err_fd);
  return r;
}

StatusOr<Reference> load_reference(const std::string& dir_or_manifest) {
  Reference ref;
  std::string manifest = dir_or_manifest;
  struct stat st;
  if (stat(dir_or_manifest.c_str(), &st) != 0) {
    return not_found("reference '" + dir_or_manifest + "': " + std::strerror(errno));
  }
  if (S_ISDIR(st.st_mode)) {
    ref.dir = dir_or_manifest;
    manifest = dir_or_manifest + "/manifest.json";
  } else {
    const size_t slash = dir_or_manifest.rfind('/');
    ref.dir = slash == std::string::npos ? "." : dir_or_manifest.substr(0, slash);
  }
  const std::string text = read_file_text(manifest);
  if (text.empty()) return not_found("reference manifest " + manifest + " is missing or empty");
  try {
    ref.manifest = Json::parse(text);
  } catch (const std::exception& e) {
    return data_loss("reference manifest " + manifest + ": " + e.what());
  }
  if (!ref.manifest.contains("cases") || !ref.manifest["cases"].is_array()) {
    return data_loss("reference manifest " + manifest + ": no 'cases' list");
  }
  return ref;
}

const Json* find_reference_case(const Reference& ref, const std::string& model_path) {
  const std::string want = real(model_path);
  for (const auto& c : ref.manifest["cases"]) {
    if (c.contains("model") && real(ref.dir + "/" + c["model"].get<std::string>()) == want) return &c;
  }
  return nullptr;
}

StatusOr<LogitCompare> compare_logits(const std::vector<float>& got, const std::vector<float>& ref, int64_t n_vocab) {
  if (n_vocab <= 0 || ref.size() % static_cast<size_t>(n_vocab) != 0) {
    return invalid_argument("reference logits: " + std::to_string(ref.size()) + " floats is not a multiple of n_vocab " +
                            std::to_string(n_vocab));
  }
  if (got.size() != ref.size()) {
    return invalid_argument("engine logits have " + std::to_string(got.size()) + " floats, the reference " +
                            std::to_string(ref.size()) + " (" + std::to_string(ref.size() / n_vocab) + " rows × " +
                            std::to_string(n_vocab) + ")");
  }
  LogitCompare c;
  c.rows = static_cast<int64_t>(ref.size()) / n_vocab;
  double num = 0, den = 0, kl_sum = 0;
  int64_t agree = 0;
  for (int64_t r = 0; r < c.rows; ++r) {
    const float* g = got.data() + r * n_vocab;
    const float* f = ref.data() + r * n_vocab;
    int64_t ag = 0, af = 0;
    double mg = g[0], mf = f[0];
    for (int64_t i = 0; i < n_vocab; ++i) {
      const double d = static_cast<double>(g[i]) - f[i];
      num += d * d;
      den += static_cast<double>(f[i]) * f[i];
      c.max_abs = std::max(c.max_abs, std::fabs(d));
      if (g[i] > g[ag]) ag = i;
      if (f[i] > f[af]) af = i;
      mg = std::max(mg, static_cast<double>(g[i]));
      mf = std::max(mf, static_cast<double>(f[i]));
    }
    agree += ag == af;
    double zg = 0, zf = 0;
    for (int64_t i = 0; i < n_vocab; ++i) {
      zg += std::exp(g[i] - mg);
      zf += std::exp(f[i] - mf);
    }
    const double lzg = std::log(zg) + mg, lzf = std::log(zf) + mf;
    double kl = 0;
    for (int64_t i = 0; i < n_vocab; ++i) {
      const double lp = f[i] - lzf, lq = g[i] - lzg;
      kl += std::exp(lp) * (lp - lq);
    }
    kl_sum += std::max(0.0, kl);
  }
  c.nmse = den > 0 ? num / den : (num > 0 ? INFINITY : 0);
  c.top1 = c.rows > 0 ? static_cast<double>(agree) / static_cast<double>(c.rows) : 0;
  c.kl = c.rows > 0 ? kl_sum / static_cast<double>(c.rows) : 0;
  return c;
}

double nmse_tolerance(const std::string& ft) {
  return (ft == "F16" || ft == "BF16" || ft == "Q8_0" || ft == "F32") ? 2e-4 : 2e-3;
}

std::string file_type_name(int64_t id) {
  switch (id) {
    case 0: return "F32";
    case 1: return "F16";
    case 2: return "Q4_0";
    case 3: return "Q4_1";
    case 7: return "Q8_0";
    case 8: return "Q5_0";
    case 9: return "Q5_1";
    case 10: return "Q2_K";
    case 11: return "Q3_K_S";
    case 12: return "Q3_K_M";
    case 13: return "Q3_K_L";
    case 14: return "Q4_K_S";
    case 15: return "Q4_K_M";
    case 16: return "Q5_K_S";
    case 17: return "Q5_K_M";
    case 18: return "Q6_K";
    case 32: return "BF16";
    default: return "ftype" + std::to_string(id);
  }
}

void push_residency_flags(std::vector<std::string>* a, const Json& p) {
  auto add = [&](const char* flag, const std::string& v) {
    a->push_back(flag);
    a->push_back(v);
  };
  add("--backend", p["backend"].get<std::string>());
  add("--threads", std::to_string(p["threads"].get<int64_t>()));
  add("--residency", p["residency"].get<std::string>());
  add("--io", p["io"].get<std::string>());
  add("--prefetch", std::to_string(p["prefetch"].get<int64_t>()));
  add("--huge-pages", p.value("huge_pages", std::string("on")));
  add("--queue-depth", std::to_string(p.value("queue_depth", int64_t{4})));
  add("--expert-residency", p.value("expert_residency", std::string("expert")));
  add("--expert-cache", std::to_string(p.value("expert_cache", int64_t{-1})));
  add("--expert-policy", p.value("expert_policy", std::string("lru")));
  add("--vram-budget-mb", std::to_string(p["vram_budget_mb"].get<int64_t>()));
  add("--ram-budget-mb", std::to_string(p["ram_budget_mb"].get<int64_t>()));
  const double th = p.value("throttle_gb_s", 0.0);
  if (th > 0) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%g", th);
    add("--throttle-gb-s", buf);
  }
}

std::vector<std::string> bench_argv(const std::string& flea, const Json& p, const std::string& model_path,
                                    const std::string& trace_path, const std::string& draft_path) {
  std::vector<std::string> a = {flea, "bench", "--model", model_path};
  auto add = [&](const char* flag, const std::string& v) {
    a.push_back(flag);
    a.push_back(v);
  };
  add("--prompt", std::to_string(p["prompt"].get<int64_t>()));
  add("--gen", std::to_string(p["gen"].get<int64_t>()));
  add("--reps", std::to_string(p["reps"].get<int64_t>()));
  add("--warmup", std::to_string(p["warmup"].get<int64_t>()));
  add("--kv", p["kv"].get<std::string>());
  push_residency_flags(&a, p);
  // Flags at their engine default are left out so older engines without them still run.
  if (p["batch"].get<int64_t>() != 1) add("--batch", std::to_string(p["batch"].get<int64_t>()));
  if (p["compute"].get<std::string>() == "none") add("--compute", "none");
  if (!draft_path.empty()) {
    add("--draft", draft_path);
    add("--draft-k", std::to_string(p.value("draft_k", int64_t{4})));
  }
  if (!trace_path.empty()) add("--trace", trace_path);
  return a;
}

std::string buffered_above_fio_note(const std::string& io, double fraction_of_fio) {
  if ((io != "pread" && io != "mmap") || !(fraction_of_fio > 1.0)) return "";
  char pct[32];
  std::snprintf(pct, sizeof(pct), "%.0f%%", fraction_of_fio * 100);
  return std::string("read GB/s is ") + pct + " of fio's " + io +
         " figure: buffered reads served from the page cache (the file was not dropped between reps, or fits in "
         "RAM), while fio read it with the cache dropped; not a storage speed";
}

Json record_from_bench(const RunSpec& r, const Json& b, const ChildResult& child, const RunEnv& env) {
  Json rec;
  rec["id"] = r.id;
  rec["point"] = r.point;
  rec["status"] = "ok";
  rec["error"] = nullptr;
  rec["engine"] = r.engine;
  Json model;
  model["path"] = r.model.path;
  model["file_bytes"] = num_or_null(b, "file_bytes");
  if (b.contains("file_type") && b["file_type"].is_string()) model["file_type"] = b["file_type"];
  else if (b.contains("file_type_id") && b["file_type_id"].is_number_integer()) model["file_type"] = file_type_name(b["file_type_id"].get<int64_t>());
  else model["file_type"] = nullptr;
  model["n_layer"] = num_or_null(b, "n_layer");
  // MoE: synthetic routing (and its skew) or the model's own, as the engine read it from the file.
  if (b.contains("routing") && b["routing"].is_object()) {
    model["routing"] = b["routing"].value("synthetic", false) ? "synthetic" : "model";
    model["expert_skew"] = num_or_null(b["routing"], "expert_skew");
  }
  rec["model"] = model;
  const Json pp = b.contains("pp_samples_ns") && b["pp_samples_ns"].is_array() ? b["pp_samples_ns"] : Json::array();
  const Json tg = b.contains("tg_samples_ns") && b["tg_samples_ns"].is_array() ? b["tg_samples_ns"] : Json::array();
  rec["samples_ns"] = {{"pp", pp}, {"tg", tg}};
  const int64_t gen = r.point["gen"].get<int64_t>();
  const int64_t prompt = r.point["prompt"].get<int64_t>();
  std::vector<double> tg_ms, pp_ms;
  for (double v : as_doubles(tg)) if (gen > 0) tg_ms.push_back(v / 1e6 / static_cast<double>(gen));
  for (double v : as_doubles(pp)) if (prompt > 0) pp_ms.push_back(v / 1e6 / static_cast<double>(prompt));
  const Summary tgs = summarize(tg_ms), pps = summarize(pp_ms);
  Json summary;
  summary["tg_ms_per_token"] = summary_json(tgs);
  summary["pp_ms_per_token"] = summary_json(pps);
  summary["pp_tok_s"] = pps.n > 0 ? Json(1e3 / pps.median) : num_or_null(b, "pp_tok_s");
  summary["tg_tok_s"] = tgs.n > 0 ? Json(1e3 / tgs.median) : num_or_null(b, "tg_tok_s");
  summary["engine_pp_tok_s"] = num_or_null(b, "pp_tok_s");
  summary["engine_tg_tok_s"] = num_or_null(b, "tg_tok_s");
  rec["summary"] = summary;
  Json io;
  io["read_bytes"] = num_or_null(b, "read_bytes");
  io["read_bytes_per_token"] = num_or_null(b, "read_bytes_per_token");
  io["read_gb_s"] = num_or_null(b, "read_gb_s");
  io["fraction_of_fio"] = nullptr;
  std::string fio_note;  // a warning on the record, set once `warnings` exists below
  if (io["read_gb_s"].is_number() && env.ceilings.contains("fio")) {
    for (const auto& f : env.ceilings["fio"]) {
      if (f["path"] == r.model.path && f["io"] == r.point["io"] && f["read_gb_s"].is_number() &&
          f["read_gb_s"].get<double>() > 0) {
        io["fraction_of_fio"] = io["read_gb_s"].get<double>() / f["read_gb_s"].get<double>();
        fio_note = buffered_above_fio_note(r.point.value("io", ""), io["fraction_of_fio"].get<double>());
        if (f.contains("ceiling_gb_s") && f["ceiling_gb_s"].is_number() && f["ceiling_gb_s"].get<double>() > 0)
          io["fraction_of_fio_ceiling"] = io["read_gb_s"].get<double>() / f["ceiling_gb_s"].get<double>();
      }
    }
  }
  io["stall_ns"] = num_or_null(b, "stall_ns");
  double timed_ns = 0;
  for (double v : as_doubles(pp)) timed_ns += v;
  for (double v : as_doubles(tg)) timed_ns += v;
  if (b.contains("stall_fraction") && b["stall_fraction"].is_number()) io["stall_fraction"] = b["stall_fraction"];
  else if (io["stall_ns"].is_number() && timed_ns > 0) io["stall_fraction"] = io["stall_ns"].get<double>() / timed_ns;
  else io["stall_fraction"] = nullptr;
  io["huge_pages"] = b.contains("huge_pages") && b["huge_pages"].is_object() ? b["huge_pages"] : Json(nullptr);
  io["prefetch_hits"] = num_or_null(b, "prefetch_hits");
  io["prefetch_misses"] = num_or_null(b, "prefetch_misses");
  rec["io"] = io;
  Json mem;
  mem["peak_rss_mb"] = child.max_rss_bytes > 0 ? Json(static_cast<double>(child.max_rss_bytes) / 1048576.0) : Json(nullptr);
  mem["engine_peak_rss_mb"] = b.contains("peak_rss_bytes") && b["peak_rss_bytes"].is_number()
                                  ? Json(b["peak_rss_bytes"].get<double>() / 1048576.0) : Json(nullptr);
  mem["peak_vram_mb"] = b.contains("peak_vram_bytes") && b["peak_vram_bytes"].is_number()
                            ? Json(b["peak_vram_bytes"].get<double>() / 1048576.0) : Json(nullptr);
  rec["memory"] = mem;
  Json layers = Json::array();
  Json warnings = Json::array();
  if (b.contains("layers") && b["layers"].is_array()) {
    for (const auto& l : b["layers"]) {
      Json lj = {{"layer", num_or_null(l, "layer")}, {"load_ns", num_or_null(l, "load_ns")},
                 {"compute_ns", num_or_null(l, "compute_ns")}, {"stall_ns", num_or_null(l, "stall_ns")},
                 {"bytes", num_or_null(l, "bytes")}};
      // A negative duration or size is an engine measurement bug: recorded as unmeasured, flagged.
      for (const char* k : {"load_ns", "compute_ns", "stall_ns", "bytes"}) {
        if (lj[k].is_number() && lj[k].get<double>() < 0) {
          warnings.push_back("engine reported " + std::string(k) + " " + lj[k].dump() + " for layer " + lj["layer"].dump() +
                             ": recorded as null");
          lj[k] = nullptr;
        }
      }
      layers.push_back(lj);
    }
  }
  rec["layers"] = layers;
  if (!fio_note.empty()) warnings.push_back(fio_note);
  rec["warnings"] = warnings;
  // Overlap, from one run's own timings: I/O busy time (the layers' loads) and compute time over the
  // timed reps against their wall time. Load-then-compute gives wall ~ io + compute (over_sum ~ 1);
  // perfect prefetch gives wall ~ max(io, compute) (over_max ~ 1).
  double io_ns = 0, compute_ns = 0;
  for (const auto& l : layers) {
    if (l["load_ns"].is_number()) io_ns += l["load_ns"].get<double>();
    if (l["compute_ns"].is_number()) compute_ns += l["compute_ns"].get<double>();
  }
  if (io_ns > 0 && compute_ns > 0 && timed_ns > 0) {
    rec["io"]["overlap"] = {{"io_busy_ns", io_ns}, {"compute_ns", compute_ns}, {"timed_ns", timed_ns},
                            {"wall_over_max", timed_ns / std::max(io_ns, compute_ns)},
                            {"wall_over_sum", timed_ns / (io_ns + compute_ns)}};
  } else {
    rec["io"]["overlap"] = nullptr;
  }
  // Predictions model our engine's residency plan; a foreign engine (llama-bench) gets none.
  if (r.engine != "llama-bench") add_prediction(&rec, r, b, env);
  rec["baseline"] = nullptr;
  rec["correctness"] = nullptr;
  rec["plan"] = b.contains("plan") ? b["plan"] : Json(nullptr);
  // The weight budget requested and the one in effect: `auto` without one takes what the machine
  // (or the run's memory cgroup) has, and the plan says how it got there.
  if (rec["plan"].is_object() && rec["plan"].contains("vram_budget_source")) {
    const Json& plan = rec["plan"];
    rec["vram_budget"] = {{"requested_mb", r.point.value("vram_budget_mb", int64_t{0})},
                          {"effective_mb", plan.value("vram_budget_bytes", uint64_t{0}) / (uint64_t{1} << 20)},
                          {"source", plan["vram_budget_source"]}};
  } else {
    rec["vram_budget"] = nullptr;
  }
  // MoE: the engine's expert residency figures (hits, misses, experts and bytes read per token).
  rec["experts"] = b.contains("experts") && b["experts"].is_object() ? b["experts"] : Json(nullptr);
  if (b.contains("speculative") && b["speculative"].is_object()) rec["speculative"] = b["speculative"];
  rec["engine_warnings"] = b.contains("warnings") && b["warnings"].is_array() ? b["warnings"] : Json::array();
  // Harness overhead: the engine's timed samples are a subset of the child's wall time; what the
  // harness adds is measured around the child in run_point.
  rec["harness"] = {{"child_wall_ns", child.wall_ns}, {"engine_timed_ns", timed_ns}};
  return rec;
}

void add_prediction(Json* rec, const RunSpec& r, const Json& b, const RunEnv& env) {
  const Json& p = r.point;
  // Weight bytes every token must read: the per-layer weights (the output matrix and one embedding
  // row come on top, so this is a lower bound — right for a floor).
  double layer_bytes = 0;
  if (b.contains("layers") && b["layers"].is_array()) {
    for (const auto& l : b["layers"]) {
      if (l.contains("bytes") && l["bytes"].is_number()) layer_bytes += l["bytes"].get<double>();
    }
  }
  double model_bytes = layer_bytes;
  const Json plan = b.contains("plan") && b["plan"].is_object() ? b["plan"] : Json::object();
  if (model_bytes <= 0 && plan.contains("model_bytes") && plan["model_bytes"].is_number()) {
    model_bytes = plan["model_bytes"].get<double>() - plan.value("global_bytes", 0.0);
  }
  if (model_bytes <= 0 && b.contains("file_bytes") && b["file_bytes"].is_number()) model_bytes = b["file_bytes"].get<double>();
  // A mixture of experts touches only the routed experts: the plan's active bytes (less the globals).
  const bool moe = plan.contains("experts") && plan["experts"].is_object();
  if (moe && plan.contains("active_bytes") && plan["active_bytes"].is_number())
    model_bytes = plan["active_bytes"].get<double>() - plan.value("global_bytes", 0.0);
  Json pred;
  if (model_bytes <= 0) {
    pred = {{"ms_per_token", nullptr}, {"floor_ms_per_token", nullptr}, {"bound", nullptr},
            {"note", "model size unknown: the engine reported neither layers[].bytes nor file_bytes"}};
    (*rec)["predicted"] = pred;
    (*rec)["vs_floor"] = nullptr;
    return;
  }
  PredictInput in;
  in.model_bytes = model_bytes;
  if (plan.contains("streamed_bytes_per_token") && plan["streamed_bytes_per_token"].is_number()) {
    in.streamed_bytes = plan["streamed_bytes_per_token"].get<double>();
  }
  in.backend = p["backend"];
  in.residency = p["residency"];
  in.io = p["io"];
  in.prefetch = static_cast<int>(p["prefetch"].get<int64_t>());
  in.vram_budget_mb = p["vram_budget_mb"];
  if (in.vram_budget_mb <= 0 && plan.value("vram_budget_bytes", uint64_t{0}) > 0)  // auto sized to the machine
    in.vram_budget_mb = static_cast<int64_t>(plan["vram_budget_bytes"].get<uint64_t>() >> 20);
  in.ram_budget_mb = p["ram_budget_mb"];
  in.cache_bytes = static_cast<double>(env.llc_bytes);
  const Profile& model_profile = env.profile != nullptr ? *env.profile : env.machine;
  const Prediction pr = predict(model_profile, in);
  // The floor is always this machine's (what was measured here cannot beat its own physics).
  Profile here = env.machine;
  for (const auto& f : env.ceilings.value("fio", Json::array())) {
    if (f["path"] != r.model.path || f["io"] != p["io"]) continue;
    // The best fio managed with any buffer kind (ceiling_gb_s), so the floor cannot be beaten.
    if (f.contains("ceiling_gb_s") && f["ceiling_gb_s"].is_number()) here.storage_gb_s = f["ceiling_gb_s"];
    else if (f["read_gb_s"].is_number()) here.storage_gb_s = f["read_gb_s"];
  }
  if (p.value("throttle_gb_s", 0.0) > 0) here.storage_gb_s = std::min(here.storage_gb_s > 0 ? here.storage_gb_s : 1e9, p["throttle_gb_s"].get<double>());
  // The plan's streamed bytes assume uniform routing; routing that favours the cached experts reads
  // less, down to the dense parts alone, so only those bound the floor.
  PredictInput floor_in = in;
  if (moe && plan["experts"].contains("dense_bytes_per_token") && plan["experts"]["dense_bytes_per_token"].is_number())
    floor_in.streamed_bytes = std::min(in.streamed_bytes, plan["experts"]["dense_bytes_per_token"].get<double>());
  Prediction fl = predict(here, floor_in);
  // Speculative decoding: each target pass streams the weights once and yields several tokens, so
  // the floor per token is the floor per pass times the passes the run needed per token.
  if (b.contains("speculative") && b["speculative"].is_object()) {
    const Json& sp = b["speculative"];
    const double tokens = static_cast<double>(p["gen"].get<int64_t>()) * static_cast<double>(p["reps"].get<int64_t>());
    const double passes = sp.value("target_passes", 0.0);
    if (passes > 0 && tokens > 0) {
      const double per_token = passes / tokens;
      char buf[96];
      std::snprintf(buf, sizeof(buf), " x %.3f target passes per token (speculative: %.0f passes, %.0f tokens)", per_token,
                    passes, tokens);
      fl.floor_ms_per_token *= per_token;
      fl.arithmetic += buf;
      pred["target_passes_per_token"] = per_token;
    }
  }
  pred["ms_per_token"] = pr.ms_per_token;
  pred["floor_ms_per_token"] = fl.floor_ms_per_token > 0 ? Json(fl.floor_ms_per_token) : Json(nullptr);
  pred["bound"] = pr.bound;
  pred["profile"] = model_profile.name;
  pred["streamed_bytes_per_token"] = pr.streamed_bytes;
  pred["floor_link"] = fl.floor_link;
  pred["floor_arithmetic"] = fl.arithmetic;
  pred["engine_plan_ms_per_token"] = num_or_null(plan, "predicted_ms_per_token");
  (*rec)["predicted"] = pred;
  const Json& med = (*rec)["summary"]["tg_ms_per_token"];
  if (med.is_object() && fl.floor_ms_per_token > 0) {
    const double m = med["median"].get<double>();
    (*rec)["vs_floor"] = {{"ratio", m / fl.floor_ms_per_token}, {"below_floor", m < fl.floor_ms_per_token}};
  } else {
    (*rec)["vs_floor"] = nullptr;
  }
  if (med.is_object() && pr.ms_per_token > 0) (*rec)["predicted"]["measured_over_predicted"] = med["median"].get<double>() / pr.ms_per_token;
}

namespace {

Json failed_record(const RunSpec& r, const std::string& error) {
  Json rec;
  rec["id"] = r.id;
  rec["point"] = r.point;
  rec["status"] = "failed";
  rec["error"] = error;
  rec["engine"] = r.engine;
  rec["model"] = {{"path", r.model.path}};
  return rec;
}

// `cg`: what the child's memory cgroup saw (an OOM kill there is the reason, not "signal 9").
std::string child_failure(const ChildResult& c, const std::string& what, const CgroupUsage* cg = nullptr) {
  if (!c.started) return what + ": " + c.start_error;
  if (c.timed_out) return what + ": timed out (killed)";
  if (c.interrupted) return what + ": interrupted";
  const std::string oom = cg != nullptr ? oom_kill_message(*cg) : "";
  std::string e;
  if (!oom.empty() && c.term_signal == SIGKILL) {
    e = what + " " + oom;
  } else {
    e = what + (c.term_signal ? " killed by signal " + std::to_string(c.term_signal) + " (" + strsignal(c.term_signal) + ")"
                              : " exited " + std::to_string(c.exit_code));
    if (!oom.empty()) e += " (its memory cgroup OOM-killed " + std::to_string(cg->oom_kills) + " process(es))";
  }
  const std::string t = tail(c.err, 600);
  if (!t.empty()) e += ": " + t;
  return e;
}

std::string mib_text(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.0f MiB", static_cast<double>(bytes) / 1048576.0);
  return buf;
}

Json nonneg_or_null(int64_t v) { return v >= 0 ? Json(v) : Json(nullptr); }

// A child under its point's memory limit (memory_limit.h has the rule): a fresh cgroup per child,
// made before the fork and removed after the reap.
struct LimitedChild {
  ChildResult child;
  Json info;           // the record's memory.cgroup; null without a limit
  CgroupUsage usage;   // what the cgroup saw
  double cgroup_ns = 0;  // making and removing the cgroup (reclaiming its page cache included)
};

LimitedChild run_limited_child(const std::vector<std::string>& argv, const RunSpec& r, const RunEnv& env,
                               const std::string& tag) {
  LimitedChild out;
  const int timeout_s = env.settings["timeout_s"].get<int>();
  const int64_t limit = point_memory_limit_bytes(r.point);
  if (limit <= 0) {
    out.child = run_child(argv, timeout_s);
    return out;
  }
  const int64_t ram = static_cast<int64_t>(env.machine.ram_gb * 1e9);
  const bool required = memory_limit_required(limit, ram);
  const std::string below_ram = "the limit is at or above this machine's RAM (" + mib_text(ram) + ")";
  // Unique per harness invocation (its scratch directory's random name), run and child.
  const std::string invocation = env.tmp_dir.empty() ? "pid" + std::to_string(getpid())
                                                     : env.tmp_dir.substr(env.tmp_dir.rfind('/') + 1);
  const int64_t t0 = steady_now_ns();
  auto cg = MemoryCgroup::create(invocation + "-" + r.id + "-" + tag, limit);
  out.cgroup_ns = static_cast<double>(steady_now_ns() - t0);
  if (!cg.ok()) {
    out.info = {{"limit_bytes", limit}, {"enforced", false}, {"version", nullptr}, {"error", cg.status().message()}};
    if (required) {
      out.child.start_error = "memory_limit_mb " + std::to_string(limit >> 20) + " cannot be enforced: " + cg.status().message();
      return out;
    }
    out.info["note"] = "not enforced: " + below_ram + ", so the run went ahead without a memory cgroup";
    out.child = run_child(argv, timeout_s);
    return out;
  }
  out.child = run_child(argv, timeout_s, cg->get());
  const int64_t t1 = steady_now_ns();
  const CgroupUsage& u = out.usage = (*cg)->usage();
  const Status removed = (*cg)->remove();
  out.cgroup_ns += static_cast<double>(steady_now_ns() - t1);
  out.info = {{"limit_bytes", u.limit_bytes}, {"enforced", out.child.started}, {"version", u.version},
              {"path", u.path}, {"swap_limited", u.swap_limited}, {"peak_bytes", nonneg_or_null(u.peak_bytes)},
              {"page_cache_bytes_at_exit", nonneg_or_null(u.page_cache_bytes)},
              {"failcnt", nonneg_or_null(u.failcnt)}, {"oom_kills", nonneg_or_null(u.oom_kills)}};
  std::string note;
  if (!required) note = below_ram + ": set, but it limits nothing this machine has";
  if (u.peak_bytes < 0) note += (note.empty() ? "" : "; ") + std::string("the kernel reports no peak (cgroup v2 has memory.peak from Linux 5.19)");
  if (!note.empty()) out.info["note"] = note;
  if (!removed.ok()) out.info["remove_error"] = removed.message();
  return out;
}

// memory.cgroup on a record; a failed record gets the memory object the schema asks for.
void attach_cgroup(Json* rec, const Json& info, bool has_limit) {
  if (!has_limit) {
    if (rec->contains("memory") && (*rec)["memory"].is_object()) (*rec)["memory"]["cgroup"] = nullptr;
    return;
  }
  if (!rec->contains("memory") || !(*rec)["memory"].is_object()) (*rec)["memory"] = {{"peak_rss_mb", nullptr}, {"peak_vram_mb", nullptr}};
  (*rec)["memory"]["cgroup"] = info;
}

// The model file out of the page cache before a run (scenario drop_cache), for every engine alike,
// so no run reads what an earlier one cached (nor is spared the charge to its memory cgroup). A
// drop that did not work is a warning on the run. Returns the time it took, ns.
double drop_model_cache(const RunSpec& r, const RunEnv& env, Json* warnings) {
  const auto t0 = std::chrono::steady_clock::now();
  if (env.settings["drop_cache"].get<bool>()) {
    double resident = 0;
    std::string why;
    if (!drop_page_cache(r.model.path, &resident, &why)) warnings->push_back("page cache not dropped for " + r.model.path + " (" + why + ")");
  }
  return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
}

Json check_correctness(const RunSpec& r, const RunEnv& env, bool* ok) {
  *ok = true;
  Json c;
  const Json* kase = find_reference_case(*env.reference, r.model.path);
  if (kase == nullptr) {
    *ok = false;
    return Json{{"reference", env.reference->dir}, {"passed", false},
                {"error", "no case in the reference manifest for " + r.model.path}};
  }
  const std::string ft = kase->value("file_type", "");
  const double tol_nmse = nmse_tolerance(ft);
  double worst_nmse = 0, worst_abs = 0, worst_top1 = 1, worst_kl = 0;
  Json prompts = Json::array();
  std::string first_ref;
  for (const auto& pr : (*kase)["prompts"]) {
    std::string tokens;
    for (const auto& t : pr["tokens"]) tokens += (tokens.empty() ? "" : ",") + std::to_string(t.get<int64_t>());
    const std::string ref_path = env.reference->dir + "/" + pr["logits"].get<std::string>();
    if (first_ref.empty()) first_ref = ref_path;
    const std::string out = env.tmp_dir + "/" + r.id + "-logits.f32";
    std::vector<std::string> argv = {env.flea, "logits", "--model", r.model.path, "--tokens", tokens, "--out", out};
    push_residency_flags(&argv, r.point);
    ChildResult ch = run_child(argv, env.settings["timeout_s"].get<int>());
    Json pj = {{"logits", ref_path}, {"n_tokens", pr["tokens"].size()}};
    if (ch.exit_code != 0) {
      pj["error"] = child_failure(ch, "flea logits");
      *ok = false;
      prompts.push_back(pj);
      if (ch.interrupted) break;
      continue;
    }
    auto read_f32 = [](const std::string& path) {
      std::vector<float> v;
      std::ifstream in(path, std::ios::binary | std::ios::ate);
      if (!in) return v;
      const auto n = static_cast<size_t>(in.tellg());
      v.resize(n / 4);
      in.seekg(0);
      in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
      return v;
    };
    auto cmp = compare_logits(read_f32(out), read_f32(ref_path), pr.value("n_vocab", (*kase).value("n_vocab", 0)));
    unlink(out.c_str());
    if (!cmp.ok()) {
      pj["error"] = cmp.status().message();
      *ok = false;
      prompts.push_back(pj);
      continue;
    }
    pj["nmse"] = cmp->nmse;
    pj["max_abs"] = cmp->max_abs;
    pj["top1_agreement"] = cmp->top1;
    pj["kl"] = cmp->kl;
    pj["passed"] = cmp->nmse <= tol_nmse && cmp->top1 >= kTop1Tolerance;
    if (!pj["passed"].get<bool>()) *ok = false;
    worst_nmse = std::max(worst_nmse, cmp->nmse);
    worst_abs = std::max(worst_abs, cmp->max_abs);
    worst_top1 = std::min(worst_top1, cmp->top1);
    worst_kl = std::max(worst_kl, cmp->kl);
    prompts.push_back(pj);
  }
  if (prompts.empty()) *ok = false;
  c["reference"] = first_ref;
  c["reference_commit"] = env.reference->manifest.contains("producer")
                              ? env.reference->manifest["producer"].value("commit", "") : "";
  c["file_type"] = ft;
  c["nmse"] = worst_nmse;
  c["max_abs"] = worst_abs;
  c["top1_agreement"] = worst_top1;
  c["kl"] = worst_kl;
  c["tolerance"] = {{"nmse", tol_nmse}, {"top1", kTop1Tolerance}};
  c["prompts"] = prompts;
  c["passed"] = *ok;
  return c;
}

Json run_llama_bench(const RunSpec& r, const RunEnv& env) {
  const Json& p = r.point;
  int64_t threads = p["threads"].get<int64_t>();
  if (threads <= 0) threads = sysconf(_SC_NPROCESSORS_ONLN);
  const Json& bl = env.settings["baselines"][static_cast<size_t>(r.baseline_index)];
  int64_t ngl = bl.value("ngl", int64_t{-1});
  if (ngl < 0) ngl = p["backend"] == "cuda" ? -1 : 0;
  std::vector<std::string> argv = {env.llama_bench, "-m", r.model.path, "-p", std::to_string(p["prompt"].get<int64_t>()),
                                   "-n", std::to_string(p["gen"].get<int64_t>()), "-r", std::to_string(p["reps"].get<int64_t>()),
                                   "-t", std::to_string(threads), "-o", "json"};
  Json fitted_note = nullptr;
  if (ngl < 0) {
    // GPU: the -ngl partial offload that fits the point's VRAM budget (what users pick today).
    ngl = 99;
    struct stat st;
    const int64_t budget_mb = p["vram_budget_mb"].get<int64_t>();
    const int64_t n_layer = r.n_layer_hint;
    if (budget_mb > 0 && n_layer > 0 && stat(r.model.path.c_str(), &st) == 0) {
      // Without the tensor table, layers are assumed equal: file bytes / (n_layer + 1 for globals).
      const double per_layer = static_cast<double>(st.st_size) / static_cast<double>(n_layer + 1);
      ngl = std::max<int64_t>(0, static_cast<int64_t>(budget_mb * 1048576.0 / per_layer) - 1);
      fitted_note = "ngl fitted to vram_budget_mb assuming equal layers";
    }
  }
  argv.push_back("-ngl");
  argv.push_back(std::to_string(ngl));
  const LimitedChild lc = run_limited_child(argv, r, env, "llama-bench");
  const ChildResult& ch = lc.child;
  const bool limited = point_memory_limit_bytes(p) > 0;
  if (ch.exit_code != 0) {
    Json rec = failed_record(r, child_failure(ch, "llama-bench", &lc.usage));
    rec["command"] = shell_quote(argv);
    attach_cgroup(&rec, lc.info, limited);
    return rec;
  }
  Json arr;
  try {
    arr = Json::parse(ch.out);
  } catch (const std::exception& e) {
    Json rec = failed_record(r, std::string("llama-bench: cannot parse its JSON output: ") + e.what());
    attach_cgroup(&rec, lc.info, limited);
    return rec;
  }
  Json pp = Json::array(), tg = Json::array();
  for (const auto& e : arr) {
    if (e.value("n_gen", 0) > 0 && e.contains("samples_ns")) tg = e["samples_ns"];
    else if (e.value("n_prompt", 0) > 0 && e.contains("samples_ns")) pp = e["samples_ns"];
  }
  Json fake_bench = {{"pp_samples_ns", pp}, {"tg_samples_ns", tg}};
  struct stat st;
  if (stat(r.model.path.c_str(), &st) == 0) fake_bench["file_bytes"] = static_cast<int64_t>(st.st_size);
  Json rec = record_from_bench(r, fake_bench, ch, env);
  rec["command"] = shell_quote(argv);
  rec["llama_bench"] = {{"ngl", ngl}, {"note", fitted_note}};
  rec["predicted"] = nullptr;
  rec["vs_floor"] = nullptr;
  attach_cgroup(&rec, lc.info, limited);
  if (limited) rec["harness"]["cgroup_ns"] = lc.cgroup_ns;
  return rec;
}

Json run_point_unguarded(const RunSpec& r, const RunEnv& env, Json* engine_trace) {
  *engine_trace = nullptr;  // or the path of the engine's trace file
  if (r.engine == "llama-bench" && env.llama_bench.empty()) {
    Json rec = failed_record(r, "llama-bench not found (optional baseline skipped)");
    rec["status"] = "skipped";
    return rec;
  }
  if (r.engine == "flea-serve") {
    // The server outlives the point (reused across concurrency), so the page cache is not dropped here.
    if (env.serve == nullptr) return failed_record(r, "serving point without a serve session (internal)");
    return run_serve_point(r, env, env.serve);
  }
  Json warnings = Json::array();
  const double drop_ns = drop_model_cache(r, env, &warnings);
  if (r.engine == "llama-bench") {
    Json rec = run_llama_bench(r, env);
    if (rec.value("status", "") == "ok") {
      rec["harness"]["drop_cache_ns"] = drop_ns;
      for (const auto& w : warnings) rec["warnings"].push_back(w);
    }
    return rec;
  }
  const std::string trace = env.settings["trace"].get<bool>() ? env.tmp_dir + "/" + r.id + ".engine-trace.json" : "";
  const std::vector<std::string> argv = bench_argv(env.flea, r.point, r.model.path, trace, r.draft_path);
  const LimitedChild lc = run_limited_child(argv, r, env, "bench");
  const ChildResult& ch = lc.child;
  const bool limited = point_memory_limit_bytes(r.point) > 0;
  if (ch.interrupted) {
    Json rec = failed_record(r, "interrupted");
    rec["status"] = "skipped";
    return rec;
  }
  if (ch.exit_code != 0) {
    Json rec = failed_record(r, child_failure(ch, "flea bench", &lc.usage));
    rec["command"] = shell_quote(argv);
    attach_cgroup(&rec, lc.info, limited);
    return rec;
  }
  Json bench;
  try {
    // One JSON object on stdout; take the last non-empty line (engines may log before it).
    std::string out = ch.out;
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    const size_t nl = out.rfind('\n');
    bench = Json::parse(nl == std::string::npos ? out : out.substr(nl + 1));
    if (!bench.is_object()) throw std::runtime_error("not a JSON object");
  } catch (const std::exception& e) {
    Json rec = failed_record(r, std::string("flea bench: cannot parse its JSON output: ") + e.what() +
                                    " (stdout: " + tail(ch.out, 200) + ")");
    rec["command"] = shell_quote(argv);
    attach_cgroup(&rec, lc.info, limited);
    return rec;
  }
  Json rec = record_from_bench(r, bench, ch, env);
  rec["command"] = shell_quote(argv);
  attach_cgroup(&rec, lc.info, limited);
  if (limited) rec["harness"]["cgroup_ns"] = lc.cgroup_ns;
  // The engine's trace file is merged into <run-id>.trace.json after the last run (parsing it here
  // would add to the time between runs); its path is handed back.
  if (!trace.empty() && access(trace.c_str(), R_OK) == 0) *engine_trace = trace;
  rec["harness"]["drop_cache_ns"] = drop_ns;
  if (env.reference != nullptr) {
    bool ok = true;
    const int64_t t_c = steady_now_ns();
    rec["correctness"] = check_correctness(r, env, &ok);
    rec["harness"]["correctness_ns"] = steady_now_ns() - t_c;
  }
  for (const auto& w : warnings) rec["warnings"].push_back(w);
  return rec;
}

}  // namespace

// One point; an unexpected exception (engine output of a shape we did not foresee) fails this run
// with the reason instead of ending the sweep.
Json run_point(const RunSpec& r, const RunEnv& env, Json* engine_trace) {
  try {
    return run_point_unguarded(r, env, engine_trace);
  } catch (const std::exception& e) {
    *engine_trace = nullptr;
    return failed_record(r, std::string("internal error while recording this run: ") + e.what());
  }
}

}  // namespace flea::harness
