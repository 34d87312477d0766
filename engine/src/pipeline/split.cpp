#include "pipeline/split.h"

#include <cstdio>

namespace flea::pipeline {

StatusOr<std::vector<LayerSlice>> split_layers(const std::vector<uint64_t>& layer_bytes,
                                               const std::vector<uint64_t>& budgets) {
  const int n_layer = static_cast<int>(layer_bytes.size());
  const int n_rank = static_cast<int>(budgets.size());
  if (n_rank < 1) return invalid_argument("pipeline: no ranks");
  if (n_rank > n_layer)
    return invalid_argument("pipeline: " + std::to_string(n_rank) + " ranks but the model has only " + std::to_string(n_layer) +
                            " layers (each rank needs at least one)");
  bool proportional = true;
  long double budget_total = 0;
  for (uint64_t b : budgets) {
    proportional &= b > 0;
    budget_total += static_cast<long double>(b);
  }
  long double bytes_total = 0;
  for (uint64_t b : layer_bytes) bytes_total += static_cast<long double>(b);

  std::vector<LayerSlice> split(static_cast<size_t>(n_rank));
  int il = 0;
  long double done = 0, share_end = 0;
  for (int r = 0; r < n_rank; ++r) {
    LayerSlice& s = split[static_cast<size_t>(r)];
    s.begin = il;
    s.embed = r == 0;
    s.head = r == n_rank - 1;
    share_end += bytes_total * (proportional ? static_cast<long double>(budgets[static_cast<size_t>(r)]) / budget_total
                                             : 1.0L / n_rank);
    const int must_leave = n_rank - 1 - r;  // one layer for each later rank
    if (r == n_rank - 1) {
      il = n_layer;
    } else {
      do {
        done += static_cast<long double>(layer_bytes[static_cast<size_t>(il)]);
        ++il;
      } while (il < n_layer - must_leave && done < share_end);
      // Stop before the layer that crosses the share when that lands closer to it.
      const long double last = static_cast<long double>(layer_bytes[static_cast<size_t>(il - 1)]);
      if (il - 1 > s.begin && done - share_end > share_end - (done - last)) {
        --il;
        done -= last;
      }
    }
    s.end = il;
  }
  return split;
}

std::string describe_split(const std::vector<LayerSlice>& split, const std::vector<uint64_t>& layer_bytes,
                           const std::vector<uint64_t>& budgets) {
  std::string s;
  for (size_t r = 0; r < split.size(); ++r) {
    const LayerSlice& sl = split[r];
    uint64_t bytes = 0;
    for (int il = sl.begin; il < sl.end; ++il) bytes += layer_bytes[static_cast<size_t>(il)];
    char line[256];
    std::snprintf(line, sizeof(line), "  rank %zu: layers [%d, %d)%s%s, %.2f MiB of layers, budget %s\n", r, sl.begin, sl.end,
                  sl.embed ? " + embedding" : "", sl.head ? " + output head" : "", static_cast<double>(bytes) / (1 << 20),
                  budgets[r] > 0 ? (std::to_string(budgets[r] >> 20) + " MiB").c_str() : "unlimited");
    s += line;
  }
  return s;
}

}  // namespace flea::pipeline
