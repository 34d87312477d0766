// Sampler: each filter on hand-made distributions with exact expectations, filter order, the
// seeded draw (reproduced independently here), empirical frequencies, parameter validation.
#include "sampling/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <vector>

namespace flea {
namespace {

SamplerConfig plain(float temperature = 1.0f) {
  SamplerConfig c;
  c.temperature = temperature;
  c.top_k = 0;
  c.top_p = 1.0f;
  c.min_p = 0.0f;
  c.repeat_penalty = 1.0f;
  c.seed = 7;
  return c;
}

Sampler make(const SamplerConfig& c) {
  auto s = Sampler::create(c);
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return std::move(s).value();
}

std::map<int32_t, double> probs(const Sampler& s, const std::vector<float>& logits) {
  std::map<int32_t, double> m;
  for (const TokenProb& t : s.distribution(logits.data(), static_cast<int32_t>(logits.size()))) m[t.id] = t.p;
  return m;
}

std::vector<float> log_of(const std::vector<double>& p) {
  std::vector<float> l;
  for (double x : p) l.push_back(static_cast<float>(std::log(x)));
  return l;
}

constexpr double kTol = 1e-6;

TEST(Sampler, GreedyIsArgmaxLowestIdOnTies) {
  Sampler s = make(plain(0.0f));
  EXPECT_EQ(s.sample({0.1f, 2.0f, -1.0f, 2.0f}), 1);
  EXPECT_EQ(s.sample({-3.0f, -1.0f, -2.0f}), 1);
  EXPECT_EQ(s.sample({5.0f}), 0);
  // Greedy ignores top-k/top-p/min-p settings and never consumes randomness.
  SamplerConfig c = plain(0.0f);
  c.top_k = 1;
  c.top_p = 0.1f;
  Sampler g = make(c);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(g.sample({1.0f, 3.0f, 3.0f, 2.0f}), 1);
  auto d = g.distribution(std::vector<float>{1.0f, 3.0f}.data(), 2);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].id, 1);
  EXPECT_EQ(d[0].p, 1.0);
}

TEST(Sampler, TemperatureScalesLogits) {
  // exp(l / 2) for l = {0, ln 4} is {1, 2}: probabilities 1/3, 2/3.
  Sampler s = make(plain(2.0f));
  auto p = probs(s, {0.0f, static_cast<float>(std::log(4.0))});
  ASSERT_EQ(p.size(), 2u);
  EXPECT_NEAR(p[0], 1.0 / 3.0, kTol);
  EXPECT_NEAR(p[1], 2.0 / 3.0, kTol);
  // Temperature 0.5 squares the odds: {1, 16} -> 1/17, 16/17.
  Sampler cold = make(plain(0.5f));
  p = probs(cold, {0.0f, static_cast<float>(std::log(4.0))});
  EXPECT_NEAR(p[1], 16.0 / 17.0, kTol);
}

TEST(Sampler, TopKKeepsTheKHighestBeforeSoftmax) {
  SamplerConfig c = plain();
  c.top_k = 2;
  Sampler s = make(c);
  auto d = s.distribution(std::vector<float>{1.0f, 2.0f, 3.0f, 4.0f}.data(), 4);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].id, 3);
  EXPECT_EQ(d[1].id, 2);
  const double e = std::exp(1.0);
  EXPECT_NEAR(d[0].p, e / (1.0 + e), kTol);
  EXPECT_NEAR(d[1].p, 1.0 / (1.0 + e), kTol);
  // Ties at the cut keep the lowest id.
  auto t = s.distribution(std::vector<float>{2.0f, 5.0f, 2.0f, 2.0f}.data(), 4);
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].id, 1);
  EXPECT_EQ(t[1].id, 0);
  // k >= n_vocab is no filter.
  c.top_k = 10;
  EXPECT_EQ(probs(make(c), {1.0f, 2.0f, 3.0f}).size(), 3u);
}

TEST(Sampler, TopPKeepsTheSmallestPrefixReachingP) {
  const std::vector<float> logits = log_of({0.5, 0.3, 0.15, 0.05});
  SamplerConfig c = plain();
  c.top_p = 0.75f;  // 0.5 < 0.75 <= 0.8: two tokens
  auto p = probs(make(c), logits);
  ASSERT_EQ(p.size(), 2u);
  EXPECT_NEAR(p[0], 0.5 / 0.8, kTol);
  EXPECT_NEAR(p[1], 0.3 / 0.8, kTol);
  c.top_p = 0.85f;  // three tokens
  p = probs(make(c), logits);
  ASSERT_EQ(p.size(), 3u);
  EXPECT_NEAR(p[2], 0.15 / 0.95, kTol);
  c.top_p = 0.01f;  // always at least the top token
  p = probs(make(c), logits);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_NEAR(p[0], 1.0, kTol);
  c.top_p = 1.0f;
  EXPECT_EQ(probs(make(c), logits).size(), 4u);
}

