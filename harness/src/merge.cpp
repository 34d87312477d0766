#include "merge.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <string>

#include "env.h"
#include "results.h"
#include "shard.h"

namespace flea::harness {
namespace {

// Results files nest a handful of levels; anything far deeper is not one, and refusing it keeps
// the recursive dump() of the merged file off a stack overflow. Checked by the JSON parser itself
// (its callback sees each container's depth), so no second scanner has to agree with it.
constexpr int kMaxDepth = 128;
struct TooDeep {};

Json parse_depth_limited(const std::string& text) {
  return Json::parse(text, [](int depth, Json::parse_event_t event, Json&) {
    // depth: how many containers enclose the one starting.
    const bool opens = event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start;
    if (opens && depth >= kMaxDepth) throw TooDeep{};
    return true;
  });
}

// obj[key] when obj is an object holding key, else nullptr.
const Json* member(const Json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}
std::string string_or(const Json& obj, const char* key, const std::string& fallback) {
  const Json* v = member(obj, key);
  return v != nullptr && v->is_string() ? v->get<std::string>() : fallback;
}
Json value_or_null(const Json& obj, const char* key) {
  const Json* v = member(obj, key);
  return v != nullptr ? *v : Json(nullptr);
}

std::string join_ints(const std::vector<int>& v, const char* sep) {
  std::string s;
  for (int i : v) s += (s.empty() ? "" : sep) + std::to_string(i);
  return s;
}

std::string shell_word(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./-+=:,@") ==
                        std::string::npos) {
    return s;
  }
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// The harness writes <run-id>.trace.json (or <FILE minus .json>.trace.json) beside each results
// file, so `merge out/*.json` names the traces too; they are skipped by name, unread (they are large).
constexpr const char* kTraceSuffix = ".trace.json";
bool is_trace_file_name(const std::string& f) {
  const size_t n = std::char_traits<char>::length(kTraceSuffix);
  return f.size() >= n && f.compare(f.size() - n, n, kTraceSuffix) == 0;
}

// rNNNN ids sort by length first, so r10000 follows r9999.
bool id_less(const std::string& a, const std::string& b) { return a.size() != b.size() ? a.size() < b.size() : a < b; }

// "'A' (shard 1), 'B' (shards 2 3)" when the shards disagree on a field; "" when they agree.
struct Field {
  const char* label;    // as printed
  const char* parent;   // context member ("" = the context itself)
  const char* key;
};
std::string describe_difference(const std::vector<const ShardFile*>& shards, const Field& f) {
  std::vector<std::pair<std::string, std::vector<int>>> values;  // first-seen order
  for (const ShardFile* s : shards) {
    const Json& ctx = s->doc["context"];
    const Json* parent = member(ctx, f.parent);
    std::string v;
    if (std::string(f.parent) == "gpu" && (parent == nullptr || parent->is_null())) v = "none";
    else v = parent != nullptr && member(*parent, f.key) != nullptr ? member(*parent, f.key)->dump() : "missing";
    auto it = std::find_if(values.begin(), values.end(), [&](const auto& p) { return p.first == v; });
    if (it == values.end()) values.push_back({v, {s->index}});
    else it->second.push_back(s->index);
  }
  if (values.size() < 2) return "";
  std::string out = std::string(f.label) + " differs: ";
  for (size_t i = 0; i < values.size(); ++i) {
    out += (i ? ", " : "") + values[i].first + " (shard" + (values[i].second.size() > 1 ? "s " : " ") +
           join_ints(values[i].second, " ") + ")";
  }
  return out;
}

}  // namespace

StatusOr<ShardFile> parse_shard_file(const std::string& file, const std::string& text) {
  auto bad = [&](const std::string& what) { return invalid_argument(file + ": " + what); };
  if (text.empty()) return bad("empty file");
  ShardFile s;
  s.file = file;
  try {
    s.doc = parse_depth_limited(text);
  } catch (const TooDeep&) {
    return bad("nested deeper than " + std::to_string(kMaxDepth) + " levels: not a results file");
  } catch (const Json::exception& e) {
    return bad(std::string("not JSON: ") + e.what());
  }
  if (!s.doc.is_object()) return bad("not a results file: the top level is not an object");
  const Json* ctx = member(s.doc, "context");
  if (ctx == nullptr && member(s.doc, "traceEvents") != nullptr) return bad("a Chrome trace (traceEvents), not a results file");
  if (ctx == nullptr || !ctx->is_object()) return bad("not a results file: no context object");
  const Json* shard = member(*ctx, "shard");
  if (shard == nullptr) return bad("no context.shard: not a shard file (it was written without --shard I/N)");
  if (!shard->is_object()) return bad("context.shard is not an object");

  auto int_field = [&](const char* key, int64_t lo, int64_t hi, int64_t* out) -> Status {
    const Json* v = member(*shard, key);
    if (v == nullptr || !v->is_number_integer()) return bad(std::string("context.shard.") + key + " is missing or not an integer");
    const int64_t x = v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX) ? -1 : v->get<int64_t>();
    if (x < lo || x > hi) {
      return bad(std::string("context.shard.") + key + " = " + v->dump() + " is outside " + std::to_string(lo) + ".." +
                 std::to_string(hi));
    }
    *out = x;
    return ok_status();
  };
  int64_t count = 0, index = 0;
  FLEA_RETURN_IF_ERROR(int_field("count", 1, kMaxShards, &count));
  FLEA_RETURN_IF_ERROR(int_field("index", 1, count, &index));
  FLEA_RETURN_IF_ERROR(int_field("n_runs_total", 0, INT64_MAX, &s.n_runs_total));
  s.count = static_cast<int>(count);
  s.index = static_cast<int>(index);
  const Json* fp = member(*shard, "sweep_fingerprint");
  if (fp == nullptr || !fp->is_string() || fp->get<std::string>().empty()) return bad("context.shard.sweep_fingerprint is missing or not a string");
  s.fingerprint = fp->get<std::string>();
  const Json* ids = member(*shard, "run_ids");
  if (ids == nullptr || !ids->is_array()) return bad("context.shard.run_ids is missing or not an array");
  std::set<std::string> planned;
  for (const auto& id : *ids) {
    if (!id.is_string()) return bad("context.shard.run_ids holds a non-string: " + id.dump());
    if (!planned.insert(id.get<std::string>()).second) return bad("context.shard.run_ids lists " + id.dump() + " twice");
    s.run_ids.push_back(id.get<std::string>());
  }
  if (static_cast<int64_t>(s.run_ids.size()) > s.n_runs_total) {
    return bad("context.shard.run_ids has " + std::to_string(s.run_ids.size()) + " ids but n_runs_total is " +
               std::to_string(s.n_runs_total));
  }

