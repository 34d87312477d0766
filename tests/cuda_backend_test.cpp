// ctest-labels: gpu
// The CUDA backend against the CPU backend on every dense reference model, arch/ and quants/ included
// (logits NMSE <= 1e-5),
// transient residency bit-identical to full residency on the GPU for prefetch 0/1/2 and both pin
// modes, micro-batching not changing a bit, and the VRAM budget respected or refused with the
// minimum. The KV cache in host memory (CudaOptions::kv "host") gives the resident cache's logits
// bit for bit over a prompt and decode steps, copies exactly the bytes its formula says, runs in a
// budget that refuses the resident cache, and starts over after reset(). The quants/ models
// (Q2_K Q3_K_M Q4_1 Q5_0 Q5_1 IQ4_NL IQ4_XS) against llama.cpp's logits directly. Skips when no
// CUDA device is present.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "compute/cpu/thread_pool.h"
#include "compute/cuda/cuda_session.h"
#include "model/llama.h"
#include "residency/options.h"
#include "residency/plan.h"
#include "residency/provider.h"
#include "test_util.h"

namespace flea {
namespace {

#define SKIP_WITHOUT_GPU_OR_DATA()                                        \
  do {                                                                    \
    std::string why;                                                      \
    if (!cuda_device_available(&why)) GTEST_SKIP() << "no GPU: " << why;  \
    if (!test::reference_available()) GTEST_SKIP() << "reference data not found"; \
  } while (0)

struct RunResult {
  std::vector<float> prompt_logits;  // all positions
  std::vector<float> next_logits;    // one decode step after the prompt
  std::string stats_json;
};

// The residency plan and weight provider a session runs over; the plan must outlive the session.
struct Weights {
  Plan plan;
  std::unique_ptr<WeightProvider> provider;
};

// False, with the test failure recorded, when planning or opening the provider fails.
bool open_weights(const Model& m, const ResidencyOptions& opts, Weights* w) {
  auto plan = plan_residency(m.file, m.layout, opts, nullptr);
  EXPECT_TRUE(plan.ok()) << plan.status().to_string();
  if (!plan.ok()) return false;
  w->plan = std::move(*plan);
  auto provider = make_provider(m.file.path, m.file, m.layout, w->plan, opts, nullptr);
  EXPECT_TRUE(provider.ok()) << provider.status().to_string();
  if (!provider.ok()) return false;
  w->provider = std::move(*provider);
  return true;
}

RunResult run_cuda(const Model& m, const ResidencyOptions& opts, const std::vector<int32_t>& tokens,
             const CudaOptions& copts = CudaOptions{}) {
  RunResult out;
  Weights w;
  if (!open_weights(m, opts, &w)) return out;
  auto s = make_cuda_session(m, w.provider.get(), w.plan, opts, static_cast<int64_t>(tokens.size()) + 4, copts);
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  if (!s.ok()) return out;
  Status st = (*s)->eval(tokens, &out.prompt_logits, true);
  EXPECT_TRUE(st.ok()) << st.to_string();
  st = (*s)->eval({tokens[0]}, &out.next_logits, false);
  EXPECT_TRUE(st.ok()) << st.to_string();
  out.stats_json = cuda_stats(**s)->to_json();
  return out;
}

RunResult run_cpu(const Model& m, const std::vector<int32_t>& tokens) {
  RunResult out;
  Weights w;
  if (!open_weights(m, ResidencyOptions{}, &w)) return out;
  cpu::ThreadPool pool(2);
  // The CUDA cache is F32: compare against the same cache type.
  Session s(m, w.provider.get(), &pool, static_cast<int64_t>(tokens.size()) + 4, 1, true, cpu::KvType::kF32);
  EXPECT_TRUE(s.eval(tokens, &out.prompt_logits, true).ok());
  EXPECT_TRUE(s.eval({tokens[0]}, &out.next_logits, false).ok());
  return out;
}

double nmse(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  double err = 0, norm = 0;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    if (std::isnan(got[i])) return INFINITY;
    err += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
    norm += static_cast<double>(want[i]) * want[i];
  }
  return err / norm;
}

bool bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && !a.empty() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

nlohmann::json manifest() {
  std::ifstream in(test::reference_dir() + "/manifest.json");
  return nlohmann::json::parse(in);
}

TEST(CudaBackend, LogitsMatchTheCpuOnEveryReferenceModel) {
  SKIP_WITHOUT_GPU_OR_DATA();
  // LLaMA-2 types, Llama 3 (rope_freqs), Qwen2 (biases, NeoX rope) and the low-bit types.
  for (const auto& [dir, path, c] : test::reference_cases(/*with_experts=*/false)) {  // MoE: CPU only
    const std::string name = c["model"].get<std::string>();
    auto m = Model::open(path);
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    for (const auto& prompt : c["prompts"]) {
      const auto tokens = prompt["tokens"].get<std::vector<int32_t>>();
      const RunResult cpu = run_cpu(**m, tokens);
      const RunResult gpu = run_cuda(**m, ResidencyOptions{}, tokens);
      const double e_prompt = nmse(gpu.prompt_logits, cpu.prompt_logits);
      const double e_next = nmse(gpu.next_logits, cpu.next_logits);
      std::printf("[ %s ] %zu tokens: nmse prompt %.3e, next %.3e\n", name.c_str(), tokens.size(), e_prompt, e_next);
      EXPECT_LE(e_prompt, 1e-5) << name;
      EXPECT_LE(e_next, 1e-5) << name;
    }
  }
}

// The seven weight types the CPU backend may lack, end to end on the GPU with no CPU kernel
// involved: the reference model in quants/ (Q2_K Q3_K_M Q4_1 Q5_0 Q5_1 IQ4_NL IQ4_XS) against
// llama.cpp's logits, with the CPU reference test's bounds (shared/reference/README.md,
// "Suggested tolerances": NMSE <= 2e-3, top-1 agreement >= 0.97).
TEST(CudaBackend, LogitsMatchLlamaCppOnTheQuantsModels) {
  SKIP_WITHOUT_GPU_OR_DATA();
  const std::string dir = test::reference_dir() + "/quants";
  std::ifstream in(dir + "/manifest.json");
  if (!in) GTEST_SKIP() << "no " << dir << "/manifest.json";
  const nlohmann::json all = nlohmann::json::parse(in);
  for (const auto& c : all["cases"]) {
    const std::string name = c["model"].get<std::string>();
    auto m = Model::open(dir + "/" + name);
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    const int64_t V = (*m)->hp.n_vocab;
    for (const auto& prompt : c["prompts"]) {
      const auto tokens = prompt["tokens"].get<std::vector<int32_t>>();
      const auto ref = test::read_f32(dir + "/" + prompt["logits"].get<std::string>());
      ASSERT_EQ(ref.size(), tokens.size() * static_cast<size_t>(V)) << name;
      const RunResult gpu = run_cuda(**m, ResidencyOptions{}, tokens);
      ASSERT_EQ(gpu.prompt_logits.size(), ref.size()) << name;
      int agree = 0;
      for (size_t t = 0; t < tokens.size(); ++t) {
        agree += argmax(&gpu.prompt_logits[t * V], V) == argmax(&ref[t * V], V);
      }
      const double e = nmse(gpu.prompt_logits, ref);
      const double top1 = static_cast<double>(agree) / static_cast<double>(tokens.size());
      std::printf("[ %s ] %zu tokens: nmse vs llama.cpp %.3e (bound 2e-3, llama.cpp vs exact math %.3e), top-1 %.3f\n",
                  name.c_str(), tokens.size(), e, prompt["exact_math"]["nmse"].get<double>(), top1);
      EXPECT_LE(e, 2e-3) << name << " len " << tokens.size();
      EXPECT_GE(top1, 0.97) << name << " len " << tokens.size();
    }
  }
}

TEST(CudaBackend, TransientIsBitIdenticalToFullForEveryPrefetchAndPinMode) {
  SKIP_WITHOUT_GPU_OR_DATA();
  const nlohmann::json all = manifest();  // the loop must not iterate a destroyed temporary
  for (const auto& c : all["cases"]) {
    const std::string name = c["model"].get<std::string>();
    auto m = Model::open(test::reference_dir() + "/" + name);
    ASSERT_TRUE(m.ok());
    const auto tokens = c["prompts"][0]["tokens"].get<std::vector<int32_t>>();
    const RunResult full = run_cuda(**m, ResidencyOptions{}, tokens);
    for (const char* pin : {"auto", "bounce"}) {
      for (const char* io : {"pread", "mmap"}) {
        for (int prefetch : {0, 1, 2}) {
          ResidencyOptions t;
          t.residency = "transient";
          t.io = io;
          t.prefetch = prefetch;
          CudaOptions co;
          co.pin = pin;
          const RunResult got = run_cuda(**m, t, tokens, co);
          EXPECT_TRUE(bit_identical(got.prompt_logits, full.prompt_logits))
              << name << " pin=" << pin << " io=" << io << " prefetch=" << prefetch;
          EXPECT_TRUE(bit_identical(got.next_logits, full.next_logits))
              << name << " pin=" << pin << " io=" << io << " prefetch=" << prefetch;
          const auto st = nlohmann::json::parse(got.stats_json);
          EXPECT_EQ(st["resident_layers"], 0) << got.stats_json;
          EXPECT_GT(st["h2d_bytes"].get<uint64_t>(), 0u) << got.stats_json;
        }
      }
    }
  }
}

TEST(CudaBackend, MicroBatchesDoNotChangeABit) {
  SKIP_WITHOUT_GPU_OR_DATA();
  auto m = Model::open(test::reference_dir() + "/pub-Q4_K_M.gguf");
  ASSERT_TRUE(m.ok());
  const auto tokens = manifest()["cases"][0]["prompts"][0]["tokens"].get<std::vector<int32_t>>();
  const RunResult whole = run_cuda(**m, ResidencyOptions{}, tokens);
  CudaOptions small;
  small.max_batch = 5;
  ResidencyOptions t;
  t.residency = "transient";
  const RunResult chunked = run_cuda(**m, t, tokens, small);
  EXPECT_TRUE(bit_identical(whole.prompt_logits, chunked.prompt_logits));
  EXPECT_TRUE(bit_identical(whole.next_logits, chunked.next_logits));
}

TEST(CudaBackend, VramBudgetIsRespectedOrRefusedWithTheMinimum) {
  SKIP_WITHOUT_GPU_OR_DATA();
  auto m = Model::open(test::reference_dir() + "/pub-F16.gguf");
  ASSERT_TRUE(m.ok());
  const std::vector<int32_t> tokens = {1, 2, 3, 4};
  ResidencyOptions tiny;
  tiny.residency = "auto";
  tiny.vram_budget_mb = 1;
  auto plan = plan_residency((*m)->file, (*m)->layout, tiny, nullptr);
  if (plan.ok()) {
    auto provider = make_provider((*m)->file.path, (*m)->file, (*m)->layout, *plan, tiny, nullptr);
    ASSERT_TRUE(provider.ok());
    auto s = make_cuda_session(**m, provider->get(), *plan, tiny, 16);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), StatusCode::kResourceExhausted);
    EXPECT_NE(s.status().message().find("at least"), std::string::npos) << s.status().message();
  }
  for (int64_t budget : {4, 8}) {
    ResidencyOptions opts;
    opts.residency = "auto";
    opts.vram_budget_mb = budget;
    const RunResult r = run_cuda(**m, opts, tokens);
    if (r.stats_json.empty()) continue;  // the CPU planner itself refused (reported above)
    const auto st = nlohmann::json::parse(r.stats_json);
    EXPECT_LE(st["vram_arena_peak_mb"].get<double>(), static_cast<double>(budget)) << r.stats_json;
    EXPECT_GT(st["vram_device_used_peak_mb"].get<double>(), 0.0);
  }
}

