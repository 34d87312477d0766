// The CPU forward pass against llama.cpp on every dense case of ../shared/reference and of its arch/
// (Llama 3 with rope_freqs, Qwen2) and quants/ (low-bit types) sets: logits NMSE and top-1 agreement
// for each prompt, and the greedy continuation token by token; arch/ includes the Mixtral-style MoE
// files (4 experts, top-2) and Llama 4 (interleaved MoE with a shared expert and sigmoid gating, NoPE
// layers with attention temperature, QK norm, chunked attention).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "compute/cpu/amx.h"
#include "compute/cpu/thread_pool.h"
#include "model/llama.h"
#include "model/memory_provider.h"
#include "test_util.h"

namespace flea {
namespace {

struct Tolerance {
  double nmse;
  double top1;
};

// ../shared/reference/README.md, "Suggested tolerances"; arch/ and quants/ use the model-coverage
// issue's bounds (5e-4 for Q8_0: the Llama 3 and Qwen2 cases' own exact-math NMSE is up to 1.6e-4).
Tolerance tolerance_for(const std::string& set, const std::string& file_type) {
  if (file_type == "F16" || file_type == "BF16") return {2e-4, 0.97};
  if (file_type == "Q8_0") return {set.empty() ? 2e-4 : 5e-4, 0.97};
  return {2e-3, 0.97};
}

nlohmann::json manifest(const std::string& set) {
  std::ifstream in(test::reference_dir() + "/" + set + "manifest.json");
  return nlohmann::json::parse(in);
}

// "arch/l3-Q8_0" -> set "arch/", model "l3-Q8_0.gguf".
struct CaseId {
  std::string set, model;
};
CaseId split(const std::string& param) {
  const size_t slash = param.rfind('/');
  if (slash == std::string::npos) return {"", param + ".gguf"};
  return {param.substr(0, slash + 1), param.substr(slash + 1) + ".gguf"};
}

class ReferenceCase : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!test::reference_available()) GTEST_SKIP() << "reference data not found at " << test::reference_dir();
    id_ = split(GetParam());
    const nlohmann::json all = manifest(id_.set);
    for (const auto& c : all["cases"]) {
      if (c["model"] == id_.model) case_ = c;
    }
    ASSERT_FALSE(case_.is_null()) << "no case for " << GetParam();
    auto m = Model::open(dir() + case_["model"].get<std::string>());
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    model_ = std::move(*m);
    auto p = MemoryProvider::load(*model_);
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    weights_ = std::move(*p);
  }
  std::string dir() const { return test::reference_dir() + "/" + id_.set; }

  CaseId id_;
  nlohmann::json case_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<MemoryProvider> weights_;
  cpu::ThreadPool pool_{2};
};

// llama.cpp made the reference with an F32 KV cache (manifest producer.kv_cache): the same cache type
// meets the tolerances above. The engine's default F16 cache meets the same NMSE bound, and its
// argmax may differ from llama.cpp's only at near-ties: rows where llama.cpp's own logits put the
// two tokens within kNearTie (the prompts were chosen with llama.cpp margins >= 0.02; the F16 cache
// flips rows whose llama.cpp margins are 0.0225, 0.0256 (pub-Q5_K_M, l4-Q8_0) and 0.061 (IQ4_XS)).
constexpr float kNearTie = 0.1f;