  const Json* sc = member(*ctx, "scenario");
  if (sc == nullptr || !sc->is_object()) return bad("context.scenario is missing or not an object");
  const Json* name = member(*sc, "name");
  const Json* sha = member(*sc, "sha256");
  if (name == nullptr || !name->is_string()) return bad("context.scenario.name is missing or not a string");
  if (sha == nullptr || !sha->is_string()) return bad("context.scenario.sha256 is missing or not a string");
  s.scenario_name = name->get<std::string>();
  s.scenario_sha256 = sha->get<std::string>();
  s.scenario_path = string_or(*sc, "path", "");

  const Json* build = member(*ctx, "build");
  if (build != nullptr && !build->is_object()) return bad("context.build is not an object");
  const Json* rev = build != nullptr ? member(*build, "git_rev") : nullptr;
  if (rev != nullptr && !rev->is_string()) return bad("context.build.git_rev is not a string");
  s.git_rev = rev != nullptr ? rev->get<std::string>() : "";
  const Json* host = member(*ctx, "host");
  if (host != nullptr && !host->is_object()) return bad("context.host is not an object");
  s.hostname = host != nullptr ? string_or(*host, "hostname", "") : "";
  const Json* warnings = member(*ctx, "warnings");
  if (warnings != nullptr) {
    if (!warnings->is_array()) return bad("context.warnings is not an array");
    for (const auto& w : *warnings) {
      if (!w.is_string()) return bad("context.warnings holds a non-string: " + w.dump());
    }
  }
  const Json* effective = member(*ctx, "effective");
  if (effective != nullptr && !effective->is_object()) return bad("context.effective is not an object");

