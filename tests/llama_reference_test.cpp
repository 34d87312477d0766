// The CPU forward pass against llama.cpp on every case of ../shared/reference: logits NMSE and
// top-1 agreement for each prompt, and the greedy continuation token by token.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

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

// ../shared/reference/README.md, "Suggested tolerances".
Tolerance tolerance_for(const std::string& file_type) {
  if (file_type == "F16" || file_type == "BF16" || file_type == "Q8_0") return {2e-4, 0.97};
  return {2e-3, 0.97};
}

nlohmann::json manifest() {
  std::ifstream in(test::reference_dir() + "/manifest.json");
  return nlohmann::json::parse(in);
}

class ReferenceCase : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!test::reference_available()) GTEST_SKIP() << "reference data not found at " << test::reference_dir();
    const nlohmann::json all = manifest();
    for (const auto& c : all["cases"]) {
      if (c["file_type"] == GetParam()) case_ = c;
    }
    ASSERT_FALSE(case_.is_null()) << "no case for " << GetParam();
    auto m = Model::open(test::reference_dir() + "/" + case_["model"].get<std::string>());
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    model_ = std::move(*m);
    auto p = MemoryProvider::load(*model_);
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    weights_ = std::move(*p);
  }

  nlohmann::json case_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<MemoryProvider> weights_;
  cpu::ThreadPool pool_{2};
};

TEST_P(ReferenceCase, LogitsMatchLlamaCpp) {
  const Tolerance tol = tolerance_for(GetParam());
  const int64_t V = model_->hp.n_vocab;
  for (const auto& prompt : case_["prompts"]) {
    const auto tokens = prompt["tokens"].get<std::vector<int32_t>>();
    const auto ref = test::read_f32(test::reference_dir() + "/" + prompt["logits"].get<std::string>());
    ASSERT_EQ(ref.size(), tokens.size() * static_cast<size_t>(V));
    Session s(*model_, weights_.get(), &pool_, static_cast<int64_t>(tokens.size()));
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
    std::printf("[ %s ] len %zu: nmse %.3e (bound %.0e, llama.cpp vs exact math %.3e), top-1 %.3f\n",
                GetParam().c_str(), tokens.size(), nmse, tol.nmse,
                prompt["exact_math"]["nmse"].get<double>(), top1);
    EXPECT_LE(nmse, tol.nmse);
    EXPECT_GE(top1, tol.top1);
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

INSTANTIATE_TEST_SUITE_P(AllFileTypes, ReferenceCase,
                         ::testing::Values("F16", "BF16", "Q8_0", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace flea
