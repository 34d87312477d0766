#include "scenario.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "sha256.h"

namespace flea::harness {
namespace {

KeySpec key(std::string name, KeyType type, Json def, std::string help) {
  KeySpec k;
  k.name = std::move(name);
  k.type = type;
  k.default_value = std::move(def);
  k.help = std::move(help);
  return k;
}
KeySpec int_key(std::string name, int64_t def, double lo, double hi, bool sweep, std::string help) {
  KeySpec k = key(std::move(name), KeyType::kInt, def, std::move(help));
  k.min = lo;
  k.max = hi;
  k.sweepable = sweep;
  return k;
}
KeySpec float_key(std::string name, Json def, double lo, double hi, bool sweep, std::string help) {
  KeySpec k = key(std::move(name), KeyType::kFloat, std::move(def), std::move(help));
  k.min = lo;
  k.max = hi;
  k.sweepable = sweep;
  return k;
}
KeySpec enum_key(std::string name, Json def, std::vector<std::string> allowed, bool sweep, std::string help) {
  KeySpec k = key(std::move(name), KeyType::kEnum, std::move(def), std::move(help));
  k.allowed = std::move(allowed);
  k.sweepable = sweep;
  return k;
}
KeySpec nested(std::string name, KeyType type, const std::vector<KeySpec>* children, std::string help) {
  KeySpec k = key(std::move(name), type, nullptr, std::move(help));
  k.children = children;
  return k;
}
KeySpec required(KeySpec k) {
  k.default_value = "<required>";
  return k;
}
bool is_required(const KeySpec& k) {
  return k.default_value.is_string() && k.default_value.get<std::string>() == "<required>";
}

const char* type_name(const KeySpec& k) {
  switch (k.type) {
    case KeyType::kString: return "string";
    case KeyType::kInt: return "integer";
    case KeyType::kFloat: return "number";
    case KeyType::kBool: return "boolean";
    case KeyType::kEnum: return "one of";
    case KeyType::kPath: return "path";
    case KeyType::kMapList: return "list of maps";
    case KeyType::kMap: return "map";
    case KeyType::kPointList: return "list of points";
  }
  return "?";
}

std::string fmt_num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

std::string expectation(const KeySpec& k) {
  switch (k.type) {
    case KeyType::kInt: return "an integer in [" + fmt_num(k.min) + ", " + fmt_num(k.max) + "]";
    case KeyType::kFloat: return "a number in [" + fmt_num(k.min) + ", " + fmt_num(k.max) + "]";
    case KeyType::kBool: return "true or false";
    case KeyType::kEnum: {
      std::string s = "one of ";
      for (size_t i = 0; i < k.allowed.size(); ++i) s += (i ? "|" : "") + k.allowed[i];
      return s;
    }
    case KeyType::kString: return "a string";
    case KeyType::kPath: return "a path";
    case KeyType::kMapList: return "a list of maps";
    case KeyType::kMap: return "a map";
    case KeyType::kPointList: return "a list of maps (one per run point)";
  }
  return "?";
}

}  // namespace

const std::vector<KeySpec>& baseline_keys() {
  static const std::vector<KeySpec> k = {
      required(enum_key("engine", nullptr, {"llama-bench", "load-then-compute"}, false,
                        "baseline engine: llama.cpp's llama-bench, or ours with prefetch 0 (AirLLM-style loop)")),
      key("path", KeyType::kPath, nullptr,
          "llama-bench binary (else --llama-bench, $FLEA_LLAMA_BENCH, or scripts/build_baselines.sh's output)"),
      key("optional", KeyType::kBool, false, "a missing binary skips this baseline with a warning instead of failing"),
      int_key("ngl", -1, -1, 10000, false,
              "llama-bench -ngl (GPU layers); -1 = as many as fit the point's VRAM budget (0 on the CPU)"),
  };
  return k;
}

const std::vector<KeySpec>& claim_keys() {
  static const std::vector<KeySpec> k = {
      required(key("name", KeyType::kString, nullptr, "what is claimed, for the table")),
      key("source", KeyType::kString, nullptr, "where the figure was published"),
      key("model", KeyType::kString, nullptr, "model label, e.g. '70B Q4_K_M'"),
      required(float_key("model_gb", nullptr, 0.001, 100000, false, "weight bytes read per token, in GB (1e9)")),
      required(key("profile", KeyType::kString, nullptr, "hardware profile name or path")),
      required(float_key("claimed_ms_per_token", nullptr, 0.001, 1e9, false, "the published figure")),
      float_key("resident_gb", nullptr, 0, 100000, false,
                "weights resident in VRAM (default: all the profile's VRAM, the most optimistic case)"),
      key("host_cache", KeyType::kBool, true,
          "streamed weights may stay cached in host RAM (default true: optimistic, storage only sees what "
          "RAM cannot hold)"),
      enum_key("expect", nullptr, {"plausible", "tight", "impossible"}, false,
               "expected verdict; a different verdict fails the invocation (self-check)"),
  };
  return k;
}

const std::vector<KeySpec>& ceiling_keys() {
  static const std::vector<KeySpec> k = {
      key("fio", KeyType::kBool, true, "fio sequential read on each model file per I/O path"),
      int_key("fio_samples", 3, 1, 50, false, "fio repetitions per file and I/O path"),
      float_key("fio_runtime_s", 3.0, 0.1, 600, false, "cap on one fio repetition"),
      int_key("block_kb", 1024, 4, 65536, false, "fio block size (the engine's --io-block-kb default)"),
      int_key("iodepth", 4, 1, 1024, false, "fio iodepth for io_uring (the engine's --queue-depth default)"),
      enum_key("fio_mem", "both", {"both", "malloc", "hugetlb"}, false,
               "fio's buffers: malloc (fio's default, 4 KiB pages), hugetlb (--mem=mmaphuge; as root the harness "
               "reserves the few pool pages needed and gives them back), or both (malloc, plus hugetlb when the pool "
               "can be had; the floors use the better of the two)"),
      key("memory", KeyType::kBool, true,
          "host memory read bandwidth, STREAM-style: one pinned thread per CPU, AVX-512/AVX2 loads over buffers of "
          "1.25, 2 and 3x the LLC, best of memory_reps"),
      int_key("memory_reps", 5, 1, 100, false, "memory probe: best of up to this many passes per buffer size"),
      float_key("memory_budget_s", 1.5, 0.1, 600, false,
                "memory probe: no further repetition starts after this many seconds (two always run)"),
      key("h2d", KeyType::kBool, true, "pinned host-to-device copy bandwidth (needs a CUDA build and a GPU)"),
  };
  return k;
}

const std::vector<KeySpec>& serve_keys() {
  static const std::vector<KeySpec> k = {
      int_key("requests", 32, 1, 1e6, false, "timed requests per point, over all clients"),
      int_key("warmup_requests", 2, 0, 1e5, false, "untimed requests first, at up to the point's concurrency"),
      int_key("prompt_tokens", 128, 1, 1e6, false,
              "prompt length per request: text of about this many tokens (usage.prompt_tokens records what it was)"),
      int_key("output_tokens", 64, 1, 1e6, false, "max_tokens per request"),
      int_key("parallel", 0, 0, 256, false, "flea serve --parallel (sequence slots); 0 = the sweep's largest concurrency"),
      int_key("ctx", 0, 0, 1 << 20, false,
              "flea serve --ctx per sequence; 0 = 2 * prompt_tokens + output_tokens + 16, rounded up to 64"),
      int_key("port", 0, 0, 65535, false, "port flea serve listens on (127.0.0.1); 0 = a free one"),
      float_key("health_timeout_s", 600.0, 0.1, 1e6, false,
                "a server whose GET /health is not 200 after this long fails the point (with its log tail)"),
  };
  return k;
}

const std::vector<KeySpec>& scenario_keys() {
  static const std::vector<KeySpec> k = {
      key("name", KeyType::kString, nullptr, "scenario name (default: the file name without .yaml)"),
      key("description", KeyType::kString, nullptr, "one line on what the scenario is for"),
      [] {
        KeySpec s = key("model", KeyType::kString, nullptr,
                        "GGUF path, synth:<shape>:<type>[:seed][:skew=S] (generated once, cached in $FLEA_CACHE_DIR or "
                        "<repo>/.cache/models), or 'reference' for every model in the reference manifest");
        s.sweepable = true;
        return s;
      }(),
      enum_key("backend", "cpu", {"cpu", "cuda"}, true, "compute backend"),
      enum_key("residency", "full", {"full", "transient", "auto"}, true,
               "full: all resident; transient: every layer streams; auto: the planner fits the budgets"),
      enum_key("io", "pread", {"pread", "odirect", "io_uring", "mmap"}, true, "I/O backend for streamed weights"),
      int_key("prefetch", 1, 0, 64, true, "layers loaded ahead (0 = load then compute, 1 = double buffer)"),
      enum_key("huge_pages", "on", {"on", "off"}, true,
               "the engine's --huge-pages: staging and cache buffers on transparent huge pages (on) or 4 KiB pages"),
      int_key("queue_depth", 4, 1, 4096, true, "io_uring reads kept in flight (the engine's --queue-depth)"),
      enum_key("expert_residency", "expert", {"expert", "layer"}, true,
               "MoE layers that stream: expert = dense part ahead, then only the routed experts (expert cache); "
               "layer = every expert with its layer"),
      int_key("expert_cache", -1, -1, 4096, true, "experts cached per MoE layer (-1 = as many as ram_budget_mb leaves)"),
      enum_key("expert_policy", "lru", {"lru", "lfu"}, true, "which cached expert of a layer gives way"),
      int_key("vram_budget_mb", 0, 0, 1e8, true, "weight-memory budget in MiB (0 = unlimited; capped by an emulated profile)"),
      int_key("ram_budget_mb", 0, 0, 1e9, true, "host RAM budget for staging + cache in MiB (0 = unlimited)"),
      int_key("memory_limit_mb", 0, 0, 1e9, true,
              "memory cgroup limit in MiB around the engine and llama-bench alike, page cache included (0 = none; "
              "emulate: the profile's RAM is the default and the cap); a limit below this machine's RAM that "
              "cannot be set fails the run (cgroups need root)"),
      float_key("throttle_gb_s", 0.0, 0, 10000, true, "throttle storage reads to this GB/s (0 = off; set by an emulated profile)"),
      enum_key("kv", "resident", {"resident", "none", "host"}, true, "KV cache mode"),
      int_key("prompt", 64, 0, 65536, true, "prompt tokens per pp sample (0 = no pp)"),
      int_key("gen", 32, 0, 65536, true, "generated tokens per tg sample (0 = no tg)"),
      int_key("batch", 1, 1, 65536, true, "batch size"),
      [] {
        KeySpec s = key("draft", KeyType::kString, nullptr,
                        "speculative tg: a small draft model (GGUF path or reference:<file>), kept resident, proposes "
                        "tokens the streamed model verifies in one pass");
        s.sweepable = true;
        return s;
      }(),
      int_key("draft_k", 4, 1, 64, true, "tokens the draft proposes per step (with draft)"),
      int_key("threads", 0, 0, 1024, true, "compute threads (0 = all hardware threads)"),
      int_key("warmup", 1, 0, 100, true, "untimed repetitions first"),
      int_key("reps", 5, 1, 10000, true, "timed repetitions"),
      float_key("min_effect", 0.05, 0.001, 10, false,
                "smallest relative change of the median timing the perf gate should detect (report/gate.py "
                "--min-effect, same default); --dry-run prints the reps it needs, fewer reps is a warning"),
      float_key("noise_cv", 0.03, 0, 10, false,
                "expected run-to-run coefficient of variation of one timing sample on the machine; with "
                "min_effect it sets the reps the gate needs"),
      enum_key("compute", "full", {"full", "none"}, true, "none: only the plan's reads per token (the I/O path alone)"),
      int_key("concurrency", 1, 1, 4096, true,
              "serving points (with serve): clients sending requests at once, each back to back"),
      nested("serve", KeyType::kMap, &serve_keys(),
             "serving mode: each point starts `flea serve` (reused while its flags stay the same, e.g. across "
             "concurrency) and drives it with concurrent streaming /v1/completions clients instead of `flea bench`"),
      nested("points", KeyType::kPointList, nullptr,
             "explicit run points (maps of the sweepable keys) instead of the cartesian product; keys not "
             "given in a point take the scenario's value"),
      key("reference", KeyType::kPath, nullptr,
          "reference dir or manifest.json (llama.cpp logits): every run is checked with `flea logits`"),
      key("profile", KeyType::kString, nullptr, "hardware profile name (hardware_profiles/<name>.yaml) or path"),
      enum_key("profile_mode", "predict", {"none", "predict", "emulate", "validate"}, false,
               "predict: model time/token next to every run; emulate: also cap budgets and throttle I/O to the "
               "profile; validate: also measure this machine against it"),
      nested("baselines", KeyType::kMapList, &baseline_keys(), "baseline engines run on the same file in the same invocation"),
      nested("claims", KeyType::kMapList, &claim_keys(), "published figures checked against the physical floor (no engine run)"),
      nested("ceilings", KeyType::kMap, &ceiling_keys(), "machine ceilings measured in the same invocation"),
      key("drop_cache", KeyType::kBool, true, "drop the model file from the page cache (fadvise) before each run"),
      int_key("timeout_s", 1800, 1, 1e6, false, "a run taking longer is killed and marked failed"),
      key("trace", KeyType::kBool, true, "write <run-id>.trace.json (Chrome trace) with per-layer spans"),
      float_key("tolerance", 0.10, 0, 10, false, "validate mode: relative difference allowed between profile and machine"),
  };
  return k;
}

const std::vector<KeySpec>& profile_keys() {
  static const std::vector<KeySpec> gpu = {
      required(key("name", KeyType::kString, nullptr, "GPU model")),
      required(float_key("vram_gb", nullptr, 0.1, 100000, false, "device memory in GB (1e9 bytes)")),
      required(float_key("mem_bw_gb_s", nullptr, 1, 100000, false, "device memory bandwidth, GB/s")),
      float_key("fp16_tflops", nullptr, 0.1, 100000, false, "dense FP16 throughput"),
  };
  static const std::vector<KeySpec> pcie = {
      required(int_key("gen", 4, 1, 7, false, "PCIe generation")),
      required(int_key("width", 16, 1, 32, false, "lanes")),
      float_key("h2d_gb_s", nullptr, 0.1, 10000, false, "measured pinned H2D bandwidth (default: the link's raw rate)"),
  };
  static const std::vector<KeySpec> storage = {
      required(key("device", KeyType::kString, nullptr, "storage device(s)")),
      required(float_key("read_gb_s", nullptr, 0.01, 100000, false, "sequential read bandwidth, GB/s")),
  };
  static const std::vector<KeySpec> cpu = {
      key("model", KeyType::kString, nullptr, "CPU model"),
      int_key("cores", 1, 1, 100000, false, "physical cores"),
  };
  static const std::vector<KeySpec> k = {
      required(key("name", KeyType::kString, nullptr, "profile name")),
      key("description", KeyType::kString, nullptr, "what machine this is"),
      nested("gpu", KeyType::kMap, &gpu, "the GPU (omit or null for a CPU-only machine)"),
      nested("pcie", KeyType::kMap, &pcie, "host-to-GPU link"),
      required(nested("storage", KeyType::kMap, &storage, "where the model file lives")),
      required(float_key("ram_gb", nullptr, 0.1, 1e6, false, "host RAM in GB (1e9 bytes)")),
      required(float_key("ram_bw_gb_s", nullptr, 0.1, 1e6, false, "host memory bandwidth GB/s")),
      nested("cpu", KeyType::kMap, &cpu, "the CPU"),
  };
  return k;
}

int edit_distance(const std::string& a, const std::string& b) {
  std::vector<int> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = static_cast<int>(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = static_cast<int>(i);
    for (size_t j = 1; j <= b.size(); ++j) {
      const int sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
      // Transposition counts as one edit ("perfetch").
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) cur[j] = std::min(cur[j], prev[j - 1]);
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string suggest(const std::string& word, const std::vector<KeySpec>& table) {
  std::string best;
  int best_d = 3;
  for (const auto& k : table) {
    const int d = edit_distance(word, k.name);
    if (d < best_d) {
      best_d = d;
      best = k.name;
    }
  }
  if (best.empty() && word.size() >= 3) {
    for (const auto& k : table) {
      if (k.name.rfind(word, 0) == 0) return k.name;
    }
  }
  return best;
}

namespace {

struct Ctx {
  std::string file;
  std::vector<std::string> errors;
  void error(const YAML::Mark& m, const std::string& msg) {
    errors.push_back(file + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1) + ": " + msg);
  }
};

bool parse_int(const std::string& s, int64_t* out) {
  if (s.empty()) return false;
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') return false;
  *out = v;
  return true;
}
bool parse_float(const std::string& s, double* out) {
  if (s.empty()) return false;
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (errno != 0 || *end != '\0' || !std::isfinite(v)) return false;
  *out = v;
  return true;
}
bool parse_bool(const std::string& s, bool* out) {
  static const char* kTrue[] = {"true", "True", "TRUE", "yes", "on"};
  static const char* kFalse[] = {"false", "False", "FALSE", "no", "off"};
  for (const char* t : kTrue) if (s == t) { *out = true; return true; }
  for (const char* f : kFalse) if (s == f) { *out = false; return true; }
  return false;
}

std::string describe(const YAML::Node& n) {
  if (n.IsMap()) return "a map";
  if (n.IsSequence()) return "a list";
  if (n.IsNull()) return "null";
  return "'" + n.Scalar() + "'";
}

Json parse_map(Ctx& ctx, const YAML::Node& node, const std::vector<KeySpec>& table, Json* requested,
               const std::string& where, bool points_only_sweepable);

// One scalar against a spec; null Json on error (already reported).
Json parse_scalar(Ctx& ctx, const YAML::Node& n, const KeySpec& k, const std::string& keyname) {
  auto bad = [&]() {
    ctx.error(n.Mark(), "key '" + keyname + "' expects " + expectation(k) + ", got " + describe(n));
    return Json();
  };
  if (!n.IsScalar()) return bad();
  const std::string s = n.Scalar();
  switch (k.type) {
    case KeyType::kInt: {
      int64_t v;
      if (!parse_int(s, &v)) return bad();
      if (v < k.min || v > k.max) {
        ctx.error(n.Mark(), "key '" + keyname + "' value " + s + " is out of range [" + fmt_num(k.min) + ", " +
                                fmt_num(k.max) + "]");
        return Json();
      }
      return v;
    }
    case KeyType::kFloat: {
      double v;
      if (!parse_float(s, &v)) return bad();
      if (v < k.min || v > k.max) {
        ctx.error(n.Mark(), "key '" + keyname + "' value " + s + " is out of range [" + fmt_num(k.min) + ", " +
                                fmt_num(k.max) + "]");
        return Json();
      }
      return v;
    }
    case KeyType::kBool: {
      bool v;
      if (!parse_bool(s, &v)) return bad();
      return v;
    }
    case KeyType::kEnum: {
      if (std::find(k.allowed.begin(), k.allowed.end(), s) == k.allowed.end()) {
        std::string msg = "key '" + keyname + "' value '" + s + "' is not " + expectation(k);
        int best_d = 3;
        std::string best;
        for (const auto& a : k.allowed) {
          int d = edit_distance(s, a);
          if (d < best_d) { best_d = d; best = a; }
        }
        if (!best.empty()) msg += " (did you mean '" + best + "'?)";
        ctx.error(n.Mark(), msg);
        return Json();
      }
      return s;
    }
    case KeyType::kString:
    case KeyType::kPath:
      if (s.empty()) return bad();
      return s;
    default:
      return bad();
  }
}

Json parse_value(Ctx& ctx, const YAML::Node& n, const KeySpec& k, Json* requested, bool in_point) {
  const std::string& name = k.name;
  if (n.IsNull() && (k.type == KeyType::kMap || k.default_value.is_null()) && !is_required(k)) {
    *requested = nullptr;
    return nullptr;
  }
  switch (k.type) {
    case KeyType::kMap: {
      if (!n.IsMap()) {
        ctx.error(n.Mark(), "key '" + name + "' expects a map, got " + describe(n));
        return nullptr;
      }
      return parse_map(ctx, n, *k.children, requested, name + ".", false);
    }
    case KeyType::kMapList:
    case KeyType::kPointList: {
      if (!n.IsSequence()) {
        ctx.error(n.Mark(), "key '" + name + "' expects " + expectation(k) + ", got " + describe(n));
        return nullptr;
      }
      Json out = Json::array();
      *requested = Json::array();
      for (size_t i = 0; i < n.size(); ++i) {
        const YAML::Node item = n[i];
        if (!item.IsMap()) {
          ctx.error(item.Mark(), "key '" + name + "' item " + std::to_string(i) + " expects a map, got " + describe(item));
          continue;
        }
        Json req;
        if (k.type == KeyType::kPointList) {
          out.push_back(parse_map(ctx, item, scenario_keys(), &req, name + "[" + std::to_string(i) + "].", true));
        } else {
          out.push_back(parse_map(ctx, item, *k.children, &req, name + "[" + std::to_string(i) + "].", false));
        }
        requested->push_back(req);
      }
      return out;
    }
    default:
      break;
  }
  if (n.IsSequence()) {
    if (!k.sweepable || in_point) {
      ctx.error(n.Mark(), "key '" + name + "' takes a single value" +
                              std::string(in_point ? " inside a point" : " (it is not a sweep axis)") +
                              ", got a list");
      return nullptr;
    }
    if (n.size() == 0) {
      ctx.error(n.Mark(), "key '" + name + "' is an empty list (a sweep axis needs at least one value)");
      return nullptr;
    }
    Json out = Json::array();
    *requested = Json::array();
    for (size_t i = 0; i < n.size(); ++i) {
      Json v = parse_scalar(ctx, n[i], k, name);
      out.push_back(v);
      requested->push_back(n[i].IsScalar() ? Json(n[i].Scalar()) : Json(nullptr));
    }
    return out;
  }
  Json v = parse_scalar(ctx, n, k, name);
  *requested = v;
  return v;
}

Json parse_map(Ctx& ctx, const YAML::Node& node, const std::vector<KeySpec>& table, Json* requested,
               const std::string& where, bool points_only_sweepable) {
  Json out = Json::object();
  *requested = Json::object();
  std::vector<std::string> seen;
  for (auto it = node.begin(); it != node.end(); ++it) {
    const YAML::Node kn = it->first;
    if (!kn.IsScalar()) {
      ctx.error(kn.Mark(), "keys must be plain names, got " + describe(kn));
      continue;
    }
    const std::string name = kn.Scalar();
    auto spec = std::find_if(table.begin(), table.end(), [&](const KeySpec& k) { return k.name == name; });
    if (spec == table.end()) {
      std::string msg = "unknown key '" + where + name + "'";
      const std::string s = suggest(name, table);
      if (!s.empty()) msg += " (did you mean '" + s + "'?)";
      else msg += " (see run_lab_harness --help-keys)";
      ctx.error(kn.Mark(), msg);
      continue;
    }
    if (points_only_sweepable && !spec->sweepable) {
      ctx.error(kn.Mark(), "key '" + name + "' cannot be set per point (only sweep axes can)");
      continue;
    }
    if (std::find(seen.begin(), seen.end(), name) != seen.end()) {
      ctx.error(kn.Mark(), "duplicate key '" + where + name + "'");
      continue;
    }
    seen.push_back(name);
    Json req;
    out[name] = parse_value(ctx, it->second, *spec, &req, points_only_sweepable);
    (*requested)[name] = req;
  }
  if (points_only_sweepable) return out;  // points inherit the scenario's values
  for (const auto& k : table) {
    if (out.contains(k.name)) continue;
    if (is_required(k)) {
      ctx.error(node.Mark(), "missing required key '" + where + k.name + "' (" + k.help + ")");
      continue;
    }
    if (k.type == KeyType::kMap && k.children != nullptr && k.default_value.is_null() &&
        k.name == "ceilings") {
      Json dummy;
      out[k.name] = parse_map(ctx, YAML::Node(YAML::NodeType::Map), *k.children, &dummy, k.name + ".", false);
      continue;
    }
    if (k.type == KeyType::kMapList || k.type == KeyType::kPointList) {
      out[k.name] = Json::array();
      continue;
    }
    out[k.name] = k.default_value;
  }
  return out;
}

}  // namespace

StatusOr<ParsedDoc> parse_yaml_doc(const std::string& file, const std::string& text,
                                   const std::vector<KeySpec>& table) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    return invalid_argument(file + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                            ": malformed YAML: " + e.msg);
  } catch (const YAML::Exception& e) {
    return invalid_argument(file + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                            ": malformed YAML: " + e.msg);
  }
  if (!root.IsMap()) {
    return invalid_argument(file + ":1:1: expected a map of keys at the top level, got " +
                            (root.IsDefined() ? describe(root) : std::string("an empty document")));
  }
  Ctx ctx{file, {}};
  ParsedDoc doc;
  try {
    doc.value = parse_map(ctx, root, table, &doc.requested, "", false);
  } catch (const YAML::Exception& e) {
    ctx.errors.push_back(file + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                         ": " + e.msg);
  }
  if (!ctx.errors.empty()) {
    std::string all;
    for (const auto& e : ctx.errors) all += (all.empty() ? "" : "\n") + e;
    return invalid_argument(all);
  }
  return doc;
}

