#include "compute/cpu/matmul.h"

#include <algorithm>
#include <string>
#include <vector>

#include "compute/cpu/amx.h"
#include "flea/status.h"
#include "quant/quant.h"

namespace flea::cpu {
namespace {

// Weight rows per tile: 16 rows of a 4096-wide Q4_K matrix are 37 KB, so a tile stays in L2
// while every token of the batch streams past it, and one token's activations (4.6 KB as Q8_K)
// stay in L1 across the tile.
constexpr int64_t kRowTile = 16;

void check_view(const WeightView& w) {
  const TypeInfo& info = type_info(w.type);
  FLEA_CHECK(w.cols > 0 && w.rows > 0, "empty weight view");
  FLEA_CHECK(w.cols % info.block_size == 0,
             std::string("cols ") + std::to_string(w.cols) + " not a multiple of the " + info.name + " block");
  FLEA_CHECK(w.data != nullptr, "weight view without data");
}

}  // namespace

void matmul(const WeightView& w, const float* x, int64_t n_tokens, float* out, ThreadPool* pool) {
  check_view(w);
  const quant::QuantOps* ops = quant::ops(w.type);
  FLEA_CHECK(ops != nullptr, std::string("no CPU kernel for ") + type_info(w.type).name);
  if (n_tokens <= 0) return;
  const int64_t cols = w.cols, rows = w.rows;
  const size_t w_row_bytes = row_bytes(type_info(w.type), cols);
  const GgmlType act_type = ops->vec_dot_type;

  // (n_tokens, act_row_bytes) activations in the dot kernel's format; F32 needs no conversion.
  const size_t act_row_bytes = quant::activation_row_bytes(act_type, cols);
  const uint8_t* act = reinterpret_cast<const uint8_t*>(x);
  // Per calling thread so concurrent matmuls on different pools do not share it. Lambdas below
  // must use `buf`, not the thread_local name, which would resolve to each worker's own copy.
  thread_local std::vector<uint8_t> act_buf;
  if (act_type != GgmlType::F32) {
    act_buf.resize(act_row_bytes * static_cast<size_t>(n_tokens));
    uint8_t* buf = act_buf.data();
    auto quantize_tokens = [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        quant::quantize_activation(act_type, x + t * cols, buf + t * act_row_bytes, cols);
      }
    };
    if (pool != nullptr && n_tokens > 1) {
      pool->parallel_for(n_tokens, quantize_tokens);
    } else {
      quantize_tokens(0, n_tokens);
    }
    act = buf;
  }
  if (amx::enabled() && amx::supports(w.type) && n_tokens >= amx::min_tokens(w.type)) {
    amx::matmul(w, act, act_row_bytes, n_tokens, out, pool);
    return;
  }

  const quant::VecDotFn dot = ops->vec_dot;
  const quant::VecDotX4Fn dot_x4 = ops->vec_dot_x4;
  constexpr int64_t kGroup = quant::kVecDotTokens;
  auto run_tiles = [&](int64_t tile0, int64_t tile1) {
    for (int64_t tile = tile0; tile < tile1; ++tile) {
      const int64_t r0 = tile * kRowTile, r1 = std::min(rows, r0 + kRowTile);
      int64_t t = 0;
      if (dot_x4 != nullptr) {
        // Groups of tokens share each weight block's load and unpacking.
        for (; t + kGroup <= n_tokens; t += kGroup) {
          const uint8_t* a = act + t * act_row_bytes;
          for (int64_t r = r0; r < r1; ++r) {
            float res[kGroup];
            dot_x4(cols, w.data + r * w_row_bytes, a, act_row_bytes, res);
            for (int64_t g = 0; g < kGroup; ++g) out[(t + g) * rows + r] = res[g];
          }
        }
      }
      for (; t < n_tokens; ++t) {
        const uint8_t* a = act + t * act_row_bytes;
        float* o = out + t * rows;
        for (int64_t r = r0; r < r1; ++r) o[r] = dot(cols, w.data + r * w_row_bytes, a);
      }
    }
  };
  const int64_t n_tiles = (rows + kRowTile - 1) / kRowTile;
  if (pool != nullptr) {
    pool->parallel_for(n_tiles, run_tiles);
  } else {
    run_tiles(0, n_tiles);
  }
}

void dequantize_row(const WeightView& w, int64_t r, float* dst) {
  check_view(w);
  FLEA_CHECK(r >= 0 && r < w.rows, "row " + std::to_string(r) + " outside [0, " + std::to_string(w.rows) + ")");
  const quant::QuantOps* ops = quant::ops(w.type);
  FLEA_CHECK(ops != nullptr, std::string("no CPU kernel for ") + type_info(w.type).name);
  ops->dequantize(w.data + r * row_bytes(type_info(w.type), w.cols), dst, w.cols);
}

}  // namespace flea::cpu
