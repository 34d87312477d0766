#include "residency/telemetry.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "flea/clock.h"

namespace flea {

namespace {
uint64_t proc_status_kb(const char* key) {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return 0;
  char line[256];
  uint64_t kb = 0;
  const size_t n = std::strlen(key);
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::strncmp(line, key, n) == 0 && line[n] == ':') {
      kb = std::strtoull(line + n + 1, nullptr, 10);
      break;
    }
  }
  std::fclose(f);
  return kb;
}
}  // namespace

uint64_t current_rss_bytes() { return proc_status_kb("VmRSS") * 1024; }
uint64_t peak_rss_hwm_bytes() { return proc_status_kb("VmHWM") * 1024; }

const char* layer_state_name(LayerState s) {
  switch (s) {
    case LayerState::kTransient: return "transient";
    case LayerState::kLoading: return "loading";
    case LayerState::kStaged: return "staged";
    case LayerState::kActive: return "active";
    case LayerState::kEvicted: return "evicted";
    case LayerState::kCached: return "cached";
    case LayerState::kResident: return "resident";
  }
  return "?";
}

Telemetry::Telemetry() : t0_ns_(steady_now_ns()) {}

int64_t Telemetry::now_ns() const { return steady_now_ns() - t0_ns_; }

void Telemetry::reset() {
  std::lock_guard<std::mutex> lock(mu_);
  // The clock keeps running: a read in flight across the reset must not get a negative duration.
  transitions_.clear();
  spans_.clear();
  layers_.clear();
  read_bytes_ = 0;
  stall_ns_ = io_ns_ = 0;
  hits_ = misses_ = 0;
  expert_hits_ = expert_misses_ = 0;
  peak_rss_ = 0;
  dropped_events_ = 0;
}

LayerStats& Telemetry::layer_locked(int layer) {
  if (layer >= static_cast<int>(layers_.size())) {
    const int old = static_cast<int>(layers_.size());
    layers_.resize(layer + 1);
    for (int i = old; i <= layer; ++i) layers_[i].layer = i;
  }
  return layers_[layer];
}

void Telemetry::record(int layer, LayerState s, uint64_t bytes) {
  const int64_t t = steady_now_ns();
  std::lock_guard<std::mutex> lock(mu_);
  if (transitions_.size() < kMaxEvents) transitions_.push_back({layer, s, t, bytes});
  else ++dropped_events_;
}

void Telemetry::add_io(int layer, int tid, int64_t start_ns, int64_t end_ns, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  read_bytes_ += bytes;
  io_ns_ += end_ns - start_ns;
  if (layer >= 0) {
    LayerStats& ls = layer_locked(layer);
    ls.load_ns += end_ns - start_ns;
    ls.bytes += bytes;
    ++ls.loads;
  }
  if (spans_.size() < kMaxEvents) spans_.push_back({"io", layer, tid, start_ns, end_ns, bytes});
  else ++dropped_events_;
}

void Telemetry::add_compute(int layer, int64_t start_ns, int64_t end_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  LayerStats& ls = layer_locked(layer);
  ls.compute_ns += end_ns - start_ns;
  ++ls.visits;
  if (spans_.size() < kMaxEvents) spans_.push_back({"compute", layer, 0, start_ns, end_ns, 0});
  else ++dropped_events_;
}

void Telemetry::add_stall(int layer, int64_t start_ns, int64_t end_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  stall_ns_ += end_ns - start_ns;
  layer_locked(layer).stall_ns += end_ns - start_ns;
  if (spans_.size() < kMaxEvents) spans_.push_back({"stall", layer, 0, start_ns, end_ns, 0});
  else ++dropped_events_;
}

void Telemetry::count_prefetch(bool hit) {
  std::lock_guard<std::mutex> lock(mu_);
  (hit ? hits_ : misses_)++;
}

void Telemetry::count_expert(int layer, bool hit) {
  std::lock_guard<std::mutex> lock(mu_);
  LayerStats& ls = layer_locked(layer);
  if (hit) {
    ++expert_hits_;
    ++ls.expert_hits;
  } else {
    ++expert_misses_;
    ++ls.expert_misses;
  }
}

