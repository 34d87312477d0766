#include "sweep.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>

#include "env.h"
#include "model/synth.h"

namespace flea::harness {
namespace {

// Whatever `flea synth --type` accepts (one list, in model/synth.cpp).
const std::vector<std::string>& synth_types() {
  static const std::vector<std::string> k = synth::file_type_names();
  return k;
}

// The shortest decimal that reads back as v (1 for 1.0, 0.1 for 0.1): in file names and on the
// flea synth command line.
std::string skew_text(double v) {
  char buf[32];
  for (int digits = 1; digits <= 17; ++digits) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

}  // namespace

std::vector<std::string> synth_args(const ModelRef& m) {
  std::vector<std::string> a = {"synth", "--shape", m.shape, "--type", m.type, "--seed", std::to_string(m.seed)};
  if (m.expert_skew > 0) {
    a.push_back("--expert-skew");
    a.push_back(skew_text(m.expert_skew));
  }
  return a;
}

std::string default_cache_dir() {
  const char* env = std::getenv("FLEA_CACHE_DIR");
  if (env != nullptr && *env != '\0') return env;
  return source_dir() + "/.cache/models";
}

StatusOr<ModelRef> resolve_model(const std::string& spec, const std::string& scenario_dir,
                                 const std::string& reference_dir, const std::string& cache_dir) {
  ModelRef m;
  m.spec = spec;
  if (spec.rfind("synth:", 0) == 0) {
    std::vector<std::string> parts;
    size_t pos = 6;
    while (true) {
      size_t c = spec.find(':', pos);
      parts.push_back(spec.substr(pos, c == std::string::npos ? std::string::npos : c - pos));
      if (c == std::string::npos) break;
      pos = c + 1;
    }
    if (parts.size() < 2 || parts.size() > 4 || parts[0].empty()) {
      return invalid_argument("model '" + spec + "': expected synth:<shape>:<type>[:seed][:skew=S], e.g. "
                              "synth:tiny:Q4_K_M or synth:mixtral-8x7b:Q4_K_M:seed=0:skew=1");
    }
    const auto& types = synth_types();
    if (std::find(types.begin(), types.end(), parts[1]) == types.end()) {
      std::string list;
      for (const auto& t : types) list += (list.empty() ? "" : "|") + t;
      return invalid_argument("model '" + spec + "': unknown type '" + parts[1] + "' (" + list + ")");
    }
    m.synth = true;
    m.shape = parts[0];
    m.type = parts[1];
    std::set<std::string> seen;
    for (size_t i = 2; i < parts.size(); ++i) {
      const size_t eq = parts[i].find('=');
      // A bare third field is the seed (the older form).
      const std::string key = eq != std::string::npos ? parts[i].substr(0, eq) : i == 2 ? "seed" : "";
      const std::string value = eq != std::string::npos ? parts[i].substr(eq + 1) : parts[i];
      if (key != "seed" && key != "skew") {
        return invalid_argument("model '" + spec + "': unknown field '" + parts[i] + "' (seed=N, skew=S)");
      }
      if (!seen.insert(key).second) return invalid_argument("model '" + spec + "': " + key + " given twice");
      char* end = nullptr;
      if (key == "seed") {
        m.seed = std::strtoull(value.c_str(), &end, 10);
        if (value.empty() || *end != '\0') return invalid_argument("model '" + spec + "': seed '" + value + "' is not an integer");
      } else {
        m.expert_skew = std::strtod(value.c_str(), &end);
        if (value.empty() || *end != '\0' || !std::isfinite(m.expert_skew) || m.expert_skew < 0) {
          return invalid_argument("model '" + spec + "': skew '" + value + "' is not a number >= 0");
        }
        auto preset = synth::synth_preset(m.shape);
        if (m.expert_skew > 0 && preset.ok() && preset->n_expert == 0) {
          return invalid_argument("model '" + spec + "': skew needs a mixture-of-experts shape; " + m.shape + " is dense");
        }
      }
    }
    m.path = cache_dir + "/synth-" + m.shape + "-" + m.type + "-s" + std::to_string(m.seed) +
             (m.expert_skew > 0 ? "-skew" + skew_text(m.expert_skew) : "") + ".gguf";
    return m;
  }
  if (spec.rfind("reference:", 0) == 0) {
    if (reference_dir.empty()) return invalid_argument("model '" + spec + "' needs the scenario key 'reference'");
    m.path = reference_dir + "/" + spec.substr(10);
    return m;
  }
  m.path = expand_path(spec, scenario_dir);
  return m;
}

// Keys sorted (nlohmann::json orders objects by key), so a results file rewritten by a tool that
// reorders keys still matches its points on --resume.
std::string run_key(const std::string& engine, const Json& point) {
  return engine + "|" + nlohmann::json::parse(point.dump()).dump();
}

StatusOr<std::vector<RunSpec>> expand_sweep(const Scenario& s, const SweepOptions& o) {
  const Json& st = s.settings;
  const std::vector<std::string> keys = point_keys();
  // Base points: explicit points, or one empty point; each then expands over list-valued keys it
  // does not set itself.
  std::vector<Json> bases;
  if (st["points"].is_array() && !st["points"].empty()) {
    for (const auto& p : st["points"]) bases.push_back(p);
  } else {
    bases.push_back(Json::object());
  }
  std::vector<Json> points;
  for (const Json& base : bases) {
    std::vector<Json> partial = {Json::object()};
    for (const auto& k : keys) {
      Json values;
      if (base.contains(k)) values = Json::array({base[k]});
      else if (st[k].is_array()) values = st[k];
      else values = Json::array({st[k]});
      // model: 'reference' stands for every model in the reference manifest.
      if (k == "model") {
        Json expanded = Json::array();
        for (const auto& v : values) {
          if (v.is_string() && v.get<std::string>() == "reference") {
            if (o.reference_models.empty()) {
              return invalid_argument(s.path + ": model 'reference' needs the key 'reference' (a reference dir or manifest)");
            }
            for (const auto& f : o.reference_models) expanded.push_back("reference:" + f);
          } else {
            expanded.push_back(v);
          }
        }
        values = expanded;
      }
      std::vector<Json> next;
      for (const auto& p : partial) {
        for (const auto& v : values) {
          Json q = p;
          q[k] = v;
          next.push_back(q);
        }
      }
      partial = std::move(next);
    }
    for (auto& p : partial) points.push_back(std::move(p));
  }
  // 'draft' and 'draft_k' exist only on speculative points, 'huge_pages' only where it is "off"
  // and queue_depth and the expert_* keys only where they differ from the engine's defaults, so
  // every other point keeps the identity (run_key, the gate's point key) it had before
  // these keys existed and baselines written then still match.
  for (auto& p : points) {
    if (!p["draft"].is_string()) {
      p.erase("draft");
      p.erase("draft_k");
    }
    if (p.value("huge_pages", std::string("on")) == "on") p.erase("huge_pages");
    if (p.value("queue_depth", int64_t{4}) == 4) p.erase("queue_depth");
    if (p.value("expert_residency", std::string("expert")) == "expert") p.erase("expert_residency");
    if (p.value("expert_cache", int64_t{-1}) == -1) p.erase("expert_cache");
    if (p.value("expert_policy", std::string("lru")) == "lru") p.erase("expert_policy");
  }
  // Serving points: `concurrency` and the effective `serve` settings are part of the point, the
  // bench-only keys are not; elsewhere `concurrency` is dropped (bench points keep their identity).
  const bool serving = st["serve"].is_object();
  if (serving) {
    if (!st["baselines"].empty()) return invalid_argument(s.path + ": baselines are not supported with serve yet");
    if (st["reference"].is_string()) return invalid_argument(s.path + ": reference checks are not supported with serve");
    if (!st["draft"].is_null()) return invalid_argument(s.path + ": draft (speculative decoding) is not supported with serve");
    int64_t max_concurrency = 1;
    for (const auto& p : points) max_concurrency = std::max(max_concurrency, p["concurrency"].get<int64_t>());
    Json sv = st["serve"];
    if (sv["parallel"].get<int64_t>() == 0) sv["parallel"] = std::min<int64_t>(max_concurrency, 256);
    if (sv["ctx"].get<int64_t>() == 0) {
      const int64_t need = 2 * sv["prompt_tokens"].get<int64_t>() + sv["output_tokens"].get<int64_t>() + 16;
      sv["ctx"] = (need + 63) / 64 * 64;
    }
    for (auto& p : points) {
      for (const char* k : {"prompt", "gen", "batch", "reps", "warmup", "kv", "compute", "draft", "draft_k"}) p.erase(k);
      p["serve"] = sv;
    }
  } else {
    for (auto& p : points) p.erase("concurrency");
  }
  // Models in first-seen order; runs grouped by model (stable within a model).
  std::vector<std::string> model_order;
  for (const auto& p : points) {
    if (!p["model"].is_string()) {
      return invalid_argument(s.path + ": no model for a run point (set 'model' at the top or in every point)");
    }
    const std::string m = p["model"];
    if (std::find(model_order.begin(), model_order.end(), m) == model_order.end()) model_order.push_back(m);
  }
  std::stable_sort(points.begin(), points.end(), [&](const Json& a, const Json& b) {
    auto ia = std::find(model_order.begin(), model_order.end(), a["model"].get<std::string>());
    auto ib = std::find(model_order.begin(), model_order.end(), b["model"].get<std::string>());
    return ia < ib;
  });

  std::vector<RunSpec> runs;
  std::set<std::string> seen;
  std::map<std::string, size_t> baseline_run_of;  // key → index in runs
  const Json& baselines = st["baselines"];
  for (const Json& p : points) {
    RunSpec r;
    if (serving) r.engine = "flea-serve";
    r.requested_point = p;
    r.point = p;
    if (o.emulate != nullptr) {
      r.point["vram_budget_mb"] = cap_budget_mb(p["vram_budget_mb"].get<int64_t>(), emulated_vram_budget_mb(*o.emulate));
      r.point["ram_budget_mb"] = cap_budget_mb(p["ram_budget_mb"].get<int64_t>(), emulated_ram_budget_mb(*o.emulate));
      const double req = p["throttle_gb_s"].get<double>();
      r.point["throttle_gb_s"] = req > 0 ? std::min(req, o.emulate->storage_gb_s) : o.emulate->storage_gb_s;
    }
    const std::string key = run_key(r.engine, r.point);
    if (!seen.insert(key).second) continue;  // the same point twice runs once
    auto model = resolve_model(p["model"].get<std::string>(), s.dir, o.reference_dir, o.cache_dir);
    if (!model.ok()) return invalid_argument(s.path + ": " + model.status().message());
    r.model = *model;
    if (p.contains("draft")) {
      auto draft = resolve_model(p["draft"].get<std::string>(), s.dir, o.reference_dir, o.cache_dir);
      if (!draft.ok()) return invalid_argument(s.path + ": draft: " + draft.status().message());
      if (draft->synth) {
        return invalid_argument(s.path + ": draft '" + draft->spec + "': give a GGUF path or reference:<file> "
                                "(a synthetic draft agrees with no other model, so it would measure nothing)");
      }
      struct stat st;
      if (stat(draft->path.c_str(), &st) != 0) {
        return invalid_argument(s.path + ": draft model file not found: " + draft->path + " ('" + draft->spec + "')");
      }
      r.draft_path = draft->path;
    }
    runs.push_back(r);
    const size_t flea_index = runs.size() - 1;
    for (size_t bi = 0; bi < baselines.size(); ++bi) {
      const std::string engine = baselines[bi]["engine"];
      RunSpec b;
      b.engine = engine;
      b.model = r.model;
      b.baseline_index = static_cast<int>(bi);
      b.point = r.point;
      b.requested_point = r.requested_point;
      if (engine == "load-then-compute") {
        b.point["prefetch"] = 0;
      } else {
        // llama-bench has no residency/io axes: one baseline per model/shape/threads/budget.
        Json q;
        for (const char* k : {"model", "backend", "prompt", "gen", "threads", "reps", "warmup", "vram_budget_mb"}) q[k] = r.point[k];
        b.point = q;
      }
      const std::string bkey = run_key(engine, b.point);
      auto it = baseline_run_of.find(bkey);
      if (it == baseline_run_of.end()) {
        b.serves.push_back(std::to_string(flea_index));
        runs.push_back(b);
        baseline_run_of[bkey] = runs.size() - 1;
      } else {
        runs[it->second].serves.push_back(std::to_string(flea_index));
      }
    }
  }
  char buf[32];
  for (size_t i = 0; i < runs.size(); ++i) {
    std::snprintf(buf, sizeof(buf), "r%04zu", i + 1);
    runs[i].id = buf;
  }
  // serves held indices until ids existed.
  for (auto& r : runs) {
    for (auto& sv : r.serves) sv = runs[std::stoul(sv)].id;
  }
  return runs;
}

}  // namespace flea::harness
