#include "results.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "env.h"

namespace flea::harness {

// Every failure removes the temp file and leaves `path` as it was (rename is the only step that
// touches it). Messages name the destination and the errno text, e.g. "cannot write
// 'out/x.json': No space left on device (errno 28) while writing temp file 'out/x.json.tmp.12';
// the previous file is unchanged".
Status write_file_atomic(const std::string& path, const std::string& data) {
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  auto fail = [&](const std::string& step, int e) {
    unlink(tmp.c_str());
    return io_error("cannot write '" + path + "': " + std::strerror(e) + " (errno " + std::to_string(e) + ") while " +
                    step + " temp file '" + tmp + "'; the previous file is unchanged");
  };
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return fail("creating", errno);
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      close(fd);
      return fail("writing", e);
    }
    off += static_cast<size_t>(n);
  }
  int rc;
  while ((rc = fsync(fd)) != 0 && errno == EINTR) {
  }
  if (rc != 0) {
    const int e = errno;
    close(fd);
    return fail("syncing", e);
  }
  // Some filesystems (NFS) report a full disk only at close.
  if (close(fd) != 0 && errno != EINTR) return fail("closing", errno);
  if (rename(tmp.c_str(), path.c_str()) != 0) return fail("renaming", errno);
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);  // the rename itself is durable
    close(dfd);
  }
  return ok_status();
}

Json trace_events_for_run(int pid, const Json& rec, const Json& engine_trace) {
  Json events = Json::array();
  std::string label = rec.value("id", "run");
  if (rec.contains("point") && rec["point"].is_object()) {
    const Json& p = rec["point"];
    label += " " + rec.value("engine", "flea") + " " + p.value("residency", "") + "/" + p.value("io", "") +
             " prefetch=" + (p.contains("prefetch") ? p["prefetch"].dump() : "?");
  }
  events.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", pid}, {"tid", 0}, {"args", {{"name", label}}}});
  Json src;
  if (engine_trace.is_object() && engine_trace.contains("traceEvents")) src = engine_trace["traceEvents"];
  else if (engine_trace.is_array()) src = engine_trace;
  if (src.is_array() && !src.empty()) {
    for (auto e : src) {
      if (!e.is_object()) continue;
      if (e.value("ph", "") == "M" && e.value("name", "") == "process_name") continue;
      e["pid"] = pid;
      events.push_back(e);
    }
    return events;
  }
  // Synthesized: per layer, its total load then compute time over the timed reps, end to end.
  events.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", pid}, {"tid", 1}, {"args", {{"name", "io (load)"}}}});
  events.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", pid}, {"tid", 2}, {"args", {{"name", "compute"}}}});
  events.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", pid}, {"tid", 3}, {"args", {{"name", "stall"}}}});
  double ts_us = 0;
  if (rec.contains("layers") && rec["layers"].is_array()) {
    for (const auto& l : rec["layers"]) {
      const std::string name = "layer " + (l["layer"].is_number() ? l["layer"].dump() : std::string("?"));
      auto span = [&](const char* key, int tid, const char* cat) {
        if (!l.contains(key) || !l[key].is_number()) return 0.0;
        const double dur = l[key].get<double>() / 1e3;
        events.push_back({{"name", name}, {"cat", cat}, {"ph", "X"}, {"pid", pid}, {"tid", tid}, {"ts", ts_us},
                          {"dur", dur}, {"args", {{"bytes", l.contains("bytes") ? l["bytes"] : Json(nullptr)},
                                                   {"synthesized", true}}}});
        return dur;
      };
      const double load = span("load_ns", 1, "io");
      const double stall = span("stall_ns", 3, "stall");
      const double comp = span("compute_ns", 2, "compute");
      ts_us += std::max(load, stall + comp);
    }
  }
  return events;
}

std::string make_run_id(const std::string& scenario_name) {
  const std::string ts = utc_now("%Y%m%dT%H%M%SZ");
  std::random_device rd;
  char hex[8];
  std::snprintf(hex, sizeof(hex), "%04x", rd() & 0xffff);
  return scenario_name + "-" + ts + "-" + hex;
}

}  // namespace flea::harness
