// Which contiguous layers each pipeline rank owns, from the layers' sizes and each rank's budget.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "flea/status.h"
#include "model/weights.h"

namespace flea::pipeline {

// Rank r gets a contiguous run of layers whose bytes are, as nearly as whole layers allow, the
// share budget_r / sum(budgets) of all the layers' bytes; every budget 0 (or any 0: "unlimited"
// next to a number gives no proportion) means equal shares. Each rank gets at least one layer
// (more ranks than layers is an error); rank 0 also embeds, the last rank runs the output head.
// Boundaries fall where the running total of bytes first reaches each rank's cumulative share.
StatusOr<std::vector<LayerSlice>> split_layers(const std::vector<uint64_t>& layer_bytes,
                                               const std::vector<uint64_t>& budgets);

// "rank 0: layers [0, 8) + embedding, 123.4 MiB" per line.
std::string describe_split(const std::vector<LayerSlice>& split, const std::vector<uint64_t>& layer_bytes,
                           const std::vector<uint64_t>& budgets);

}  // namespace flea::pipeline