TEST(Sampler, MinPDropsTokensBelowAFractionOfTheBest) {
  const std::vector<float> logits = log_of({0.5, 0.3, 0.15, 0.05});
  SamplerConfig c = plain();
  c.min_p = 0.2f;  // threshold 0.1: 0.05 goes
  auto p = probs(make(c), logits);
  ASSERT_EQ(p.size(), 3u);
  EXPECT_NEAR(p[0], 0.5 / 0.95, kTol);
  EXPECT_EQ(p.count(3), 0u);
  c.min_p = 0.5f;  // threshold 0.25
  p = probs(make(c), logits);
  ASSERT_EQ(p.size(), 2u);
  EXPECT_NEAR(p[1], 0.3 / 0.8, kTol);
  c.min_p = 1.0f;  // only the best
  EXPECT_EQ(probs(make(c), logits).size(), 1u);
}

TEST(Sampler, RepetitionPenaltyDividesPositiveMultipliesNegative) {
  SamplerConfig c = plain();
  c.repeat_penalty = 2.0f;
  c.repeat_last_n = 8;
  Sampler s = make(c);
  for (int32_t t : {0, 1, 0}) s.accept(t);  // a repeated token is penalized once
  auto d = s.distribution(std::vector<float>{2.0f, -2.0f, 1.0f}.data(), 3);
  std::map<int32_t, float> l;
  for (const auto& t : d) l[t.id] = t.logit;
  EXPECT_FLOAT_EQ(l[0], 1.0f);
  EXPECT_FLOAT_EQ(l[1], -4.0f);
  EXPECT_FLOAT_EQ(l[2], 1.0f);
  // History ids outside the vocabulary are ignored.
  s.accept(1000);
  EXPECT_EQ(s.distribution(std::vector<float>{2.0f, -2.0f, 1.0f}.data(), 3).size(), 3u);
}

TEST(Sampler, RepetitionPenaltyLooksBackOnlyLastN) {
  SamplerConfig c = plain(0.0f);
  c.repeat_penalty = 10.0f;
  c.repeat_last_n = 2;
  Sampler s = make(c);
  for (int32_t t : {0, 1, 2}) s.accept(t);
  EXPECT_EQ(s.history(), (std::vector<int32_t>{1, 2}));
  // Token 0 left the window, so it keeps its lead; 1 and 2 are penalized.
  EXPECT_EQ(s.sample({3.0f, 3.5f, 3.2f}), 0);
  c.repeat_last_n = 0;
  Sampler off = make(c);
  off.accept(1);
  EXPECT_TRUE(off.history().empty());
  EXPECT_EQ(off.sample({3.0f, 3.5f, 3.2f}), 1);
}

TEST(Sampler, FilterOrderPenaltyThenTopK) {
  // Penalty first: id 0 drops from 3 to 1.5, so top-1 keeps id 1.
  SamplerConfig c = plain();
  c.repeat_penalty = 2.0f;
  c.top_k = 1;
  Sampler s = make(c);
  s.accept(0);
  auto d = s.distribution(std::vector<float>{3.0f, 2.5f, 0.0f}.data(), 3);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].id, 1);
}

TEST(Sampler, FilterOrderTopPThenMinP) {
  // top_p 0.85 keeps {0.5, 0.3, 0.15} renormalized; min_p 0.35 then cuts at 0.35 * 0.526 = 0.184,
  // dropping 0.15/0.95 = 0.158.
  SamplerConfig c = plain();
  c.top_p = 0.85f;
  c.min_p = 0.35f;
  auto p = probs(make(c), log_of({0.5, 0.3, 0.15, 0.05}));
  ASSERT_EQ(p.size(), 2u);
  EXPECT_NEAR(p[0], 0.5 / 0.8, kTol);
}

TEST(Sampler, DrawMatchesAnIndependentReimplementation) {
  // The engine is std::mt19937_64 (whose output the C++ standard fixes) ...
  std::mt19937_64 check;
  for (int i = 1; i < 10000; ++i) check();
  EXPECT_EQ(check(), 9981545732273789042ull);
  // ... and a draw maps its top 53 bits to [0, 1) and walks the distribution in order.
  SamplerConfig c = plain(0.7f);
  c.seed = 12345;
  c.top_k = 3;
  const std::vector<float> logits = {0.3f, 1.2f, -0.4f, 0.9f, 1.0f};
  Sampler s = make(c);
  const auto dist = s.distribution(logits.data(), 5);
  std::mt19937_64 rng(12345);
  for (int i = 0; i < 200; ++i) {
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    double cum = 0.0;
    int32_t want = dist.back().id;
    for (const auto& t : dist) {
      cum += t.p;
      if (u < cum) {
        want = t.id;
        break;
      }
    }
    ASSERT_EQ(s.sample(logits), want) << "draw " << i;
  }
}