  const Json* status = member(s.doc, "status");
  if (status == nullptr || !status->is_object()) return bad("status is missing or not an object");
  const Json* complete = member(*status, "complete");
  if (complete == nullptr || !complete->is_boolean()) return bad("status.complete is missing or not a boolean");
  s.complete = complete->get<bool>();
  const Json* ceilings = member(s.doc, "ceilings");
  if (ceilings == nullptr || !ceilings->is_object()) return bad("ceilings is missing or not an object");

  const Json* runs = member(s.doc, "runs");
  if (runs == nullptr || !runs->is_array()) return bad("runs is missing or not an array");
  std::set<std::string> seen;
  for (size_t i = 0; i < runs->size(); ++i) {
    const Json& r = (*runs)[i];
    const std::string where = "runs[" + std::to_string(i) + "]";
    if (!r.is_object()) return bad(where + " is not an object");
    const Json* id = member(r, "id");
    if (id == nullptr || !id->is_string()) return bad(where + ".id is missing or not a string");
    const std::string rid = id->get<std::string>();
    if (!seen.insert(rid).second) return bad(where + ": run " + id->dump() + " appears twice");
    if (!planned.count(rid)) return bad(where + ": run " + id->dump() + " is not in context.shard.run_ids");
    const Json* st = member(r, "status");
    if (st != nullptr && !st->is_string()) return bad(where + ".status is not a string");
    const Json* harness = member(r, "harness");
    if (harness != nullptr && !harness->is_object()) return bad(where + ".harness is not an object");
  }
  return s;
}

