#include "sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace flea {

namespace {

bool higher(const TokenProb& a, const TokenProb& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

void normalize(std::vector<TokenProb>* c) {
  double sum = 0.0;
  for (const TokenProb& t : *c) sum += t.p;
  for (TokenProb& t : *c) t.p /= sum;
}

}  // namespace

Status Sampler::validate(const SamplerConfig& c) {
  if (!std::isfinite(c.temperature) || c.temperature < 0.0f) {
    return invalid_argument("temperature = " + std::to_string(c.temperature) + ", must be finite and >= 0");
  }
  if (c.top_k < 0) return invalid_argument("top_k = " + std::to_string(c.top_k) + ", must be >= 0 (0 = off)");
  if (!(c.top_p > 0.0f && c.top_p <= 1.0f)) {
    return invalid_argument("top_p = " + std::to_string(c.top_p) + ", must be in (0, 1] (1 = off)");
  }
  if (!(c.min_p >= 0.0f && c.min_p <= 1.0f)) {
    return invalid_argument("min_p = " + std::to_string(c.min_p) + ", must be in [0, 1] (0 = off)");
  }
  if (!std::isfinite(c.repeat_penalty) || c.repeat_penalty <= 0.0f) {
    return invalid_argument("repeat_penalty = " + std::to_string(c.repeat_penalty) +
                            ", must be finite and > 0 (1 = off)");
  }
  if (c.repeat_last_n < 0) {
    return invalid_argument("repeat_last_n = " + std::to_string(c.repeat_last_n) + ", must be >= 0 (0 = off)");
  }
  return ok_status();
}

StatusOr<Sampler> Sampler::create(const SamplerConfig& config) {
  FLEA_RETURN_IF_ERROR(validate(config));
  return Sampler(config);
}

void Sampler::accept(int32_t token) {
  if (config_.repeat_last_n <= 0) return;
  history_.push_back(token);
  if (history_.size() > static_cast<size_t>(config_.repeat_last_n)) {
    history_.erase(history_.begin(), history_.end() - config_.repeat_last_n);
  }
}

void Sampler::reset() {
  history_.clear();
  rng_.seed(config_.seed);
}

double Sampler::next_uniform() {
  // The top 53 bits as a dyadic fraction: exact, and the same on every platform (unlike
  // std::uniform_real_distribution, whose algorithm is implementation-defined).
  return static_cast<double>(rng_() >> 11) * 0x1.0p-53;
}

std::vector<TokenProb> Sampler::distribution(const float* logits, int32_t n_vocab) const {
  FLEA_CHECK(logits != nullptr && n_vocab > 0, "sampler needs at least one logit");
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  std::vector<TokenProb> c(static_cast<size_t>(n_vocab));
  for (int32_t i = 0; i < n_vocab; ++i) {
    c[i] = TokenProb{i, std::isnan(logits[i]) ? kNegInf : logits[i], 0.0};
  }

  // Repetition penalty, once per distinct recent token (llama.cpp's rule): shrink positive logits,
  // push negative ones further down.
  if (config_.repeat_penalty != 1.0f && !history_.empty()) {
    std::vector<int32_t> seen = history_;
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    for (int32_t id : seen) {
      if (id < 0 || id >= n_vocab) continue;
      float& l = c[id].logit;
      l = l <= 0.0f ? l * config_.repeat_penalty : l / config_.repeat_penalty;
    }
  }

  if (config_.temperature == 0.0f) {
    // Greedy: first maximum in id order = lowest id on ties.
    size_t best = 0;
    for (size_t i = 1; i < c.size(); ++i) {
      if (c[i].logit > c[best].logit) best = i;
    }
    return {TokenProb{c[best].id, c[best].logit, 1.0}};
  }

  const bool top_k_active = config_.top_k > 0 && config_.top_k < n_vocab;
  if (top_k_active) {
    std::partial_sort(c.begin(), c.begin() + config_.top_k, c.end(), higher);
    c.resize(static_cast<size_t>(config_.top_k));
  } else if (config_.top_p < 1.0f) {
    std::sort(c.begin(), c.end(), higher);
  }

  float max_logit = kNegInf;
  for (const TokenProb& t : c) max_logit = std::max(max_logit, t.logit);
  if (max_logit == kNegInf) {
    // Nothing has any mass: fall back to the lowest id among the candidates.
    auto lowest = std::min_element(c.begin(), c.end(), [](const TokenProb& a, const TokenProb& b) { return a.id < b.id; });
    return {TokenProb{lowest->id, lowest->logit, 1.0}};
  }
  const double inv_temp = 1.0 / static_cast<double>(config_.temperature);
  for (TokenProb& t : c) {
    // +inf logits share the whole mass equally rather than turning into inf - inf = NaN.
    t.p = std::isinf(max_logit) ? (t.logit == max_logit ? 1.0 : 0.0)
                                : std::exp((static_cast<double>(t.logit) - max_logit) * inv_temp);
  }
  normalize(&c);

  if (config_.top_p < 1.0f) {
    // c is sorted: keep the shortest prefix whose mass reaches top_p.
    double cum = 0.0;
    size_t keep = c.size();
    for (size_t i = 0; i < c.size(); ++i) {
      cum += c[i].p;
      if (cum >= config_.top_p) {
        keep = i + 1;
        break;
      }
    }
    c.resize(keep);
    normalize(&c);
  }

  if (config_.min_p > 0.0f) {
    double p_max = 0.0;
    for (const TokenProb& t : c) p_max = std::max(p_max, t.p);
    const double threshold = config_.min_p * p_max;
    c.erase(std::remove_if(c.begin(), c.end(), [&](const TokenProb& t) { return t.p < threshold; }), c.end());
    normalize(&c);
  }
  // Tokens with no mass left (exp underflow, -inf) can never be drawn; drop them from the view.
  c.erase(std::remove_if(c.begin(), c.end(), [](const TokenProb& t) { return t.p <= 0.0; }), c.end());
  return c;
}

int32_t Sampler::sample(const float* logits, int32_t n_vocab) {
  std::vector<TokenProb> c = distribution(logits, n_vocab);
  if (config_.temperature == 0.0f) return c[0].id;  // greedy: no draw, the RNG stays put
  // One draw per sampled token, even with a single survivor, so the RNG stream advances the same
  // way whatever the filters left.
  const double target = next_uniform();
  double cum = 0.0;
  for (const TokenProb& t : c) {
    cum += t.p;
    if (target < cum) return t.id;
  }
  return c.back().id;  // rounding left the total a hair under 1
}

}  // namespace flea
