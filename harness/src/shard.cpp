#include "shard.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cstdlib>
#include <numeric>

#include "runner.h"
#include "sha256.h"

namespace flea::harness {
namespace {

// Union-find over run indices.
struct Groups {
  std::vector<size_t> parent;
  explicit Groups(size_t n) : parent(n) { std::iota(parent.begin(), parent.end(), size_t{0}); }
  size_t find(size_t i) {
    while (parent[i] != i) i = parent[i] = parent[parent[i]];
    return i;
  }
  void unite(size_t a, size_t b) {
    a = find(a);
    b = find(b);
    if (a != b) parent[std::max(a, b)] = std::min(a, b);  // the root is the earliest run
  }
};

// A unit the assignment moves as a whole: runs in sweep order and their cost.
struct Piece {
  std::vector<size_t> runs;
  int64_t ms = 0;
};

// Cut positions for a group above its share: indices into `prefix` (running sums over the group's
// atoms, prefix[0] = 0), strictly increasing, strictly inside (0, atoms).
using CutFn = std::vector<size_t> (*)(const std::vector<int64_t>& prefix, int64_t total_ms, int64_t n_shards);

// At the boundaries nearest to j·total/count, compared scaled by count to stay in integers.
std::vector<size_t> cuts_near_multiples(const std::vector<int64_t>& prefix, int64_t total_ms, int64_t n_shards) {
  const size_t n_atoms = prefix.size() - 1;
  std::vector<size_t> cuts;
  for (int64_t j = 1; j * total_ms < prefix.back() * n_shards; ++j) {
    const int64_t want = j * total_ms;
    // First boundary at or past the target, then the nearer of it and the one before (ties: the
    // earlier).
    size_t b = static_cast<size_t>(std::lower_bound(prefix.begin() + 1, prefix.end() - 1, want,
                                                    [&](int64_t p, int64_t w) { return p * n_shards < w; }) -
                                   prefix.begin());
    if (b > 1 && want - prefix[b - 1] * n_shards <= std::llabs(prefix[b] * n_shards - want)) --b;
    const size_t cut = std::min(b, n_atoms - 1);
    if (cut > 0 && (cuts.empty() || cut > cuts.back())) cuts.push_back(cut);
  }
  return cuts;
}

// Into k = ceil(group/share) contiguous chunks whose largest is as small as possible: the least
// capacity that greedy filling fits in k chunks (binary search), then that greedy filling.
std::vector<size_t> cuts_min_max(const std::vector<int64_t>& prefix, int64_t total_ms, int64_t n_shards) {
  const size_t n_atoms = prefix.size() - 1;
  const int64_t k = (prefix.back() * n_shards + total_ms - 1) / total_ms;
  auto greedy = [&](int64_t cap) {
    std::vector<size_t> cuts;
    size_t from = 0;
    for (size_t b = 1; b <= n_atoms; ++b) {
      if (prefix[b] - prefix[from] > cap) {
        cuts.push_back(b - 1);
        from = b - 1;
      }
    }
    return cuts;
  };
  int64_t lo = 0, hi = prefix.back();
  for (size_t b = 1; b <= n_atoms; ++b) lo = std::max(lo, prefix[b] - prefix[b - 1]);
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (static_cast<int64_t>(greedy(mid).size()) + 1 <= k) hi = mid;
    else lo = mid + 1;
  }
  return greedy(lo);
}

// Whole groups, and the chunks of groups above their share.
std::vector<Piece> pieces_of(const std::vector<std::vector<Piece>>& seqs, int64_t total_ms, int64_t n_shards, CutFn cut) {
  std::vector<Piece> pieces;
  for (const auto& seq : seqs) {
    std::vector<int64_t> prefix = {0};
    for (const auto& a : seq) prefix.push_back(prefix.back() + a.ms);
    std::vector<size_t> cuts;
    if (prefix.back() * n_shards > total_ms && seq.size() > 1) cuts = cut(prefix, total_ms, n_shards);
    cuts.push_back(seq.size());
    size_t from = 0;
    for (size_t to : cuts) {
      Piece chunk;
      for (size_t k = from; k < to; ++k) {
        chunk.runs.insert(chunk.runs.end(), seq[k].runs.begin(), seq[k].runs.end());
        chunk.ms += seq[k].ms;
      }
      std::sort(chunk.runs.begin(), chunk.runs.end());
      pieces.push_back(std::move(chunk));
      from = to;
    }
  }
  return pieces;
}

// Longest processing time first onto the least-loaded shard (ties: earlier piece, lower shard).
ShardPlan assign_longest_first(std::vector<Piece> pieces, int count) {
  std::sort(pieces.begin(), pieces.end(), [](const Piece& x, const Piece& y) {
    return x.ms != y.ms ? x.ms > y.ms : x.runs.front() < y.runs.front();
  });
  ShardPlan plan;
  plan.runs.resize(static_cast<size_t>(count));
  plan.predicted_ms.assign(static_cast<size_t>(count), 0);
  for (const auto& p : pieces) {
    size_t best = 0;
    for (size_t s = 1; s < plan.runs.size(); ++s) {
      if (plan.predicted_ms[s] < plan.predicted_ms[best]) best = s;
    }
    plan.runs[best].insert(plan.runs[best].end(), p.runs.begin(), p.runs.end());
    plan.predicted_ms[best] += p.ms;
  }
  for (auto& r : plan.runs) std::sort(r.begin(), r.end());
  return plan;
}

}  // namespace

