// Helpers shared by the GoogleTest suites: where the reference data and binaries are, temp files.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compute/cpu/amx.h"
#include "model/synth.h"

namespace flea::test {

// ../shared/reference (override with FLEA_REFERENCE_DIR in the environment).
std::string reference_dir();
bool reference_available();
// Every case of the reference sets: the top-level LLaMA-2 files, arch/ (Llama 3, Qwen2 and, with
// `with_experts`, the Mixtral-style MoE and Llama 4 files) and quants/ (low-bit types). `path` is
// the model file; `c` its manifest entry (logits paths in it are relative to the set's directory, `dir`).
struct ReferenceCase {
  std::string dir;
  std::string path;
  nlohmann::json c;
};
std::vector<ReferenceCase> reference_cases(bool with_experts = true);
std::string source_dir();
std::string bin_dir();  // <build>/bin, where `flea` and `run_lab_harness` live

// A fresh directory under $TMPDIR, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes);
std::vector<uint8_t> read_bytes(const std::string& path);
std::vector<float> read_f32(const std::string& path);

// `flea synth` options for a preset shape written to `out` (generated inline: threads 0).
synth::SynthOptions synth_options(const std::string& preset, synth::FileType type, const std::string& out,
                                  uint64_t seed = 0);

// Runs a shell command, returns its exit status; stdout goes to *out when given.
int run_command(const std::string& cmd, std::string* out = nullptr);

// Whole file as text ("" when it cannot be read); write_text replaces the file.
std::string read_text(const std::string& path);
// Lines of `text` that contain `needle`.
int count_lines(const std::string& text, const std::string& needle);
void write_text(const std::string& path, const std::string& text);

// results/results.schema.json check of a results file with /usr/bin/python3's jsonschema: "" when
// valid, "skip" when jsonschema is unavailable, else one line per error.
std::string schema_errors(const std::string& results_file);

// The harness under test, and the fake engine (tests/fixtures/harness/fake_flea.py) its tests drive.
std::string harness_bin();
std::string fake_flea();

// Sets the AMX tile matmul switch for a scope (restored on exit, also by a failed ASSERT).
class AmxSet {
 public:
  explicit AmxSet(bool on) : was_(cpu::amx::set_enabled(on)) {}
  ~AmxSet() { cpu::amx::set_enabled(was_); }
  AmxSet(const AmxSet&) = delete;
  AmxSet& operator=(const AmxSet&) = delete;

 private:
  bool was_;
};

// Tiles off: for tests that demand bit-identity between different batch splits (the tile path
// serves batches of >= amx::min_tokens(type) rows and sums in another order than the per-row dots).
struct AmxOff : AmxSet {
  AmxOff() : AmxSet(false) {}
};

}  // namespace flea::test