// ---- KV cache in host memory

// A prompt (all logits), then `steps` single-token decode steps (one logits row each) feeding the
// prompt's tokens back in, so every mode sees the same tokens; `rounds` times, with reset()
// between rounds. Empty logits when the session could not be made (failures recorded).
struct DecodeRun {
  std::vector<std::vector<float>> logits;  // [round * (1 + steps) + i]
  nlohmann::json stats;
  Status status;                           // make_cuda_session's
};

DecodeRun run_decode(const Model& m, const ResidencyOptions& opts, const CudaOptions& copts,
                     const std::vector<int32_t>& prompt, int steps, int64_t n_ctx, int rounds = 1,
                     bool expect_ok = true) {
  DecodeRun out;
  Weights w;
  if (!open_weights(m, opts, &w)) return out;
  auto s = make_cuda_session(m, w.provider.get(), w.plan, opts, n_ctx, copts);
  if (!s.ok()) {
    EXPECT_FALSE(expect_ok) << s.status().to_string();
    out.status = s.status();
    return out;
  }
  for (int r = 0; r < rounds; ++r) {
    if (r > 0) (*s)->reset();
    EXPECT_EQ((*s)->n_past(), 0);
    std::vector<float> lg;
    Status st = (*s)->eval(prompt, &lg, true);
    EXPECT_TRUE(st.ok()) << st.to_string();
    if (!st.ok()) return out;
    out.logits.push_back(lg);
    for (int k = 0; k < steps; ++k) {
      st = (*s)->eval({prompt[static_cast<size_t>(k) % prompt.size()]}, &lg, false);
      EXPECT_TRUE(st.ok()) << st.to_string();
      if (!st.ok()) return out;
      out.logits.push_back(lg);
    }
    EXPECT_EQ((*s)->n_past(), static_cast<int64_t>(prompt.size()) + steps);
  }
  out.stats = nlohmann::json::parse(cuda_stats(**s)->to_json());
  return out;
}