StatusOr<ShardSpec> parse_shard_spec(const std::string& text) {
  const std::string rule = "--shard '" + text + "': expected I/N with 1 <= I <= N (e.g. 2/8; I is 1-based)";
  const size_t slash = text.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 >= text.size()) return invalid_argument(rule);
  auto parse_int = [](const std::string& s, int* out) {
    if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos) return false;
    *out = std::atoi(s.c_str());
    return true;
  };
  ShardSpec spec;
  if (!parse_int(text.substr(0, slash), &spec.index) || !parse_int(text.substr(slash + 1), &spec.count)) {
    return invalid_argument(rule);
  }
  if (spec.count < 1 || spec.count > kMaxShards) {
    return invalid_argument(rule + ": N must be 1.." + std::to_string(kMaxShards));
  }
  if (spec.index < 1 || spec.index > spec.count) {
    return invalid_argument(rule + ": " + std::to_string(spec.index) + " is outside 1.." + std::to_string(spec.count));
  }
  return spec;
}

Profile planning_profile() {
  Profile p;
  p.name = "planning-machine";
  p.description = "fixed machine for shard planning and dry-run estimates without a profile";
  p.ram_gb = 32;
  p.ram_bw_gb_s = 10;
  p.storage_gb_s = 1;
  p.has_gpu = true;
  p.vram_gb = 24;
  p.gpu_mem_bw_gb_s = 900;
  p.pcie_gb_s = 25;
  p.cpu_cores = 8;
  return p;
}

double estimate_run_s(const RunSpec& r, double model_bytes, const Profile& prof) {
  PredictInput in;
  in.model_bytes = model_bytes;
  in.backend = r.point.value("backend", "cpu");
  in.residency = r.point.value("residency", "full");
  in.io = r.point.value("io", "pread");
  in.prefetch = static_cast<int>(r.point.value("prefetch", int64_t{1}));
  in.vram_budget_mb = r.point.value("vram_budget_mb", int64_t{0});
  in.ram_budget_mb = r.point.value("ram_budget_mb", int64_t{0});
  const Prediction p = predict(prof, in);
  const double tokens = static_cast<double>(r.point.value("gen", int64_t{0}) + (r.point.value("prompt", int64_t{0}) > 0 ? 1 : 0));
  const double passes = static_cast<double>(r.point.value("warmup", int64_t{1}) + r.point.value("reps", int64_t{1}));
  const double load_s = model_bytes / (std::max(prof.storage_gb_s, 0.1) * 1e9);
  // Compute on a CPU is far from the memory-bandwidth bound for small models: count at least 1 ms.
  return load_s + passes * tokens * std::max(p.ms_per_token, 1.0) / 1e3 + 0.05;
}

std::map<std::string, double> planned_model_bytes(const std::vector<RunSpec>& runs, const std::string& flea) {
  std::map<std::string, double> bytes;
  for (const auto& r : runs) {
    if (bytes.count(r.model.path)) continue;
    double b = 0;
    if (r.model.synth) {
      // The cached file may exist on one node and not on another: always ask for the plan.
      std::vector<std::string> argv = {flea};
      for (const std::string& a : synth_args(r.model)) argv.push_back(a);
      argv.push_back("--dry-run");
      ChildResult c = run_child(argv, 60);
      const size_t p = c.out.find("planned_bytes ");
      if (c.exit_code == 0 && p != std::string::npos) b = std::atof(c.out.c_str() + p + 14);
    } else {
      struct stat st;
      if (stat(r.model.path.c_str(), &st) == 0) b = static_cast<double>(st.st_size);
    }
    bytes[r.model.path] = b;
  }
  return bytes;
}