std::string expand_path(const std::string& text, const std::string& base_dir) {
  std::string out;
  for (size_t i = 0; i < text.size();) {
    if (text[i] == '$' && i + 1 < text.size()) {
      std::string var, def;
      bool has_def = false;
      size_t j;
      if (text[i + 1] == '{') {
        size_t close = text.find('}', i + 2);
        if (close == std::string::npos) { out += text.substr(i); break; }
        std::string body = text.substr(i + 2, close - i - 2);
        size_t dash = body.find(":-");
        if (dash != std::string::npos) {
          var = body.substr(0, dash);
          def = body.substr(dash + 2);
          has_def = true;
        } else {
          var = body;
        }
        j = close + 1;
      } else {
        j = i + 1;
        while (j < text.size() && (std::isalnum(static_cast<unsigned char>(text[j])) || text[j] == '_')) ++j;
        var = text.substr(i + 1, j - i - 1);
      }
      const char* v = var.empty() ? nullptr : std::getenv(var.c_str());
      if (v != nullptr && *v != '\0') out += v;
      else if (has_def) out += def;
      i = j;
      continue;
    }
    out += text[i++];
  }
  if (!out.empty() && out[0] != '/' && !base_dir.empty()) out = base_dir + "/" + out;
  return out;
}

std::vector<std::string> point_keys() {
  std::vector<std::string> keys;
  for (const auto& k : scenario_keys()) {
    if (k.sweepable) keys.push_back(k.name);
  }
  return keys;
}