void expect_same_logits(const DecodeRun& got, const DecodeRun& want, const std::string& what) {
  ASSERT_EQ(got.logits.size(), want.logits.size()) << what;
  ASSERT_FALSE(want.logits.empty()) << what;
  for (size_t i = 0; i < want.logits.size(); ++i) {
    EXPECT_TRUE(bit_identical(got.logits[i], want.logits[i])) << what << ", eval " << i;
  }
}

// The host-mode copy totals of run_decode from the formula: per layer and forward call (a
// micro-batch of T tokens at position n_past), n_past * KV * 4 * 2 bytes in and T * KV * 4 * 2 out.
struct KvBytes {
  uint64_t h2d = 0, d2h = 0;
};
KvBytes expected_kv_bytes(const Model& m, int64_t prompt, int steps, int64_t n_ctx, int64_t max_batch, int rounds) {
  const uint64_t per_row = static_cast<uint64_t>(m.hp.n_embd_kv()) * 4 * 2 * static_cast<uint64_t>(m.hp.n_layer);
  const int64_t B = std::max<int64_t>(1, std::min(n_ctx, max_batch));
  KvBytes e;
  for (int r = 0; r < rounds; ++r) {
    int64_t n_past = 0;
    auto call = [&](int64_t T) {
      e.h2d += static_cast<uint64_t>(n_past) * per_row;
      e.d2h += static_cast<uint64_t>(T) * per_row;
      n_past += T;
    };
    for (int64_t s = 0; s < prompt; s += B) call(std::min(B, prompt - s));
    for (int k = 0; k < steps; ++k) call(1);
  }
  return e;
}

