#include "profile.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace flea::harness {
namespace {

constexpr double kGB = 1e9;
constexpr double kMiB = 1048576.0;

std::string fmt(double v, int prec = 2) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", prec, v);
  return buf;
}

double num(const Json& j, const char* k, double def = 0) {
  return j.contains(k) && j[k].is_number() ? j[k].get<double>() : def;
}
std::string str(const Json& j, const char* k) {
  return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string();
}

}  // namespace

double pcie_raw_gb_s(int gen, int width) {
  static const double kPerLane[] = {0, 0.25, 0.5, 0.985, 1.969, 3.938, 7.563, 15.125};
  if (gen < 1 || gen > 7) return 0;
  return kPerLane[gen] * width;
}

StatusOr<Profile> parse_profile(const std::string& file, const std::string& text) {
  FLEA_ASSIGN_OR_RETURN(ParsedDoc doc, parse_yaml_doc(file, text, profile_keys()));
  const Json& v = doc.value;
  Profile p;
  p.path = file;
  p.raw = v;
  p.name = str(v, "name");
  p.description = str(v, "description");
  if (v["gpu"].is_object()) {
    p.has_gpu = true;
    p.gpu_name = str(v["gpu"], "name");
    p.vram_gb = num(v["gpu"], "vram_gb");
    p.gpu_mem_bw_gb_s = num(v["gpu"], "mem_bw_gb_s");
  }
  if (v["pcie"].is_object()) {
    p.pcie_gen = static_cast<int>(num(v["pcie"], "gen"));
    p.pcie_width = static_cast<int>(num(v["pcie"], "width"));
    p.pcie_gb_s = num(v["pcie"], "h2d_gb_s", pcie_raw_gb_s(p.pcie_gen, p.pcie_width));
  }
  if (p.has_gpu && p.pcie_gb_s <= 0) return invalid_argument(file + ": a profile with a gpu needs pcie: {gen, width}");
  p.storage_device = str(v["storage"], "device");
  p.storage_gb_s = num(v["storage"], "read_gb_s");
  p.ram_gb = num(v, "ram_gb");
  p.ram_bw_gb_s = num(v, "ram_bw_gb_s");
  if (v["cpu"].is_object()) {
    p.cpu_model = str(v["cpu"], "model");
    p.cpu_cores = static_cast<int>(num(v["cpu"], "cores"));
  }
  return p;
}

StatusOr<Profile> load_profile(const std::string& name_or_path, const std::string& profiles_dir) {
  std::string path = name_or_path;
  const bool is_path = name_or_path.find('/') != std::string::npos ||
                       (name_or_path.size() > 5 && name_or_path.substr(name_or_path.size() - 5) == ".yaml");
  if (!is_path) path = profiles_dir + "/" + name_or_path + ".yaml";
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return not_found("hardware profile '" + name_or_path + "': cannot open " + path + ": " + std::strerror(errno));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_profile(path, ss.str());
}

int64_t emulated_vram_budget_mb(const Profile& p) {
  return p.has_gpu ? static_cast<int64_t>(std::floor(p.vram_gb * kGB / kMiB)) : 0;
}
int64_t emulated_ram_budget_mb(const Profile& p) {
  return static_cast<int64_t>(std::floor(p.ram_gb * kGB / kMiB));
}
int64_t cap_budget_mb(int64_t requested, int64_t cap) {
  if (cap <= 0) return requested;
  if (requested <= 0) return cap;
  return std::min(requested, cap);
}