StatusOr<MergeOutput> merge_shards(const std::vector<ShardFile>& shards, const MergeOptions& o) {
  if (shards.empty()) return invalid_argument("merge: no input files");
  const ShardFile& first = shards.front();
  std::map<int, const ShardFile*> by_index;
  for (const ShardFile& s : shards) {
    const std::string both = first.file + " and " + s.file;
    if (s.scenario_name != first.scenario_name || s.scenario_sha256 != first.scenario_sha256) {
      return invalid_argument(both + " ran different scenarios: '" + first.scenario_name + "' (sha256 " +
                              first.scenario_sha256 + ") vs '" + s.scenario_name + "' (sha256 " + s.scenario_sha256 + ")");
    }
    if (s.count != first.count) {
      return invalid_argument(both + " were cut into different shard counts: " + std::to_string(first.count) + " vs " +
                              std::to_string(s.count));
    }
    if (s.fingerprint != first.fingerprint || s.n_runs_total != first.n_runs_total) {
      return invalid_argument(both + " expanded the sweep differently: sweep_fingerprint " + first.fingerprint + " (" +
                              std::to_string(first.n_runs_total) + " runs) vs " + s.fingerprint + " (" +
                              std::to_string(s.n_runs_total) + " runs)");
    }
    auto ins = by_index.emplace(s.index, &s);
    if (!ins.second) {
      return invalid_argument(ins.first->second->file + " and " + s.file + " are both shard " + std::to_string(s.index) +
                              "/" + std::to_string(s.count));
    }
  }
  std::vector<const ShardFile*> sorted;
  for (const auto& [i, s] : by_index) sorted.push_back(s);
  const ShardFile& low = *sorted.front();

  MergeOutput m;
  // One git revision: numbers from different code are not one measurement.
  const auto other_rev = std::find_if(sorted.begin(), sorted.end(), [&](const ShardFile* s) { return s->git_rev != low.git_rev; });
  if (other_rev != sorted.end()) {
    if (!o.allow_mixed_revisions) {
      return invalid_argument(low.file + " and " + (*other_rev)->file + " were built from different git revisions: '" +
                              low.git_rev + "' vs '" + (*other_rev)->git_rev + "' (pass --allow-mixed-revisions to merge anyway)");
    }
    std::string revs;
    for (const ShardFile* s : sorted) revs += (revs.empty() ? "" : ", ") + std::string("shard ") + std::to_string(s->index) + " '" + s->git_rev + "'";
    m.warnings.push_back("mixed git revisions (--allow-mixed-revisions): " + revs);
  }
  // Every run belongs to exactly one shard, else the nodes planned different slices.
  std::map<std::string, const ShardFile*> owner;
  for (const ShardFile* s : sorted) {
    for (const auto& id : s->run_ids) {
      auto ins = owner.emplace(id, s);
      if (!ins.second) {
        return invalid_argument(ins.first->second->file + " (shard " + std::to_string(ins.first->second->index) + ") and " +
                                s->file + " (shard " + std::to_string(s->index) + ") both list run " + id +
                                ": the shards were planned differently (another --profile, or model files that differ)");
      }
    }
  }

  // Machines and builds that measured something: an empty shard's host (storage device
  // "unknown": it opened no model) says nothing about the numbers.
  std::vector<const ShardFile*> measured;
  for (const ShardFile* s : sorted) {
    if (!s->doc["runs"].empty()) measured.push_back(s);
  }
  bool mixed_hardware = false, mixed_builds = false;
  const Field hardware[] = {{"host.cpu_model", "host", "cpu_model"}, {"host.cpu_cores", "host", "cpu_cores"},
                            {"host.ram_bytes", "host", "ram_bytes"}, {"host.storage_device", "host", "storage_device"},
                            {"gpu.name", "gpu", "name"}};
  for (const Field& f : hardware) {
    const std::string d = describe_difference(measured, f);
    if (!d.empty()) {
      mixed_hardware = true;
      m.warnings.push_back("mixed hardware: " + d);
    }
  }
  const Field builds[] = {{"build.build_type", "build", "build_type"}, {"build.compiler", "build", "compiler"},
                          {"build.flags", "build", "flags"}, {"build.cuda", "build", "cuda"},
                          {"build.io_uring", "build", "io_uring"}, {"build.git_dirty", "build", "git_dirty"}};
  for (const Field& f : builds) {
    const std::string d = describe_difference(measured, f);
    if (!d.empty()) {
      mixed_builds = true;
      m.warnings.push_back("mixed builds: " + d);
    }
  }

  std::vector<int> present, redo;
  for (const ShardFile* s : sorted) {
    present.push_back(s->index);
    if (!s->complete) m.incomplete.push_back(s->index);
  }
  for (int i = 1; i <= low.count; ++i) {
    if (!by_index.count(i)) m.missing.push_back(i);
  }
  std::set_union(m.missing.begin(), m.missing.end(), m.incomplete.begin(), m.incomplete.end(), std::back_inserter(redo));
  m.complete = redo.empty();
  if (!m.complete) {
    m.rerun = "scripts/slurm/submit.sh " + shell_word(low.scenario_path.empty() ? "SCENARIO.yaml" : low.scenario_path) +
              " --shards " + std::to_string(low.count) + " --only " + join_ints(redo, ",");
  }

  // Runs of every shard, by id, each saying where it ran.
  std::vector<Json> runs;
  Json shard_list = Json::array();
  std::map<std::string, Json> points;  // effective.points entries by id
  for (const ShardFile* s : sorted) {
    for (const auto& r : s->doc["runs"]) {
      Json rec = r;
      rec["shard"] = s->index;
      rec["hostname"] = s->hostname;
      runs.push_back(std::move(rec));
    }
    const Json& ctx = s->doc["context"];
    const Json* eff = member(ctx, "effective");
    const Json* pts = eff != nullptr ? member(*eff, "points") : nullptr;
    if (pts != nullptr && pts->is_array()) {
      for (const auto& p : *pts) {
        const Json* id = member(p, "id");
        if (id != nullptr && id->is_string()) points.emplace(id->get<std::string>(), p);
      }
    }
    const Json* build = member(ctx, "build");
    shard_list.push_back({{"index", s->index}, {"file", s->file}, {"run_id", string_or(ctx, "run_id", "")},
                          {"hostname", s->hostname}, {"git_rev", s->git_rev},
                          {"build_type", build != nullptr ? value_or_null(*build, "build_type") : Json(nullptr)},
                          {"compiler", build != nullptr ? value_or_null(*build, "compiler") : Json(nullptr)},
                          {"status", s->doc["status"]}, {"ceilings", s->doc["ceilings"]}});
  }
  std::stable_sort(runs.begin(), runs.end(), [](const Json& a, const Json& b) {
    return id_less(a["id"].get<std::string>(), b["id"].get<std::string>());
  });

  Json ctx = low.doc["context"];
  ctx.erase("shard");
  ctx["run_id"] = low.scenario_name + "-merged-" + (o.time_compact.empty() ? utc_now("%Y%m%dT%H%M%SZ") : o.time_compact);
  if (ctx.contains("effective") && ctx["effective"].is_object() && !points.empty()) {
    std::vector<std::string> ids;
    for (const auto& [id, p] : points) ids.push_back(id);
    std::sort(ids.begin(), ids.end(), id_less);
    Json pts = Json::array();
    for (const auto& id : ids) pts.push_back(points[id]);
    ctx["effective"]["points"] = pts;
  }
  // The shards' own warnings once each, saying which shards gave them.
  std::vector<std::pair<std::string, std::vector<int>>> shard_warnings;
  for (const ShardFile* s : sorted) {
    const Json* ws = member(s->doc["context"], "warnings");
    if (ws == nullptr) continue;
    for (const auto& w : *ws) {
      const std::string text = w.get<std::string>();
      auto it = std::find_if(shard_warnings.begin(), shard_warnings.end(), [&](const auto& p) { return p.first == text; });
      if (it == shard_warnings.end()) shard_warnings.push_back({text, {s->index}});
      else it->second.push_back(s->index);
    }
  }
  Json warnings = Json::array();
  for (const auto& w : m.warnings) warnings.push_back(w);
  if (!m.missing.empty()) warnings.push_back("missing shards: " + join_ints(m.missing, " ") + " (rerun: " + m.rerun + ")");
  if (!m.incomplete.empty()) warnings.push_back("incomplete shards: " + join_ints(m.incomplete, " ") + " (rerun: " + m.rerun + ")");
  for (const auto& [text, idx] : shard_warnings) {
    warnings.push_back(std::string(idx.size() > 1 ? "shards " : "shard ") + join_ints(idx, ",") + ": " + text);
  }
  ctx["warnings"] = warnings;
  ctx["merged"] = {{"n_shards", low.count}, {"present", present}, {"missing", m.missing}, {"incomplete", m.incomplete},
                   {"mixed_hardware", mixed_hardware}, {"mixed_builds", mixed_builds}, {"rerun", m.rerun}};
  ctx["shards"] = shard_list;

  int64_t n_ok = 0, n_failed = 0, n_skipped = 0;
  double overhead_ns = 0, child_ns = 0;
  Json run_array = Json::array();
  for (auto& r : runs) {
    const std::string st = string_or(r, "status", "");
    n_ok += st == "ok";
    n_failed += st == "failed";
    n_skipped += st == "skipped";
    const Json* h = member(r, "harness");
    const Json* ov = h != nullptr ? member(*h, "overhead_ns") : nullptr;
    const Json* ch = h != nullptr ? member(*h, "child_wall_ns") : nullptr;
    if (ov != nullptr && ch != nullptr && ov->is_number() && ch->is_number()) {
      overhead_ns += ov->get<double>();
      child_ns += ch->get<double>();
    }
    run_array.push_back(std::move(r));
  }
  Json out;
  out["context"] = ctx;
  out["ceilings"] = low.doc["ceilings"];
  out["runs"] = run_array;
  out["status"] = {{"complete", m.complete}, {"partial", !m.complete}, {"n_runs", static_cast<int64_t>(run_array.size())},
                   {"n_planned", low.n_runs_total}, {"n_ok", n_ok}, {"n_failed", n_failed}, {"n_skipped", n_skipped},
                   {"harness_overhead_fraction", child_ns > 0 && overhead_ns >= 0 ? Json(overhead_ns / child_ns) : Json(nullptr)}};
  const Json* claims = member(low.doc, "claims");
  if (claims != nullptr) out["claims"] = *claims;
  m.merged = std::move(out);
  return m;
}