TEST(Sampler, SameSeedSameSequence) {
  SamplerConfig c = plain(1.0f);
  c.top_k = 40;
  c.top_p = 0.95f;
  c.seed = 2024;
  std::vector<float> logits(100);
  for (int i = 0; i < 100; ++i) logits[i] = static_cast<float>(std::sin(i * 0.7) * 3.0);
  Sampler a = make(c), b = make(c);
  std::vector<int32_t> seq_a, seq_b;
  for (int i = 0; i < 500; ++i) {
    seq_a.push_back(a.sample(logits));
    seq_b.push_back(b.sample(logits));
  }
  EXPECT_EQ(seq_a, seq_b);
  // reset() replays the sequence; another seed gives another one.
  a.reset();
  std::vector<int32_t> replay;
  for (int i = 0; i < 500; ++i) replay.push_back(a.sample(logits));
  EXPECT_EQ(replay, seq_a);
  c.seed = 2025;
  Sampler other = make(c);
  std::vector<int32_t> seq_c;
  for (int i = 0; i < 500; ++i) seq_c.push_back(other.sample(logits));
  EXPECT_NE(seq_c, seq_a);
}

TEST(Sampler, FrequenciesMatchSoftmax) {
  SamplerConfig c = plain(1.0f);
  c.seed = 99;
  Sampler s = make(c);
  const std::vector<float> logits = {0.0f, 1.0f, 2.0f};
  const double z = 1.0 + std::exp(1.0) + std::exp(2.0);
  const double want[3] = {1.0 / z, std::exp(1.0) / z, std::exp(2.0) / z};
  int counts[3] = {0, 0, 0};
  constexpr int kDraws = 20000;
  for (int i = 0; i < kDraws; ++i) {
    int32_t t = s.sample(logits);
    ASSERT_TRUE(t >= 0 && t < 3);
    ++counts[t];
  }
  // One standard deviation is at most sqrt(0.25 / 20000) = 0.0035; allow ~4.
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(counts[i] / double(kDraws), want[i], 0.015) << "token " << i;
}

TEST(Sampler, NonFiniteLogits) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  Sampler s = make(plain(1.0f));
  for (int i = 0; i < 200; ++i) EXPECT_NE(s.sample({nan, 0.0f, nan, 0.5f}), 0);
  EXPECT_EQ(s.sample({-inf, -inf, -inf}), 0);
  EXPECT_EQ(s.sample({nan, nan}), 0);
  auto p = probs(s, {inf, 0.0f, inf});
  EXPECT_NEAR(p[0], 0.5, kTol);
  EXPECT_NEAR(p[2], 0.5, kTol);
  EXPECT_EQ(p.count(1), 0u);
  Sampler g = make(plain(0.0f));
  EXPECT_EQ(g.sample({nan, -1.0f, nan}), 1);
}

TEST(Sampler, InvalidParametersAreErrors) {
  auto bad = [](auto mutate, const char* name) {
    SamplerConfig c = plain();
    mutate(c);
    auto s = Sampler::create(c);
    ASSERT_FALSE(s.ok()) << name;
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find(name), std::string::npos) << s.status().to_string();
  };
  bad([](SamplerConfig& c) { c.temperature = -0.1f; }, "temperature");
  bad([](SamplerConfig& c) { c.temperature = std::numeric_limits<float>::quiet_NaN(); }, "temperature");
  bad([](SamplerConfig& c) { c.temperature = std::numeric_limits<float>::infinity(); }, "temperature");
  bad([](SamplerConfig& c) { c.top_k = -1; }, "top_k");
  bad([](SamplerConfig& c) { c.top_p = 0.0f; }, "top_p");
  bad([](SamplerConfig& c) { c.top_p = 1.5f; }, "top_p");
  bad([](SamplerConfig& c) { c.top_p = std::numeric_limits<float>::quiet_NaN(); }, "top_p");
  bad([](SamplerConfig& c) { c.min_p = -0.1f; }, "min_p");
  bad([](SamplerConfig& c) { c.min_p = 1.01f; }, "min_p");
  bad([](SamplerConfig& c) { c.repeat_penalty = 0.0f; }, "repeat_penalty");
  bad([](SamplerConfig& c) { c.repeat_penalty = -1.0f; }, "repeat_penalty");
  bad([](SamplerConfig& c) { c.repeat_last_n = -1; }, "repeat_last_n");
  EXPECT_TRUE(Sampler::validate(SamplerConfig{}).ok());
}

}  // namespace
}  // namespace flea