void Telemetry::add_expert_bytes(int layer, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  layer_locked(layer).expert_bytes += bytes;
}

void Telemetry::sample_rss() {
  const uint64_t rss = current_rss_bytes();
  std::lock_guard<std::mutex> lock(mu_);
  peak_rss_ = std::max(peak_rss_, rss);
}

uint64_t Telemetry::read_bytes() const { std::lock_guard<std::mutex> l(mu_); return read_bytes_; }
int64_t Telemetry::stall_ns() const { std::lock_guard<std::mutex> l(mu_); return stall_ns_; }
int64_t Telemetry::prefetch_hits() const { std::lock_guard<std::mutex> l(mu_); return hits_; }
int64_t Telemetry::prefetch_misses() const { std::lock_guard<std::mutex> l(mu_); return misses_; }
int64_t Telemetry::expert_hits() const { std::lock_guard<std::mutex> l(mu_); return expert_hits_; }
int64_t Telemetry::expert_misses() const { std::lock_guard<std::mutex> l(mu_); return expert_misses_; }
uint64_t Telemetry::peak_rss_bytes() const { std::lock_guard<std::mutex> l(mu_); return peak_rss_; }
std::vector<Transition> Telemetry::transitions() const { std::lock_guard<std::mutex> l(mu_); return transitions_; }
std::vector<LayerStats> Telemetry::layers() const { std::lock_guard<std::mutex> l(mu_); return layers_; }
std::vector<Span> Telemetry::spans() const { std::lock_guard<std::mutex> l(mu_); return spans_; }

std::string Telemetry::to_json() const {
  std::lock_guard<std::mutex> lock(mu_);
  nlohmann::json j;
  j["read_bytes"] = read_bytes_;
  j["stall_ns"] = stall_ns_;
  j["io_ns"] = io_ns_;
  j["prefetch_hits"] = hits_;
  j["prefetch_misses"] = misses_;
  j["expert_hits"] = expert_hits_;
  j["expert_misses"] = expert_misses_;
  j["peak_rss_bytes"] = peak_rss_;
  j["dropped_events"] = dropped_events_;
  nlohmann::json layers = nlohmann::json::array();
  for (const LayerStats& ls : layers_)
    layers.push_back({{"layer", ls.layer}, {"load_ns", ls.load_ns}, {"compute_ns", ls.compute_ns},
                      {"stall_ns", ls.stall_ns}, {"bytes", ls.bytes}, {"loads", ls.loads}, {"visits", ls.visits},
                      {"expert_hits", ls.expert_hits}, {"expert_misses", ls.expert_misses}, {"expert_bytes", ls.expert_bytes}});
  j["layers"] = layers;
  return j.dump();
}

std::string Telemetry::chrome_trace() const {
  std::lock_guard<std::mutex> lock(mu_);
  nlohmann::json events = nlohmann::json::array();
  for (const Span& s : spans_) {
    nlohmann::json e;
    e["name"] = std::string(s.cat) + " L" + std::to_string(s.layer);
    e["cat"] = s.cat;
    e["ph"] = "X";
    e["ts"] = static_cast<double>(s.start_ns) / 1000.0;  // microseconds
    e["dur"] = static_cast<double>(s.end_ns - s.start_ns) / 1000.0;
    e["pid"] = 1;
    e["tid"] = s.tid;
    e["args"] = {{"layer", s.layer}, {"bytes", s.bytes}};
    events.push_back(std::move(e));
  }
  for (const Transition& t : transitions_) {
    events.push_back({{"name", layer_state_name(t.state)}, {"cat", "state"}, {"ph", "i"}, {"s", "t"},
                      {"ts", static_cast<double>(t.t_ns) / 1000.0}, {"pid", 1}, {"tid", 0},
                      {"args", {{"layer", t.layer}}}});
  }
  nlohmann::json j;
  j["traceEvents"] = events;
  j["displayTimeUnit"] = "ms";
  return j.dump();
}

Status Telemetry::write_chrome_trace(const std::string& path) const {
  std::ofstream f(path, std::ios::binary);
  if (!f) return io_error("cannot write trace '" + path + "'");
  f << chrome_trace();
  if (!f) return io_error("writing trace '" + path + "' failed");
  return ok_status();
}

}  // namespace flea