TEST_P(ReferenceCase, LogitsMatchLlamaCpp) {
  ASSERT_EQ(manifest(id_.set)["producer"]["kv_cache"], "f32") << "the reference's KV cache type changed";
  const Tolerance tol = tolerance_for(id_.set, case_["file_type"].get<std::string>());
  const int64_t V = model_->hp.n_vocab;
  for (const auto& prompt : case_["prompts"]) {
    const auto tokens = prompt["tokens"].get<std::vector<int32_t>>();
    const auto ref = test::read_f32(dir() + prompt["logits"].get<std::string>());
    ASSERT_EQ(ref.size(), tokens.size() * static_cast<size_t>(V));
    {
      Session f16(*model_, weights_.get(), &pool_, static_cast<int64_t>(tokens.size()));
      ASSERT_EQ(f16.kv_type(), cpu::KvType::kF16);
      std::vector<float> got;
      ASSERT_TRUE(f16.eval(tokens, &got, /*all_logits=*/true).ok());
      double err = 0, norm = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        err += (static_cast<double>(got[i]) - ref[i]) * (static_cast<double>(got[i]) - ref[i]);
        norm += static_cast<double>(ref[i]) * ref[i];
      }
      std::printf("[ %s ] len %zu: F16 cache nmse %.3e\n", GetParam().c_str(), tokens.size(), err / norm);
      EXPECT_LE(err / norm, tol.nmse) << "F16 cache";
      for (size_t t = 0; t < tokens.size(); ++t) {
        const float* r = &ref[t * V];
        const int32_t g = argmax(&got[t * V], V), w = argmax(r, V);
        EXPECT_LE(r[w] - r[g], kNearTie) << "F16 cache, row " << t << ": " << g << " instead of llama.cpp's " << w;
      }
    }
    // Both CPU matmul paths: the AMX tiles (these batches of 16 and 48 rows go to them) where the
    // CPU has them, and the per-row dots (FLEA_AMX=0).
    std::vector<bool> paths = {false};
    if (cpu::amx::available()) paths.insert(paths.begin(), true);
    for (bool tiles : paths) {
      SCOPED_TRACE(tiles ? "amx tiles" : "per-row dots");
      const test::AmxSet path(tiles);
      Session s(*model_, weights_.get(), &pool_, static_cast<int64_t>(tokens.size()), 1, true, cpu::KvType::kF32);
      std::vector<float> got;
      ASSERT_TRUE(s.eval(tokens, &got, /*all_logits=*/true).ok());
      ASSERT_EQ(got.size(), ref.size());
      double err = 0, norm = 0;
      int agree = 0;
      for (size_t t = 0; t < tokens.size(); ++t) {
        const float* g = &got[t * V];
        const float* r = &ref[t * V];
        for (int64_t i = 0; i < V; ++i) {
          ASSERT_TRUE(std::isfinite(g[i]));
          err += (static_cast<double>(g[i]) - r[i]) * (static_cast<double>(g[i]) - r[i]);
          norm += static_cast<double>(r[i]) * r[i];
        }
        agree += argmax(g, V) == argmax(r, V);
      }
      const double nmse = err / norm;
      const double top1 = static_cast<double>(agree) / static_cast<double>(tokens.size());
      RecordProperty("nmse_len" + std::to_string(tokens.size()), std::to_string(nmse));
      std::printf("[ %s ] %s len %zu: nmse %.3e (bound %.0e, llama.cpp vs exact math %.3e), top-1 %.3f\n",
                  GetParam().c_str(), tiles ? "amx " : "dots", tokens.size(), nmse, tol.nmse,
                  prompt["exact_math"]["nmse"].get<double>(), top1);
      EXPECT_LE(nmse, tol.nmse);
      EXPECT_GE(top1, tol.top1);
    }
  }
}

TEST_P(ReferenceCase, GreedyContinuationIsIdentical) {
  const auto& g = case_["greedy"];
  const auto prompt = g["prompt_tokens"].get<std::vector<int32_t>>();
  const auto want = g["generated"].get<std::vector<int32_t>>();
  const int64_t V = model_->hp.n_vocab;
  Session s(*model_, weights_.get(), &pool_, static_cast<int64_t>(prompt.size() + want.size()));
  std::vector<float> logits;
  ASSERT_TRUE(s.eval(prompt, &logits, false).ok());
  std::vector<int32_t> got;
  for (size_t k = 0; k < want.size(); ++k) {
    got.push_back(argmax(logits.data(), V));
    if (k + 1 < want.size()) {
      ASSERT_TRUE(s.eval({got.back()}, &logits, false).ok());
    }
  }
  EXPECT_EQ(got, want);
}

