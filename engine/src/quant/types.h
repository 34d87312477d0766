// The ggml tensor types a GGUF file can name, with their block geometry. The numeric ids are
// the on-disk values of the GGUF tensor-info `type` field and must never change.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace flea {

enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ4_NL = 20, IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, BF16 = 30,
};

struct TypeInfo {
  GgmlType type;
  const char* name;
  int64_t block_size;     // elements per block
  size_t block_bytes;     // bytes per block
  bool compute_supported; // the engine can dequantize / dot this type
};

// nullptr when `id` is not a type this build knows the geometry of.
const TypeInfo* type_info(uint32_t id);
const TypeInfo& type_info(GgmlType type);
// Case-sensitive lookup by name ("Q4_K", "F16"); nullptr when unknown.
const TypeInfo* type_info_by_name(const std::string& name);

// Bytes of a row of `n` elements; n must be a multiple of the block size.
inline size_t row_bytes(const TypeInfo& t, int64_t n) {
  return static_cast<size_t>(n / t.block_size) * t.block_bytes;
}

}  // namespace flea
