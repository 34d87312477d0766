// Summary statistics of raw samples: median, p95, p99 (linear interpolation between order
// statistics, numpy's default), min, max, MAD (median absolute deviation from the median, unscaled).
#pragma once

#include <vector>

namespace flea::harness {

struct Summary {
  int n = 0;
  double median = 0, p95 = 0, p99 = 0, min = 0, max = 0, mad = 0, mean = 0;
};

// p in [0, 1]; sorted must be ascending and non-empty.
double percentile_sorted(const std::vector<double>& sorted, double p);
// Empty input → n == 0 (callers write null, never 0).
Summary summarize(std::vector<double> values);

// The perf gate (report/gate.py) at its default alpha: two-sided Mann-Whitney U, p < 0.01.
inline constexpr double kGateAlpha = 0.01;

// Smallest n per side (both sides n) for which the exact two-sided U test can give p < alpha at all:
// its smallest p is 2 / C(2n, n); 5 for alpha = 0.01.
int min_reps_for_alpha(double alpha);

// Repetitions per point the gate needs to flag a change of the median by min_effect (relative) when
// one timing sample varies by noise_cv (coefficient of variation), at kGateAlpha with 80% power:
//   max(min_reps_for_alpha(kGateAlpha),
//       ceil(pi/3 * 2 * (z_0.995 + z_0.80)^2 * (noise_cv / min_effect)^2))
// The second term is the two-sample normal sample size; pi/3 because the U test needs that many
// more samples than the t test on normal data (asymptotic relative efficiency 3/pi). The same n
// keeps the gate's 90% interval within +-min_effect on an unchanged point, so it can say PASS.
int reps_for_gate(double min_effect, double noise_cv);

}  // namespace flea::harness
