#include "stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace flea::harness {

double percentile_sorted(const std::vector<double>& sorted, double p) {
  const double rank = p * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = rank - static_cast<double>(lo);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

Summary summarize(std::vector<double> values) {
  Summary s;
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  s.n = static_cast<int>(values.size());
  s.min = values.front();
  s.max = values.back();
  s.median = percentile_sorted(values, 0.5);
  s.p95 = percentile_sorted(values, 0.95);
  s.p99 = percentile_sorted(values, 0.99);
  s.mean = std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(values.size());
  std::vector<double> dev;
  dev.reserve(values.size());
  for (double v : values) dev.push_back(std::fabs(v - s.median));
  std::sort(dev.begin(), dev.end());
  s.mad = percentile_sorted(dev, 0.5);
  return s;
}

int min_reps_for_alpha(double alpha) {
  int n = 1;
  // log C(2n, n) via lgamma: exact enough, and no overflow for any alpha > 0.
  while (std::log(2.0) - (std::lgamma(2.0 * n + 1) - 2 * std::lgamma(n + 1.0)) >= std::log(alpha)) ++n;
  return n;
}

int reps_for_gate(double min_effect, double noise_cv) {
  constexpr double kZ995 = 2.5758293035489;  // two-sided alpha = 0.01
  constexpr double kZ80 = 0.8416212335729;   // power 0.8
  const double ratio = noise_cv / min_effect;
  const double n = M_PI / 3.0 * 2.0 * (kZ995 + kZ80) * (kZ995 + kZ80) * ratio * ratio;
  return std::max(min_reps_for_alpha(kGateAlpha), static_cast<int>(std::ceil(n - 1e-9)));
}

}  // namespace flea::harness
