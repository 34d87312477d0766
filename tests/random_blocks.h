// Random quantized weight rows for kernel tests: every byte random (all level, scale and high-bit
// patterns occur), then each fp16 scale field overwritten with a finite value of either sign in
// [2^-8, 2^-4), so dots stay in range and no NaN or Inf appears. Needs no quantizer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <random>
#include <vector>

#include "quant/fp16.h"
#include "quant/quant.h"
#include "quant/types.h"

namespace flea {

// gtest prints a GgmlType parameter by name (test lists and ctest names read "Q3_K").
inline void PrintTo(GgmlType t, std::ostream* os) { *os << type_info(t).name; }

namespace test {

// Byte offsets of the fp16 fields of one block; empty for types this helper does not know.
inline std::vector<size_t> fp16_field_offsets(GgmlType type) {
  using namespace quant;
  switch (type) {
    case GgmlType::Q4_0: return {offsetof(BlockQ4_0, d)};
    case GgmlType::Q4_1: return {offsetof(BlockQ4_1, d), offsetof(BlockQ4_1, m)};
    case GgmlType::Q5_0: return {offsetof(BlockQ5_0, d)};
    case GgmlType::Q5_1: return {offsetof(BlockQ5_1, d), offsetof(BlockQ5_1, m)};
    case GgmlType::Q8_0: return {offsetof(BlockQ8_0, d)};
    case GgmlType::IQ4_NL: return {offsetof(BlockIq4Nl, d)};
    case GgmlType::Q2_K: return {offsetof(BlockQ2K, d), offsetof(BlockQ2K, dmin)};
    case GgmlType::Q3_K: return {offsetof(BlockQ3K, d)};
    case GgmlType::Q4_K: return {offsetof(BlockQ4K, d), offsetof(BlockQ4K, dmin)};
    case GgmlType::Q5_K: return {offsetof(BlockQ5K, d), offsetof(BlockQ5K, dmin)};
    case GgmlType::Q6_K: return {offsetof(BlockQ6K, d)};
    case GgmlType::IQ4_XS: return {offsetof(BlockIq4Xs, d)};
    default: return {};
  }
}

// `rows` rows of `cols` elements of a quantized type (cols a multiple of its block size).
inline std::vector<uint8_t> random_blocks(GgmlType type, int64_t cols, int64_t rows, std::mt19937& rng) {
  const TypeInfo& ti = type_info(type);
  const size_t n_blocks = static_cast<size_t>(cols / ti.block_size * rows);
  std::vector<uint8_t> w(n_blocks * ti.block_bytes);
  std::uniform_int_distribution<int> byte(0, 255);
  for (uint8_t& b : w) b = static_cast<uint8_t>(byte(rng));
  std::uniform_real_distribution<float> mant(1.f, 2.f);
  std::uniform_int_distribution<int> expo(5, 8), sign(0, 1);
  const std::vector<size_t> fields = fp16_field_offsets(type);
  for (size_t i = 0; i < n_blocks; ++i) {
    for (size_t off : fields) {
      const float v = (sign(rng) ? -1.f : 1.f) * mant(rng) / static_cast<float>(1 << expo(rng));
      const uint16_t h = fp32_to_fp16(v);
      w[i * ti.block_bytes + off] = static_cast<uint8_t>(h & 0xff);
      w[i * ti.block_bytes + off + 1] = static_cast<uint8_t>(h >> 8);
    }
  }
  return w;
}

}  // namespace test
}  // namespace flea
