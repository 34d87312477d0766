// Resource bounds: small crafted GGUF files that claim huge counts and sizes must be refused by
// `flea inspect` (and `flea tokenize` / `flea logits`) with exit 2 and one clear error line —
// never an allocation sized by the claim (std::bad_alloc, abort, OOM) — and the child's peak RSS
// stays within the file size + 64 MiB. Host allocation failure (RLIMIT_AS) is a one-line
// "out of memory" error, not "terminate called".
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "gguf_bytes.h"
#include "test_util.h"

namespace {

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;  // shadow memory inflates RSS, and RLIMIT_AS breaks the sanitizer
#else
constexpr bool kSanitized = false;
#endif

constexpr uint64_t kMiB = 1 << 20;

using flea::test::Bytes;

constexpr uint32_t kTypeU32 = 4, kTypeString = 8, kTypeArray = 9;

// One tensor info: name, dims, F32, offset.
Bytes& tensor(Bytes& b, const std::string& name, const std::vector<int64_t>& ne, uint64_t offset, uint32_t n_dims_override = 0) {
  b.str(name).put<uint32_t>(n_dims_override ? n_dims_override : static_cast<uint32_t>(ne.size()));
  for (int64_t n : ne) b.put<int64_t>(n);
  return b.put<uint32_t>(0).put<uint64_t>(offset);
}

struct ChildResult {
  int exit_code = -1;  // -1: killed by a signal
  int term_signal = 0;
  uint64_t peak_rss_bytes = 0;
  std::string out, err;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// fork + exec `argv`, stdout/stderr to files, then wait4() for the child's own peak RSS (the
// rusage of exactly this child, unlike getrusage(RUSAGE_CHILDREN)). `as_limit_bytes` > 0 sets
// RLIMIT_AS in the child before exec.
ChildResult run_child(const std::vector<std::string>& argv, const std::string& scratch, uint64_t as_limit_bytes = 0) {
  const std::string out_path = scratch + "/child.out", err_path = scratch + "/child.err";
  pid_t pid = fork();
  if (pid == 0) {
    const int o = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int e = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(o, 1);
    dup2(e, 2);
    alarm(300);  // survives exec: a child that hangs is killed (SIGALRM) instead of the suite
    if (as_limit_bytes > 0) {
      struct rlimit rl = {as_limit_bytes, as_limit_bytes};
      if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(126);
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  ChildResult r;
  int status = 0;
  struct rusage ru;
  std::memset(&ru, 0, sizeof(ru));
  if (wait4(pid, &status, 0, &ru) != pid) return r;
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.term_signal = WTERMSIG(status);
  r.peak_rss_bytes = static_cast<uint64_t>(ru.ru_maxrss) * 1024;  // ru_maxrss is in KiB
  r.out = slurp(out_path);
  r.err = slurp(err_path);
  return r;
}

std::string flea_bin() { return flea::test::bin_dir() + "/flea"; }

// Exit 2, exactly one non-empty stderr line mentioning `field`, no sign of a crash, and (unless
// sanitized) peak RSS within the file size + 64 MiB.
void expect_clean_refusal(const ChildResult& r, const std::string& what, uint64_t file_bytes, const std::string& field) {
  EXPECT_EQ(r.term_signal, 0) << what << ": killed by signal " << r.term_signal << "\n" << r.err;
  EXPECT_EQ(r.exit_code, 2) << what << "\n" << r.err;
  std::string err = r.err;
  while (!err.empty() && err.back() == '\n') err.pop_back();
  EXPECT_FALSE(err.empty()) << what;
  EXPECT_EQ(err.find('\n'), std::string::npos) << what << ": more than one error line:\n" << r.err;
  EXPECT_NE(err.find(field), std::string::npos) << what << ": error does not name '" << field << "': " << err;
  for (const char* crash : {"terminate called", "bad_alloc", "Aborted", "what():", "Segmentation"})
    EXPECT_EQ(r.err.find(crash), std::string::npos) << what << ": " << r.err;
  if (!kSanitized) {
    EXPECT_LE(r.peak_rss_bytes, file_bytes + 64 * kMiB)
        << what << ": peak RSS " << r.peak_rss_bytes / kMiB << " MiB for a " << file_bytes << "-byte file";
  }
}

struct Crafted {
  std::string name;
  std::vector<uint8_t> bytes;
  std::string field;  // what the error must name
};

std::vector<Crafted> crafted_files() {
  std::vector<Crafted> c;
  {
    Bytes b;
    b.header(uint64_t(1) << 40, 0).pad(4096);
    c.push_back({"tensor_count 2^40", b.b, "tensor_count"});
  }
  {
    Bytes b;
    b.header(0, uint64_t(1) << 40).pad(4096);
    c.push_back({"kv_count 2^40", b.b, "metadata_kv_count"});
  }
  {
    Bytes b;
    b.header(0, 1).str("general.name").put<uint32_t>(kTypeString).put<uint64_t>(uint64_t(1) << 62).pad(4096);
    c.push_back({"string length 2^62", b.b, "general.name"});
  }
  {
    Bytes b;
    b.header(0, 1).put<uint64_t>(uint64_t(1) << 62).pad(4096);
    c.push_back({"key length 2^62", b.b, "kv[0].key"});
  }
  {
    Bytes b;
    b.header(0, 1).str("x.array").put<uint32_t>(kTypeArray).put<uint32_t>(kTypeU32).put<uint64_t>(uint64_t(1) << 40).pad(4096);
    c.push_back({"array of 2^40 u32", b.b, "x.array"});
  }
  {
    // A vocabulary claiming a billion tokens, with a few real ones after it.
    Bytes b;
    b.header(0, 2).str("tokenizer.ggml.model").put<uint32_t>(kTypeString).str("llama");
    b.str("tokenizer.ggml.tokens").put<uint32_t>(kTypeArray).put<uint32_t>(kTypeString).put<uint64_t>(1000000000ull);
    for (int i = 0; i < 100; ++i) b.str("tok" + std::to_string(i));
    c.push_back({"vocab of 10^9 strings", b.b, "tokenizer.ggml.tokens"});
  }
  {
    Bytes b;
    b.header(1, 0);
    tensor(b, "w", {int64_t(1) << 32, int64_t(1) << 32, int64_t(1) << 32}, 0);
    b.pad(4096);
    c.push_back({"dims product overflows", b.b, "'w'.ne["});
  }
  {
    Bytes b;
    b.header(1, 0);
    tensor(b, "w", {32}, 0, 1000);
    b.pad(4096);
    c.push_back({"n_dims 1000", b.b, "'w'.n_dims"});
  }
  {
    Bytes b;
    b.header(1, 0);
    tensor(b, "w", {32}, ~uint64_t(0) - 31);  // 2^64 - 32: aligned, so only the range check catches it
    b.pad(4096);
    c.push_back({"tensor offset near 2^64", b.b, "offset"});
  }
  {
    // Two tensors whose byte ranges both fit but whose offset + size wraps.
    Bytes b;
    b.header(1, 0);
    tensor(b, "w", {int64_t(1) << 61}, 0);
    b.pad(4096);
    c.push_back({"tensor bytes beyond the file", b.b, "tensor"});
  }
  return c;
}

TEST(ResourceBounds, InspectRefusesHugeClaimsCheaply) {
  flea::test::TempDir dir;
  for (const Crafted& c : crafted_files()) {
    const std::string path = dir.file("crafted.gguf");
    flea::test::write_bytes(path, c.bytes);
    const ChildResult r = run_child({flea_bin(), "inspect", path}, dir.path());
    expect_clean_refusal(r, "inspect: " + c.name, c.bytes.size(), c.field);
    const ChildResult rj = run_child({flea_bin(), "inspect", "--json", "--full-arrays", path}, dir.path());
    expect_clean_refusal(rj, "inspect --json: " + c.name, c.bytes.size(), c.field);
  }
}

TEST(ResourceBounds, TokenizeAndLogitsRefuseAHugeVocabCheaply) {
  flea::test::TempDir dir;
  for (const Crafted& c : crafted_files()) {
    if (c.name.find("vocab") == std::string::npos) continue;
    const std::string path = dir.file("vocab.gguf");
    flea::test::write_bytes(path, c.bytes);
    expect_clean_refusal(run_child({flea_bin(), "tokenize", "--model", path, "--text", "hello"}, dir.path()),
                         "tokenize: " + c.name, c.bytes.size(), c.field);
    expect_clean_refusal(run_child({flea_bin(), "logits", "-m", path, "--tokens", "1", "--out", "/dev/null"}, dir.path()),
                         "logits: " + c.name, c.bytes.size(), c.field);
  }
}

// A host allocation that fails (address space capped with RLIMIT_AS) is reported as one line
// naming the command and memory, exit non-zero — not an uncaught std::bad_alloc /
// std::system_error abort. Two shapes: a 65536-token prompt whose KV cache and activations cannot
// fit in 128 MiB, and a sweep of caps just above what the process needs to start, so the first
// allocation to fail is whichever comes first (weights, staging slots, the I/O thread's stack).
TEST(ResourceBounds, HostAllocationFailureIsAClearError) {
  if (kSanitized) GTEST_SKIP() << "sanitizers reserve terabytes of address space: RLIMIT_AS cannot be tested";
  if (!flea::test::reference_available()) GTEST_SKIP() << "reference data not found";
  flea::test::TempDir dir;
  const std::string model = flea::test::reference_dir() + "/pub-F16.gguf";
  auto bench = [&](const std::string& prompt, const std::string& residency) {
    return std::vector<std::string>{flea_bin(), "bench", "-m", model, "--gen", "1", "--prompt", prompt, "--reps", "1",
                                    "--warmup", "0", "--threads", "1", "--residency", residency};
  };
  struct Case {
    std::vector<std::string> argv;
    uint64_t limit_bytes;
  };
  std::vector<Case> cases = {{bench("65536", "full"), 128 * kMiB}};
  for (uint64_t mib = 6; mib <= 24; mib += 2)
    for (const char* residency : {"full", "transient"}) cases.push_back({bench("1", residency), mib * kMiB});
  int n_memory_errors = 0;
  for (const Case& c : cases) {
    const std::string what = c.argv[7] + "-token prompt, " + c.argv[15] + ", RLIMIT_AS " + std::to_string(c.limit_bytes / kMiB) + " MiB";
    const ChildResult r = run_child(c.argv, dir.path(), c.limit_bytes);
    if (r.exit_code == 0) continue;  // fits under this cap
    if (r.exit_code == 127 && r.err.find("error while loading shared libraries") != std::string::npos) continue;  // too small to start
    EXPECT_EQ(r.term_signal, 0) << what << ": killed by signal " << r.term_signal << "\n" << r.err;
    for (const char* crash : {"terminate called", "Aborted", "what():"})
      EXPECT_EQ(r.err.find(crash), std::string::npos) << what << ": " << r.err;
    std::string err = r.err;
    while (!err.empty() && err.back() == '\n') err.pop_back();
    EXPECT_EQ(err.find('\n'), std::string::npos) << what << ": more than one line:\n" << r.err;
    EXPECT_EQ(err.rfind("flea bench: ", 0), 0u) << what << ": " << r.err;
    const bool mentions_memory = err.find("out of memory") != std::string::npos ||
                                 (err.find("allocate") != std::string::npos && err.find("bytes") != std::string::npos);
    EXPECT_TRUE(mentions_memory) << what << ": " << err;
    ++n_memory_errors;
  }
  EXPECT_GT(n_memory_errors, 0) << "no cap made bench fail; the test no longer exercises allocation failure";
  // The big prompt must fail at 128 MiB (it needs far more), whatever else happened.
  const ChildResult big = run_child(cases[0].argv, dir.path(), cases[0].limit_bytes);
  EXPECT_EQ(big.exit_code, 1) << big.err;
  EXPECT_NE(big.err.find("out of memory"), std::string::npos) << big.err;
}

}  // namespace
