// Token sampling from one row of logits: repetition penalty -> top-k -> softmax with temperature ->
// top-p -> min-p -> seeded draw. Temperature 0 is greedy (argmax, lowest id on ties). The draw maps
// std::mt19937_64 output to [0, 1) itself, so the same seed gives the same tokens on every platform.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "flea/status.h"

namespace flea {

struct SamplerConfig {
  float temperature = 0.8f;     // 0 = greedy; must be finite and >= 0
  int32_t top_k = 40;           // keep the k highest logits; 0 = off
  float top_p = 1.0f;           // nucleus mass in (0, 1]; 1 = off
  float min_p = 0.0f;           // keep p >= min_p * p_max, in [0, 1]; 0 = off
  float repeat_penalty = 1.0f;  // > 0; 1 = off
  int32_t repeat_last_n = 64;   // how many accepted tokens the penalty looks back over; 0 = off
  uint64_t seed = 0;
};

// One surviving token of the filtered distribution; p sums to 1 over the survivors.
struct TokenProb {
  int32_t id;
  float logit;  // after the repetition penalty
  double p;
};

class Sampler {
 public:
  static StatusOr<Sampler> create(const SamplerConfig& config);
  static Status validate(const SamplerConfig& config);

  // Draws a token from logits[0, n_vocab). Does not record it: call accept() with the token that is
  // actually used (and with the prompt's tokens, so the penalty sees them). A NaN logit is treated
  // as -inf and never drawn unless every logit is NaN or -inf (then the lowest id wins).
  int32_t sample(const float* logits, int32_t n_vocab);
  int32_t sample(const std::vector<float>& logits) {
    return sample(logits.data(), static_cast<int32_t>(logits.size()));
  }

  // The distribution sample() draws from, ordered as the draw walks it (by probability, highest
  // first, ties by lowest id, when any filter needed the order; by id otherwise). Greedy returns the
  // argmax with p = 1. Does not touch the RNG.
  std::vector<TokenProb> distribution(const float* logits, int32_t n_vocab) const;

  void accept(int32_t token);
  // Clears the penalty history and re-seeds the RNG.
  void reset();
  const SamplerConfig& config() const { return config_; }
  const std::vector<int32_t>& history() const { return history_; }

 private:
  explicit Sampler(const SamplerConfig& config) : config_(config), rng_(config.seed) {}
  double next_uniform();  // [0, 1), 53 random bits

  SamplerConfig config_;
  std::mt19937_64 rng_;
  std::vector<int32_t> history_;  // the last repeat_last_n accepted tokens, oldest first
};

}  // namespace flea
