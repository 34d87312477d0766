// Helpers shared by the quant test suites (quant_test, quant_q32_test, quant_lowk_test): random
// inputs, round trips through a type's table entry, the SIMD levels this CPU has, and the tensors of
// llama.cpp-written reference files.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "quant/quant.h"

namespace flea::quant {

inline std::vector<float> gaussian(int64_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& f : v) f = dist(rng);
  return v;
}

// What the per-row dot path computes for an (n_tokens, cols) batch against `rows` weight rows of
// type t: each token's activations quantized once, then this CPU's vec_dot per row. out: (n_tokens, rows).
inline std::vector<float> per_row_dots(GgmlType t, int64_t cols, int64_t rows, const uint8_t* w,
                                       const std::vector<float>& x, int64_t n_tokens) {
  const QuantOps* o = ops(t);
  const size_t wrow = row_bytes(type_info(t), cols);
  std::vector<uint8_t> a(activation_row_bytes(o->vec_dot_type, cols));
  std::vector<float> out(static_cast<size_t>(n_tokens * rows));
  for (int64_t i = 0; i < n_tokens; ++i) {
    quantize_activation(o->vec_dot_type, x.data() + i * cols, a.data(), cols);
    for (int64_t r = 0; r < rows; ++r) out[static_cast<size_t>(i * rows + r)] = o->vec_dot(cols, w + r * wrow, a.data());
  }
  return out;
}

inline std::vector<uint8_t> quantize(GgmlType t, const std::vector<float>& x) {
  std::vector<uint8_t> q(row_bytes(type_info(t), static_cast<int64_t>(x.size())));
  ops(t)->quantize(x.data(), q.data(), static_cast<int64_t>(x.size()));
  return q;
}

inline std::vector<float> dequantize(GgmlType t, const void* q, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  ops(t)->dequantize(q, out.data(), n);
  return out;
}

inline double rel_rmse(const std::vector<float>& got, const std::vector<float>& want) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    err += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
    ref += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(err / ref);
}

// The SIMD levels this CPU runs ("avx2", "avx512"), and the same with "scalar" first.
inline std::vector<const char*> simd_levels() {
  std::vector<const char*> levels;
  for (const char* l : {"avx2", "avx512"}) {
    if (vec_dot_for_level(GgmlType::Q8_0, l) != nullptr) levels.push_back(l);
  }
  return levels;
}
inline std::vector<const char*> available_levels() {
  std::vector<const char*> levels = {"scalar"};
  for (const char* l : simd_levels()) levels.push_back(l);
  return levels;
}

// At each of `levels` that has a 4-token kernel for t, vec_dot_x4 over the kVecDotTokens activation
// rows of `acts` (`stride` bytes apart) equals vec_dot on each row, bit for bit. Returns how many
// levels had one; leaves the best level selected. `what` goes into failure messages.
inline int expect_x4_equals_single(GgmlType t, int64_t n, const uint8_t* w, const uint8_t* acts, size_t stride,
                                   const std::vector<const char*>& levels, const std::string& what) {
  int levels_with_x4 = 0;
  for (const char* level : levels) {
    force_simd_level(level);
    if (ops(t)->vec_dot_x4 == nullptr) continue;
    ++levels_with_x4;
    float got[kVecDotTokens];
    ops(t)->vec_dot_x4(n, w, acts, stride, got);
    for (int k = 0; k < kVecDotTokens; ++k) {
      EXPECT_EQ(got[k], ops(t)->vec_dot(n, w, acts + k * stride))
          << type_info(t).name << " " << level << " " << what << " token " << k;
    }
  }
  force_simd_level(best_simd_level());
  return levels_with_x4;
}

// One tensor of a reference model file, as its manifest lists it.
struct RefTensor {
  std::string name;
  GgmlType type;
  int64_t n;
  int64_t file_offset;
  int64_t n_bytes;
};

// model file -> its tensors (types this build knows), from a reference manifest.json.
inline std::map<std::string, std::vector<RefTensor>> load_manifest(const std::string& path) {
  std::ifstream f(path);
  const nlohmann::json m = nlohmann::json::parse(f);
  std::map<std::string, std::vector<RefTensor>> out;
  for (const auto& c : m.at("cases")) {
    std::vector<RefTensor>& v = out[c.at("model").get<std::string>()];
    for (const auto& t : c.at("tensors")) {
      const TypeInfo* info = type_info_by_name(t.at("type").get<std::string>());
      if (info == nullptr) continue;
      int64_t n = 1;
      for (const auto& d : t.at("shape")) n *= d.get<int64_t>();
      v.push_back({t.at("name"), info->type, n, t.at("file_offset"), t.at("n_bytes")});
    }
  }
  return out;
}

// A tensor of `file` (the whole model's bytes), dequantized.
inline std::vector<float> read_tensor(const std::vector<uint8_t>& file, const RefTensor& t) {
  EXPECT_LE(static_cast<size_t>(t.file_offset + t.n_bytes), file.size());
  EXPECT_EQ(static_cast<size_t>(t.n_bytes), row_bytes(type_info(t.type), t.n)) << t.name;
  return dequantize(t.type, file.data() + t.file_offset, t.n);
}

}  // namespace flea::quant