std::vector<int32_t> first_prompt(const std::string& model) {
  const nlohmann::json all = manifest();
  for (const auto& c : all["cases"]) {
    if (c["model"].get<std::string>() == model) return c["prompts"][0]["tokens"].get<std::vector<int32_t>>();
  }
  ADD_FAILURE() << model << " not in the manifest";
  return {1, 2, 3, 4};
}

constexpr int kSteps = 6;

TEST(CudaBackend, HostKvIsBitIdenticalToResidentKv) {
  SKIP_WITHOUT_GPU_OR_DATA();
  for (const char* name : {"pub-F16.gguf", "pub-Q8_0.gguf", "pub-Q4_K_M.gguf", "pub-Q6_K.gguf"}) {
    auto m = Model::open(test::reference_dir() + "/" + name);
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    const auto prompt = first_prompt(name);
    const int64_t n_ctx = static_cast<int64_t>(prompt.size()) + kSteps + 4;
    for (const char* residency : {"full", "transient"}) {
      for (int64_t max_batch : {128, 5}) {  // 5: the prompt in micro-batches, each at its own n_past
        ResidencyOptions opts;
        opts.residency = residency;
        CudaOptions resident;
        resident.max_batch = max_batch;
        CudaOptions host = resident;
        host.kv = "host";
        const std::string what = std::string(name) + " --residency " + residency + " max_batch " +
                                 std::to_string(max_batch);
        // The same options but the KV mode on both sides: only where the cache lives differs.
        const DecodeRun want = run_decode(**m, opts, resident, prompt, kSteps, n_ctx);
        ASSERT_EQ(want.logits.size(), static_cast<size_t>(1 + kSteps)) << what;
        EXPECT_EQ(want.stats["kv_mode"], "resident") << what;
        EXPECT_EQ(want.stats["kv_h2d_bytes"].get<uint64_t>(), 0u) << what;
        EXPECT_EQ(want.stats["kv_d2h_bytes"].get<uint64_t>(), 0u) << what;
        const DecodeRun got = run_decode(**m, opts, host, prompt, kSteps, n_ctx);
        expect_same_logits(got, want, what);
        if (got.stats.is_null()) continue;  // the failure is already recorded
        EXPECT_EQ(got.stats["kv_mode"], "host") << what;
        if (std::string(residency) == "transient") {
          EXPECT_EQ(got.stats["resident_layers"], 0) << what;
          EXPECT_GT(got.stats["h2d_bytes"].get<uint64_t>(), 0u) << what;
        }
      }
    }
  }
}