Prediction predict(const Profile& p, const PredictInput& in) {
  Prediction out;
  const double w = in.model_bytes;
  const bool gpu = in.backend == "cuda" && p.has_gpu;
  // Fast memory the weights may live in: VRAM on a GPU, the weight budget (else all RAM) on the CPU.
  double fast_bytes = gpu ? p.vram_gb * kGB : p.ram_gb * kGB;
  if (in.vram_budget_mb > 0) fast_bytes = std::min(fast_bytes, in.vram_budget_mb * kMiB);
  double streamed = in.streamed_bytes;
  if (streamed < 0) {
    if (in.residency == "full") streamed = 0;
    else if (in.residency == "transient") streamed = w;
    else streamed = std::max(0.0, w - fast_bytes);
  }
  out.streamed_bytes = streamed;
  // Host RAM that can hold streamed weights between tokens (page cache or the engine's cache).
  double host_cache = p.ram_gb * kGB - (gpu ? 0.0 : (w - streamed));
  if (in.ram_budget_mb > 0 && (in.io == "odirect" || in.io == "io_uring")) host_cache = in.ram_budget_mb * kMiB;
  else if (in.io == "odirect" || in.io == "io_uring") host_cache = 0;  // direct I/O bypasses the page cache
  host_cache = std::max(0.0, host_cache);
  // Streaming cycles through the whole streamed set each token: LRU keeps none of it when it does
  // not fit, all of it when it does.
  out.storage_bytes = streamed > host_cache ? streamed : 0;
  const double t_storage = p.storage_gb_s > 0 ? out.storage_bytes / (p.storage_gb_s * kGB) * 1e3 : 0;
  const double t_pcie = gpu ? streamed / (p.pcie_gb_s * kGB) * 1e3 : 0;
  const double mem_bw = gpu ? p.gpu_mem_bw_gb_s : p.ram_bw_gb_s;
  const double t_compute = w / (mem_bw * kGB) * 1e3;
  const double t_io = in.prefetch == 0 ? t_storage + t_pcie : std::max(t_storage, t_pcie);
  out.ms_per_token = in.prefetch == 0 ? t_io + t_compute : std::max(t_io, t_compute);
  out.bound = t_io > t_compute ? "io" : "compute";

  // Physical floor: the most optimistic placement (all fast memory and all host RAM hold weights).
  const double fast_all = gpu ? p.vram_gb * kGB : p.ram_gb * kGB;
  const double beyond_fast = std::max(0.0, w - fast_all);
  const double storage_min = gpu ? std::max(0.0, beyond_fast - p.ram_gb * kGB) : beyond_fast;
  struct Term { const char* link; double bytes, gb_s; };
  std::vector<Term> terms;
  if (p.storage_gb_s > 0) terms.push_back({"storage", storage_min, p.storage_gb_s});
  if (gpu) terms.push_back({"pcie", beyond_fast, p.pcie_gb_s});
  const bool in_cache = !gpu && in.cache_bytes > 0 && w <= in.cache_bytes;
  if (!in_cache) terms.push_back({gpu ? "gpu_memory" : "host_memory", w, mem_bw});
  out.floor_link = "none";
  std::string arith;
  for (const Term& t : terms) {
    const double ms = t.bytes / (t.gb_s * kGB) * 1e3;
    arith += std::string(arith.empty() ? "" : "; ") + t.link + " " + fmt(t.bytes / kGB, 3) + " GB / " +
             fmt(t.gb_s) + " GB/s = " + fmt(ms, 3) + " ms";
    if (ms > out.floor_ms_per_token) {
      out.floor_ms_per_token = ms;
      out.floor_link = t.link;
    }
  }
  if (in_cache) arith += std::string(arith.empty() ? "" : "; ") + "model fits in the CPU cache: no DRAM floor";
  out.arithmetic = arith;
  return out;
}

