#include "memory_limit.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>

namespace flea::harness {
namespace {

constexpr const char* kKey = "memory_limit_mb";

void set_limit(Json* point, int64_t mb) {
  if (mb > 0) (*point)[kKey] = mb;
  else point->erase(kKey);
}

}  // namespace

int64_t point_memory_limit_bytes(const Json& point) {
  return point.is_object() && point.contains(kKey) && point[kKey].is_number_integer() ? point[kKey].get<int64_t>() << 20 : 0;
}

bool memory_limit_required(int64_t limit_bytes, int64_t machine_ram_bytes) {
  return limit_bytes > 0 && (machine_ram_bytes <= 0 || limit_bytes < machine_ram_bytes);
}

void apply_memory_limits(std::vector<RunSpec>* runs, const Profile* emulate) {
  const int64_t cap_mb = emulate != nullptr ? emulated_ram_budget_mb(*emulate) : 0;
  std::map<std::string, int64_t> limit_of;  // run id → its limit in MiB (0 = none)
  for (RunSpec& r : *runs) {
    const int64_t requested = r.requested_point.value(kKey, int64_t{0});
    set_limit(&r.requested_point, requested);
    if (r.engine == "llama-bench") continue;
    set_limit(&r.point, cap_budget_mb(r.point.value(kKey, int64_t{0}), cap_mb));
    limit_of[r.id] = r.point.value(kKey, int64_t{0});
  }

  // The profile's cap can make two points equal (one asked for no limit, one for the profile's):
  // the later one is dropped and whatever served it serves the first.
  std::map<std::string, std::string> alias;  // run id → id of the equal run that is kept
  std::map<std::string, size_t> kept_by_key;
  std::vector<RunSpec> kept;
  for (const RunSpec& r : *runs) {
    if (r.engine == "llama-bench") {
      kept.push_back(r);
      continue;
    }
    const std::string key = run_key(r.engine, r.point);
    auto it = kept_by_key.find(key);
    if (it == kept_by_key.end()) {
      kept_by_key[key] = kept.size();
      kept.push_back(r);
      continue;
    }
    alias[r.id] = kept[it->second].id;
    for (const auto& s : r.serves) kept[it->second].serves.push_back(s);
  }
  auto resolve = [&](std::vector<std::string> ids) {
    std::vector<std::string> out;
    for (auto& id : ids) {
      if (alias.count(id)) id = alias[id];
      if (std::find(out.begin(), out.end(), id) == out.end()) out.push_back(id);
    }
    return out;
  };

  // Baselines by the run they follow (the first they serve); llama-bench split by limit.
  std::map<std::string, std::vector<RunSpec>> after;
  for (RunSpec& r : kept) {
    if (r.baseline_index < 0) continue;
    r.serves = resolve(r.serves);
    if (r.serves.empty()) continue;
    if (r.engine != "llama-bench") {
      after[r.serves.front()].push_back(r);
      continue;
    }
    std::vector<std::pair<int64_t, std::vector<std::string>>> groups;  // limit → runs, first seen first
    for (const auto& s : r.serves) {
      const int64_t mb = limit_of.count(s) ? limit_of[s] : 0;
      auto g = std::find_if(groups.begin(), groups.end(), [&](const auto& x) { return x.first == mb; });
      if (g == groups.end()) groups.push_back({mb, {s}});
      else g->second.push_back(s);
    }
    for (const auto& [mb, served] : groups) {
      RunSpec b = r;
      set_limit(&b.point, mb);
      b.serves = served;
      after[served.front()].push_back(b);
    }
  }
  std::vector<RunSpec> out;
  for (const RunSpec& r : kept) {
    if (r.baseline_index >= 0) continue;
    out.push_back(r);
    auto it = after.find(r.id);
    if (it == after.end()) continue;
    std::stable_sort(it->second.begin(), it->second.end(),
                     [](const RunSpec& a, const RunSpec& b) { return a.baseline_index < b.baseline_index; });
    for (const auto& b : it->second) out.push_back(b);
  }

  std::map<std::string, std::string> new_id;
  char buf[32];
  for (size_t i = 0; i < out.size(); ++i) {
    std::snprintf(buf, sizeof(buf), "r%04zu", i + 1);
    if (out[i].baseline_index < 0) new_id[out[i].id] = buf;
    out[i].id = buf;
  }
  for (RunSpec& r : out) {
    for (auto& s : r.serves) s = new_id[s];
  }
  *runs = std::move(out);
}

}  // namespace flea::harness