TEST(CudaBackend, HostKvCopiesExactlyTheFormulaBytes) {
  SKIP_WITHOUT_GPU_OR_DATA();
  auto m = Model::open(test::reference_dir() + "/pub-Q4_K_M.gguf");
  ASSERT_TRUE(m.ok());
  const Model& model = **m;
  const auto prompt = first_prompt("pub-Q4_K_M.gguf");
  const int64_t P = static_cast<int64_t>(prompt.size());
  const int64_t n_ctx = P + kSteps + 3;
  const uint64_t one = (static_cast<uint64_t>(n_ctx * model.hp.n_embd_kv()) * 4 + 255) / 256 * 256;  // K or V, aligned
  const uint64_t n_layer = static_cast<uint64_t>(model.hp.n_layer);
  const DecodeRun resident = run_decode(model, ResidencyOptions{}, CudaOptions{}, prompt, kSteps, n_ctx);
  ASSERT_FALSE(resident.stats.is_null());
  EXPECT_EQ(resident.stats["kv_host_mb"].get<double>(), 0.0);
  EXPECT_EQ(resident.stats["kv_vram_mb"].get<double>(), static_cast<double>(n_layer * 2 * one) / (1 << 20));
  for (int64_t max_batch : {128, 7, 1}) {
    for (int rounds : {1, 2}) {
      CudaOptions host;
      host.kv = "host";
      host.max_batch = max_batch;
      const std::string what = "max_batch " + std::to_string(max_batch) + ", rounds " + std::to_string(rounds);
      const DecodeRun got = run_decode(model, ResidencyOptions{}, host, prompt, kSteps, n_ctx, rounds);
      ASSERT_FALSE(got.stats.is_null()) << what;
      const KvBytes e = expected_kv_bytes(model, P, kSteps, n_ctx, max_batch, rounds);
      EXPECT_EQ(got.stats["kv_h2d_bytes"].get<uint64_t>(), e.h2d) << what;
      EXPECT_EQ(got.stats["kv_d2h_bytes"].get<uint64_t>(), e.d2h) << what;
      EXPECT_GT(e.h2d, 0u);
      // Every position written back once per round.
      EXPECT_EQ(e.d2h, static_cast<uint64_t>(rounds) * static_cast<uint64_t>(P + kSteps) * n_layer *
                           static_cast<uint64_t>(model.hp.n_embd_kv()) * 8);
      EXPECT_EQ(got.stats["kv_host_mb"].get<double>(),
                static_cast<double>(n_layer * 2 * static_cast<uint64_t>(n_ctx * model.hp.n_embd_kv()) * 4) / (1 << 20))
          << what;
      EXPECT_EQ(got.stats["kv_vram_mb"].get<double>(), static_cast<double>(2 * one) / (1 << 20)) << what;
      if (max_batch == 128) {
        // Same scratch as the resident run: the arena is smaller by exactly n_layer - 1 working pairs.
        EXPECT_NEAR(resident.stats["vram_arena_mb"].get<double>() - got.stats["vram_arena_mb"].get<double>(),
                    static_cast<double>((n_layer - 1) * 2 * one) / (1 << 20), 1e-9)
            << what;
      }
      EXPECT_NE(got.stats["plan"].get<std::string>().find("KV host"), std::string::npos) << got.stats.dump();
    }
  }
  // An unknown mode is refused.
  CudaOptions bad;
  bad.kv = "disk";
  const DecodeRun refused = run_decode(model, ResidencyOptions{}, bad, prompt, kSteps, n_ctx, 1, false);
  EXPECT_EQ(refused.status.code(), StatusCode::kInvalidArgument) << refused.status.to_string();
}