int run_merge_command(const std::vector<std::string>& inputs, const std::string& out, bool allow_mixed_revisions) {
  auto fail = [](const std::string& msg) {
    std::fprintf(stderr, "run_lab_harness merge: %s\n", msg.c_str());
    return 2;
  };
  if (inputs.empty()) return fail("no shard files given (run_lab_harness merge A.json B.json ... --out MERGED.json)");
  std::vector<ShardFile> shards;
  size_t n_traces = 0;
  for (const auto& f : inputs) {
    if (is_trace_file_name(f)) {
      std::fprintf(stderr, "run_lab_harness merge: skipping %s (a Chrome trace, not a results file)\n", f.c_str());
      ++n_traces;
      continue;
    }
    struct stat st;
    if (stat(f.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return fail(f + ": cannot read the file");
    auto s = parse_shard_file(f, read_file_text(f));
    if (!s.ok()) return fail(s.status().message());
    shards.push_back(std::move(*s));
  }
  if (shards.empty()) return fail("no shard files among the " + std::to_string(n_traces) + " inputs (all Chrome traces)");
  auto merged = merge_shards(shards, MergeOptions{allow_mixed_revisions, ""});
  if (!merged.ok()) return fail(merged.status().message());
  for (const auto& w : merged->warnings) std::fprintf(stderr, "run_lab_harness merge: warning: %s\n", w.c_str());
  Status made = make_parent_dirs(out);
  if (!made.ok()) return fail(made.message());
  Status written = write_file_atomic(out, merged->merged.dump(1) + "\n");
  if (!written.ok()) return fail(written.message());
  if (!merged->missing.empty()) std::fprintf(stderr, "missing shards: %s\n", join_ints(merged->missing, " ").c_str());
  if (!merged->incomplete.empty()) std::fprintf(stderr, "incomplete shards: %s\n", join_ints(merged->incomplete, " ").c_str());
  if (!merged->complete) std::fprintf(stderr, "rerun: %s\n", merged->rerun.c_str());
  const Json& status = merged->merged["status"];
  std::printf("merged %zu of %d shards: %lld of %lld runs (%lld ok, %lld failed)%s\nresults: %s\n", shards.size(),
              shards.front().count, static_cast<long long>(status["n_runs"].get<int64_t>()),
              static_cast<long long>(status["n_planned"].get<int64_t>()), static_cast<long long>(status["n_ok"].get<int64_t>()),
              static_cast<long long>(status["n_failed"].get<int64_t>()), merged->complete ? "" : ", INCOMPLETE", out.c_str());
  return merged->complete ? 0 : 1;
}

}  // namespace flea::harness