ClaimVerdict evaluate_claim(const Json& c, const Profile& p) {
  ClaimVerdict v;
  v.name = str(c, "name");
  v.source = str(c, "source");
  v.model = str(c, "model");
  v.profile = p.name;
  v.expect = str(c, "expect");
  v.model_gb = num(c, "model_gb");
  v.claimed_ms = num(c, "claimed_ms_per_token");
  const bool host_cache = !c.contains("host_cache") || !c["host_cache"].is_boolean() || c["host_cache"].get<bool>();
  const double fast_gb = p.has_gpu ? p.vram_gb : p.ram_gb;
  const double resident_gb = std::min(v.model_gb, c.contains("resident_gb") && c["resident_gb"].is_number()
                                                      ? c["resident_gb"].get<double>() : fast_gb);
  v.streamed_gb = std::max(0.0, v.model_gb - resident_gb);
  const double ram_cache_gb = (host_cache && p.has_gpu) ? p.ram_gb : 0.0;
  v.storage_gb = std::max(0.0, v.streamed_gb - ram_cache_gb);
  struct Term { std::string link; double gb, gb_s; };
  std::vector<Term> terms = {{"storage (" + p.storage_device + ")", v.storage_gb, p.storage_gb_s}};
  if (p.has_gpu) {
    terms.push_back({"PCIe " + std::to_string(p.pcie_gen) + ".0 x" + std::to_string(p.pcie_width), v.streamed_gb, p.pcie_gb_s});
    terms.push_back({"GPU memory (" + p.gpu_name + ")", v.model_gb, p.gpu_mem_bw_gb_s});
  } else {
    terms.push_back({"host memory", v.model_gb, p.ram_bw_gb_s});
  }
  std::string arith = "model " + fmt(v.model_gb) + " GB; resident " + fmt(resident_gb) + " GB (" +
                      (p.has_gpu ? "VRAM " : "RAM ") + fmt(fast_gb) + " GB); streamed " + fmt(v.streamed_gb) +
                      " GB/token";
  if (p.has_gpu) arith += ", of which " + fmt(v.storage_gb) + " GB from storage (host RAM " +
                         fmt(host_cache ? p.ram_gb : 0) + " GB caches the rest)";
  for (const Term& t : terms) {
    const double ms = t.gb_s > 0 ? t.gb / t.gb_s * 1e3 : 0;
    arith += "; " + t.link + ": " + fmt(t.gb) + " GB / " + fmt(t.gb_s) + " GB/s = " + fmt(ms, 1) + " ms";
    if (ms > v.floor_ms) {
      v.floor_ms = ms;
      v.binding_link = t.link;
    }
  }
  v.ratio = v.floor_ms > 0 ? v.claimed_ms / v.floor_ms : 0;
  if (v.floor_ms > 0 && v.claimed_ms < v.floor_ms) v.verdict = "impossible";
  else if (v.floor_ms > 0 && v.claimed_ms < kTightFactor * v.floor_ms) v.verdict = "tight";
  else v.verdict = "plausible";
  arith += " → floor " + fmt(v.floor_ms, 1) + " ms/token (" + v.binding_link + "); claimed " + fmt(v.claimed_ms, 1) +
           " ms/token is " + (v.verdict == "impossible" ? fmt(v.floor_ms / v.claimed_ms) + "× faster than physics allows: IMPOSSIBLE"
                              : v.verdict == "tight" ? "within " + fmt((kTightFactor - 1) * 100, 0) + "% of the floor: tight"
                              : fmt(v.ratio) + "× the floor: plausible");
  v.arithmetic = arith;
  v.expect_ok = v.expect.empty() || v.expect == v.verdict;
  return v;
}

Json claim_to_json(const ClaimVerdict& v) {
  Json j;
  j["name"] = v.name;
  j["source"] = v.source.empty() ? Json(nullptr) : Json(v.source);
  j["model"] = v.model.empty() ? Json(nullptr) : Json(v.model);
  j["profile"] = v.profile;
  j["model_gb"] = v.model_gb;
  j["claimed_ms_per_token"] = v.claimed_ms;
  j["streamed_gb_per_token"] = v.streamed_gb;
  j["storage_gb_per_token"] = v.storage_gb;
  j["floor_ms_per_token"] = v.floor_ms;
  j["binding_link"] = v.binding_link;
  j["claimed_over_floor"] = v.ratio;
  j["verdict"] = v.verdict;
  j["expect"] = v.expect.empty() ? Json(nullptr) : Json(v.expect);
  j["expect_ok"] = v.expect_ok;
  j["arithmetic"] = v.arithmetic;
  return j;
}

}  // namespace flea::harness
