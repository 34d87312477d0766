// Hardware profiles (hardware_profiles/*.yaml) and the bandwidth model built on them: predicted
// time per token for a run point, the physical floor (bytes that must cross each link per token ÷
// its bandwidth, slowest link binding) and the verdict on published claims.
#pragma once

#include <string>
#include <vector>

#include "flea/status.h"
#include "scenario.h"

namespace flea::harness {

struct Profile {
  std::string name, path, description;
  bool has_gpu = false;
  std::string gpu_name;
  double vram_gb = 0, gpu_mem_bw_gb_s = 0;
  int pcie_gen = 0, pcie_width = 0;
  double pcie_gb_s = 0;  // h2d_gb_s when given, else the link's raw rate
  std::string storage_device;
  double storage_gb_s = 0;
  double ram_gb = 0, ram_bw_gb_s = 0;
  std::string cpu_model;
  int cpu_cores = 0;
  Json raw;  // the file as parsed (defaults filled)
};

// Raw PCIe bandwidth after line encoding, GB/s: per lane (gen3 0.985, gen4 1.969, gen5 3.938) × width.
double pcie_raw_gb_s(int gen, int width);

// A name (looked up as <profiles_dir>/<name>.yaml) or a path to a .yaml file.
StatusOr<Profile> load_profile(const std::string& name_or_path, const std::string& profiles_dir);
StatusOr<Profile> parse_profile(const std::string& file, const std::string& text);

// Budget caps an emulated profile applies, in MiB (the engine's budget unit); 0 = no GPU cap.
int64_t emulated_vram_budget_mb(const Profile& p);
int64_t emulated_ram_budget_mb(const Profile& p);
// min(requested, cap) where 0 means unlimited on either side.
int64_t cap_budget_mb(int64_t requested, int64_t cap);

// One run point on a machine described by `p`.
struct PredictInput {
  double model_bytes = 0;             // weight bytes read per token
  double streamed_bytes = -1;         // per token; < 0 = derive from residency and budgets
  std::string backend = "cpu";        // cpu | cuda
  std::string residency = "full";
  std::string io = "pread";
  int prefetch = 1;
  int64_t vram_budget_mb = 0, ram_budget_mb = 0;
  double cache_bytes = 0;             // CPU last-level cache: a model that fits has no DRAM floor
};

struct Prediction {
  double ms_per_token = 0;
  double floor_ms_per_token = 0;      // 0 = no floor applies (everything in cache)
  std::string bound;                  // io | compute
  std::string floor_link;             // storage | pcie | gpu_memory | host_memory | none
  double streamed_bytes = 0, storage_bytes = 0;
  std::string arithmetic;             // the floor, written out
};

Prediction predict(const Profile& p, const PredictInput& in);

// claims: entries parsed against claim_keys().
struct ClaimVerdict {
  std::string name, source, model, profile, verdict, expect, arithmetic, binding_link;
  double model_gb = 0, claimed_ms = 0, floor_ms = 0, ratio = 0;
  double streamed_gb = 0, storage_gb = 0;
  bool expect_ok = true;
};
constexpr double kTightFactor = 1.25;  // within 25% of the floor needs perfect overlap: "tight"
ClaimVerdict evaluate_claim(const Json& claim, const Profile& p);
Json claim_to_json(const ClaimVerdict& v);

}  // namespace flea::harness
