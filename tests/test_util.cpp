#include "test_util.h"

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <iterator>
#include <stdexcept>

namespace flea::test {

std::string reference_dir() {
  if (const char* env = std::getenv("FLEA_REFERENCE_DIR")) return env;
  return FLEA_REFERENCE_DIR;
}

bool reference_available() {
  return std::filesystem::exists(reference_dir() + "/manifest.json");
}

std::vector<ReferenceCase> reference_cases(bool with_experts) {
  std::vector<ReferenceCase> cases;
  for (const std::string set : {"", "arch/", "quants/"}) {
    const std::string dir = reference_dir() + "/" + set;
    std::ifstream in(dir + "manifest.json");
    if (!in) continue;
    const nlohmann::json manifest = nlohmann::json::parse(in);
    for (const auto& c : manifest["cases"]) {
      const bool moe = c.contains("features") && c["features"]["n_expert"].get<int>() > 0;
      if (moe && !with_experts) continue;
      cases.push_back({dir, dir + c["model"].get<std::string>(), c});
    }
  }
  return cases;
}

std::string source_dir() { return FLEA_SOURCE_DIR; }
std::string bin_dir() { return FLEA_BIN_DIR; }

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base ? base : "/tmp") + "/flea-test-XXXXXX";
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

std::vector<float> read_f32(const std::string& path) {
  std::vector<uint8_t> b = read_bytes(path);
  std::vector<float> v(b.size() / 4);
  std::copy(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(v.size() * 4),
            reinterpret_cast<uint8_t*>(v.data()));
  return v;
}

int run_command(const std::string& cmd, std::string* out) {
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return -1;
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) text.append(buf, n);
  int st = pclose(p);
  if (out) *out = text;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int count_lines(const std::string& text, const std::string& needle) {
  std::istringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) n += line.find(needle) != std::string::npos;
  return n;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

std::string schema_errors(const std::string& results_file) {
  std::string out;
  const std::string schema = source_dir() + "/results/results.schema.json";
  const int rc = run_command(
      "/usr/bin/python3 -c \"import json,sys\ntry:\n import jsonschema\nexcept ImportError:\n print('skip'); sys.exit(0)\n"
      "s=json.load(open('" + schema + "'))\nv=jsonschema.Draft202012Validator(s)\n"
      "errs=[list(e.path).__str__()+': '+e.message for e in v.iter_errors(json.load(open('" + results_file + "')))]\n"
      "print('\\n'.join(errs))\" 2>&1", &out);
  if (rc != 0) return "skip";
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::string harness_bin() { return bin_dir() + "/run_lab_harness"; }
std::string fake_flea() { return source_dir() + "/tests/fixtures/harness/fake_flea.py"; }

synth::SynthOptions synth_options(const std::string& preset, synth::FileType type, const std::string& out,
                                  uint64_t seed) {
  synth::SynthOptions o;
  auto shape = synth::synth_preset(preset);
  EXPECT_TRUE(shape.ok()) << preset;
  if (shape.ok()) o.shape = *shape;
  o.file_type = type;
  o.out_path = out;
  o.seed = seed;
  o.threads = 0;
  return o;
}

}  // namespace flea::test
