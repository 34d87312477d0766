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

}  // namespace flea::harness