StatusOr<Scenario> load_scenario(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found(path + ": cannot open scenario file: " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  FLEA_ASSIGN_OR_RETURN(ParsedDoc doc, parse_yaml_doc(path, text, scenario_keys()));
  Scenario s;
  s.path = path;
  const size_t slash = path.rfind('/');
  s.dir = slash == std::string::npos ? "." : path.substr(0, slash);
  if (s.dir.empty()) s.dir = "/";
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  if (base.size() > 5 && base.substr(base.size() - 5) == ".yaml") base.resize(base.size() - 5);
  else if (base.size() > 4 && base.substr(base.size() - 4) == ".yml") base.resize(base.size() - 4);
  s.name = doc.value["name"].is_string() ? doc.value["name"].get<std::string>() : base;
  s.sha256 = sha256_hex(text);
  s.requested = std::move(doc.requested);
  s.settings = std::move(doc.value);
  return s;
}

std::string help_keys_text() {
  std::ostringstream os;
  auto dump_table = [&](const std::vector<KeySpec>& table, const std::string& prefix, auto& self) -> void {
    for (const auto& k : table) {
      os << "  " << prefix << k.name << "  (" << type_name(k);
      if (k.type == KeyType::kEnum) {
        os << " ";
        for (size_t i = 0; i < k.allowed.size(); ++i) os << (i ? "|" : "") << k.allowed[i];
      }
      if (k.type == KeyType::kInt || k.type == KeyType::kFloat) os << " in [" << fmt_num(k.min) << ", " << fmt_num(k.max) << "]";
      os << ")";
      if (is_required(k)) os << " required";
      else if (!k.default_value.is_null()) os << " default " << k.default_value.dump();
      if (k.sweepable) os << " [sweep: a list expands the run set]";
      os << "\n      " << k.help << "\n";
      if (k.children != nullptr) self(*k.children, prefix + k.name + (k.type == KeyType::kMapList ? "[]." : "."), self);
    }
  };
  os << "Scenario keys (scenarios/*.yaml):\n";
  dump_table(scenario_keys(), "", dump_table);
  os << "\nHardware profile keys (hardware_profiles/*.yaml):\n";
  dump_table(profile_keys(), "", dump_table);
  return os.str();
}

}  // namespace flea::harness