TEST(CudaBackend, HostKvRunsInABudgetThatRefusesResidentKv) {
  SKIP_WITHOUT_GPU_OR_DATA();
  auto m = Model::open(test::reference_dir() + "/pub-F16.gguf");
  ASSERT_TRUE(m.ok());
  const auto prompt = first_prompt("pub-F16.gguf");
  // A long context: the resident cache (every layer, 2048 positions) outweighs one working pair by
  // several MiB on these models, so whole-MB budgets separate the two modes.
  const int64_t n_ctx = 2048;
  ResidencyOptions transient;
  transient.residency = "transient";  // every layer streamed: the arena is the plan's minimum
  CudaOptions host;
  host.kv = "host";
  const DecodeRun want = run_decode(**m, transient, CudaOptions{}, prompt, kSteps, n_ctx);
  const DecodeRun unlimited = run_decode(**m, transient, host, prompt, kSteps, n_ctx);
  ASSERT_FALSE(want.stats.is_null());
  ASSERT_FALSE(unlimited.stats.is_null());
  const auto budget_mb = [](const DecodeRun& r) {
    return static_cast<int64_t>(std::ceil(r.stats["vram_arena_mb"].get<double>()));
  };
  const int64_t resident_mb = budget_mb(want), host_mb = budget_mb(unlimited);
  ASSERT_LT(host_mb, resident_mb) << want.stats.dump() << "\n" << unlimited.stats.dump();

  transient.vram_budget_mb = host_mb;
  const DecodeRun refused = run_decode(**m, transient, CudaOptions{}, prompt, kSteps, n_ctx, 1, false);
  EXPECT_EQ(refused.status.code(), StatusCode::kResourceExhausted) << refused.status.to_string();
  EXPECT_NE(refused.status.message().find("at least " + std::to_string(resident_mb) + " MB"), std::string::npos)
      << refused.status.message();
  EXPECT_NE(refused.status.message().find("--kv host keeps"), std::string::npos) << refused.status.message();

  const DecodeRun got = run_decode(**m, transient, host, prompt, kSteps, n_ctx);
  ASSERT_FALSE(got.stats.is_null());
  EXPECT_LE(got.stats["vram_arena_peak_mb"].get<double>(), static_cast<double>(host_mb)) << got.stats.dump();
  expect_same_logits(got, want, "--kv host in " + std::to_string(host_mb) + " MB");

  // The resident cache runs in the minimum it states.
  transient.vram_budget_mb = resident_mb;
  const DecodeRun fits = run_decode(**m, transient, CudaOptions{}, prompt, kSteps, n_ctx);
  expect_same_logits(fits, want, "--kv resident in " + std::to_string(resident_mb) + " MB");
}

TEST(CudaBackend, HostKvStartsOverAfterReset) {
  SKIP_WITHOUT_GPU_OR_DATA();
  for (const char* name : {"pub-Q8_0.gguf", "pub-Q5_K_M.gguf"}) {
    auto m = Model::open(test::reference_dir() + "/" + name);
    ASSERT_TRUE(m.ok());
    const auto prompt = first_prompt(name);
    const int64_t n_ctx = static_cast<int64_t>(prompt.size()) + kSteps;
    CudaOptions host;
    host.kv = "host";
    const DecodeRun twice = run_decode(**m, ResidencyOptions{}, host, prompt, kSteps, n_ctx, 2);
    ASSERT_EQ(twice.logits.size(), static_cast<size_t>(2 * (1 + kSteps))) << name;
    for (size_t i = 0; i <= static_cast<size_t>(kSteps); ++i) {
      EXPECT_TRUE(bit_identical(twice.logits[i], twice.logits[i + 1 + kSteps])) << name << ", eval " << i;
    }
    // And both rounds are the resident cache's.
    const DecodeRun resident = run_decode(**m, ResidencyOptions{}, CudaOptions{}, prompt, kSteps, n_ctx);
    ASSERT_EQ(resident.logits.size(), static_cast<size_t>(1 + kSteps));
    for (size_t i = 0; i <= static_cast<size_t>(kSteps); ++i) {
      EXPECT_TRUE(bit_identical(twice.logits[i + 1 + kSteps], resident.logits[i])) << name << ", eval " << i;
    }
  }
}

}  // namespace
}  // namespace flea