std::vector<int64_t> planned_run_ms(const std::vector<RunSpec>& runs, const std::map<std::string, double>& model_bytes,
                                    const Profile& prof) {
  std::vector<int64_t> ms;
  ms.reserve(runs.size());
  for (const auto& r : runs) {
    auto it = model_bytes.find(r.model.path);
    const double s = estimate_run_s(r, it == model_bytes.end() ? 0.0 : it->second, prof);
    ms.push_back(std::max<int64_t>(1, std::llround(std::min(s, 1e12) * 1e3)));
  }
  return ms;
}

std::string sweep_fingerprint(const std::vector<RunSpec>& runs) {
  std::string keys;
  for (const auto& r : runs) keys += run_key(r.engine, r.point) + "\n";
  return sha256_hex(keys);
}

ShardPlan plan_shards(const std::vector<RunSpec>& runs, const std::vector<int64_t>& run_ms, int count) {
  FLEA_CHECK(count >= 1, "plan_shards: count must be >= 1");
  FLEA_CHECK(run_ms.size() == runs.size(), "plan_shards: one cost per run");
  const size_t n = runs.size();
  std::map<std::string, size_t> index_of;
  for (size_t i = 0; i < n; ++i) index_of[runs[i].id] = i;
  // Atoms: a baseline run and the runs it serves. Groups: atoms plus every run on the same model.
  Groups atoms(n), groups(n);
  std::map<std::string, size_t> first_of_model;
  for (size_t i = 0; i < n; ++i) {
    for (const auto& id : runs[i].serves) {
      auto it = index_of.find(id);
      if (it == index_of.end()) continue;
      atoms.unite(i, it->second);
      groups.unite(i, it->second);
    }
    auto m = first_of_model.emplace(runs[i].model.path, i);
    groups.unite(i, m.first->second);
  }
  int64_t total_ms = 0;
  for (int64_t c : run_ms) total_ms += c;

  // Groups in order of their first run; within a group, atoms in order of their first run.
  std::map<size_t, std::map<size_t, Piece>> by_group;  // group root → atom root → atom
  for (size_t i = 0; i < n; ++i) {
    Piece& a = by_group[groups.find(i)][atoms.find(i)];
    a.runs.push_back(i);
    a.ms += run_ms[i];
  }
  std::vector<std::vector<Piece>> seqs;
  for (auto& [root, group_atoms] : by_group) {
    std::vector<Piece> seq;
    for (auto& [aroot, a] : group_atoms) seq.push_back(std::move(a));
    std::sort(seq.begin(), seq.end(), [](const Piece& x, const Piece& y) { return x.runs.front() < y.runs.front(); });
    seqs.push_back(std::move(seq));
  }
  // Two ways to cut a group above its share; the plan with the shorter longest shard wins (ties:
  // the first). Cutting near multiples of the share suits a big group beside small ones (10 + 2
  // in 2 → 6 | 4+2); the best k-way partition suits a sweep of one model with uneven runs.
  const ShardPlan near = assign_longest_first(pieces_of(seqs, total_ms, count, cuts_near_multiples), count);
  const ShardPlan even = assign_longest_first(pieces_of(seqs, total_ms, count, cuts_min_max), count);
  auto longest = [](const ShardPlan& p) { return *std::max_element(p.predicted_ms.begin(), p.predicted_ms.end()); };
  return longest(even) < longest(near) ? even : near;
}

Status make_parent_dirs(const std::string& file) {
  const size_t slash = file.rfind('/');
  if (slash == std::string::npos || slash == 0) return ok_status();
  const std::string dir = file.substr(0, slash);
  size_t pos = 0;
  while (true) {
    pos = dir.find('/', pos + 1);
    const std::string prefix = dir.substr(0, pos);  // a/, a/b/, ..., then the whole dir
    struct stat st;
    if (mkdir(prefix.c_str(), 0755) != 0) {
      const int e = errno;
      if (e != EEXIST && !(stat(prefix.c_str(), &st) == 0 && S_ISDIR(st.st_mode))) {
        return io_error("cannot create directory " + prefix + ": " + std::strerror(e));
      }
    }
    if (pos == std::string::npos) break;
  }
  return ok_status();
}

Json shard_context(const ShardSpec& s, const std::string& fingerprint, size_t n_runs_total,
                   const std::vector<RunSpec>& shard_runs, double predicted_s) {
  Json ids = Json::array();
  for (const auto& r : shard_runs) ids.push_back(r.id);
  return {{"index", s.index}, {"count", s.count}, {"sweep_fingerprint", fingerprint},
          {"n_runs_total", static_cast<int64_t>(n_runs_total)}, {"run_ids", ids}, {"predicted_s", predicted_s}};
}

}  // namespace flea::harness