std::string case_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string n = info.param;
  for (char& c : n)
    if (c == '/' || c == '-') c = '_';
  return n;
}

INSTANTIATE_TEST_SUITE_P(Llama2, ReferenceCase,
                         ::testing::Values("pub-F16", "pub-BF16", "pub-Q8_0", "pub-Q4_0", "pub-Q4_K_M", "pub-Q5_K_M",
                                           "pub-Q6_K"),
                         case_name);
INSTANTIATE_TEST_SUITE_P(Architectures, ReferenceCase,
                         ::testing::Values("arch/l3-Q8_0", "arch/l3-Q4_K_M", "arch/qwen2-Q8_0", "arch/qwen2-Q4_K_M",
                                           "arch/moe-Q8_0", "arch/moe-Q4_K_M", "arch/moe-Q3_K_M", "arch/l4-Q8_0"),
                         case_name);
INSTANTIATE_TEST_SUITE_P(LowBitTypes, ReferenceCase,
                         ::testing::Values("quants/pub-Q2_K", "quants/pub-Q3_K_M", "quants/pub-Q4_1", "quants/pub-Q5_0",
                                           "quants/pub-Q5_1", "quants/pub-IQ4_NL", "quants/pub-IQ4_XS"),
                         case_name);

// The architecture facts the forward pass reads, per reference file.
TEST(ReferenceArchitectures, HyperparametersCarryTheArchitectureFacts) {
  if (!test::reference_available()) GTEST_SKIP() << "reference data not found";
  const nlohmann::json all = manifest("arch/");
  int checked = 0;
  for (const auto& c : all["cases"]) {
    const std::string arch = c["arch"];
    auto m = Model::open(test::reference_dir() + "/arch/" + c["model"].get<std::string>());
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    const LlamaHparams& hp = (*m)->hp;
    const auto& f = c["features"];
    EXPECT_EQ(hp.arch->name, arch);
    EXPECT_STREQ(rope_type_name(hp.rope_type), f["rope_type"].get<std::string>().c_str()) << c["model"];
    EXPECT_EQ(hp.n_rot, f["n_rot"].get<int64_t>());
    EXPECT_EQ(hp.qkv_bias, f["attn_bias"].get<bool>());
    EXPECT_EQ(hp.rope_freqs, !f["rope_freqs"].is_null());
    EXPECT_EQ(hp.tied_embeddings, c["tied"].get<bool>());
    EXPECT_EQ(hp.n_head_kv, c["n_head_kv"].get<int64_t>());
    EXPECT_DOUBLE_EQ(hp.rope_freq_base, c["rope_freq_base"].get<double>());
    EXPECT_EQ(hp.n_expert, f["n_expert"].get<int64_t>());
    EXPECT_EQ(hp.n_expert_used, f["n_expert_used"].get<int64_t>());
    EXPECT_EQ(hp.n_ff, c["n_ff"].get<int64_t>());
    if (arch == "llama4") {  // the layer pattern of the l4 case
      EXPECT_EQ(hp.n_ff_exp, f["n_ff_exp"].get<int64_t>());
      EXPECT_TRUE(hp.shared_expert);
      EXPECT_EQ(hp.gating, MoeGating::kSigmoidOnInput);
      EXPECT_EQ(hp.qk_norm, f["use_kq_norm"].get<bool>());
      for (int64_t il = 0; il < hp.n_layer; ++il) {
        const auto in = [&](const char* key) {
          for (const auto& v : f[key]) if (v.get<int64_t>() == il) return true;
          return false;
        };
        EXPECT_EQ(hp.is_moe_layer(il), in("moe_layers")) << il;
        EXPECT_EQ(!hp.uses_rope(il), in("nope_layers")) << il;
        EXPECT_EQ(hp.first_visible(il, 8192 + 5) == 8192, in("chunked_layers")) << il;
      }
    }
    ++checked;
  }
  EXPECT_EQ(checked, 8);
}

}  // namespace
}  // namespace flea
