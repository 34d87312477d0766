// Shared by the io_* and residency_* tests: the reference model's layout, and fake "models" (a
// raw file of deterministic bytes plus a hand-built tensor table) for exact planner arithmetic and
// for files too big to keep in the reference set.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "model/weights.h"
#include "test_util.h"

namespace flea::test {

struct TestModel {
  gguf::File file;
  ModelLayout layout;  // points into file.tensors: never copy a TestModel
};

inline std::string reference_model_path() { return reference_dir() + "/pub-Q4_K_M.gguf"; }

inline std::unique_ptr<TestModel> open_reference_model(const std::string& path = reference_model_path()) {
  auto m = std::make_unique<TestModel>();
  StatusOr<gguf::File> f = gguf::read_file(path);
  EXPECT_TRUE(f.ok()) << f.status().to_string();
  if (!f.ok()) return nullptr;
  m->file = std::move(*f);
  StatusOr<int64_t> n_layer = m->file.get_int("llama.block_count");
  EXPECT_TRUE(n_layer.ok());
  StatusOr<ModelLayout> layout = model_layout(m->file, static_cast<int>(*n_layer));
  EXPECT_TRUE(layout.ok()) << layout.status().to_string();
  if (!layout.ok()) return nullptr;
  m->layout = std::move(*layout);
  return m;
}

// Deterministic byte at file offset `o` (so any read can be checked without a reference copy).
inline uint8_t fake_byte(uint64_t o) { return static_cast<uint8_t>((o * 2654435761u) >> 13); }

// A file laid out like llama.cpp writes LLaMA GGUFs: a 4096-byte "header", then output,
// output_norm, token_embd, then per layer attn_k attn_norm attn_output attn_q attn_v ffn_down
// ffn_gate ffn_norm ffn_up, each at a 32-byte aligned offset. `matrix_bytes` is the size of each
// of a layer's seven matrices, `norm_bytes` of each norm. With `write` false only the table is
// built (planner tests) and file_size is still exact.
inline std::unique_ptr<TestModel> make_fake_model(const std::string& path, int n_layer, uint64_t matrix_bytes,
                                                  uint64_t norm_bytes, uint64_t embd_bytes, uint64_t output_bytes,
                                                  bool write = true) {
  auto m = std::make_unique<TestModel>();
  m->file.path = path;
  m->file.data_offset = 4096;
  uint64_t off = m->file.data_offset;
  auto add = [&](const std::string& name, uint64_t n) {
    gguf::TensorInfo t;
    t.name = name;
    t.type = GgmlType::F32;
    t.n_dims = 1;
    t.ne = {static_cast<int64_t>(n / 4), 1, 1, 1};
    t.offset = off - m->file.data_offset;
    t.file_offset = off;
    t.n_bytes = n;
    m->file.tensor_index[name] = m->file.tensors.size();
    m->file.tensors.push_back(t);
    off = (off + n + 31) / 32 * 32;
  };
  add("output.weight", output_bytes);
  add("output_norm.weight", norm_bytes);
  add("token_embd.weight", embd_bytes);
  const char* kOrder[] = {"attn_k", "attn_norm", "attn_output", "attn_q", "attn_v", "ffn_down", "ffn_gate", "ffn_norm", "ffn_up"};
  for (int il = 0; il < n_layer; ++il)
    for (const char* s : kOrder) {
      const bool norm = std::string(s).find("norm") != std::string::npos;
      add("blk." + std::to_string(il) + "." + s + ".weight", norm ? norm_bytes : matrix_bytes);
    }
  m->file.file_size = off;
  auto find = [&](const std::string& n) { return &m->file.tensors[m->file.tensor_index.at(n)]; };
  m->layout.globals = {find("token_embd.weight"), find("output_norm.weight"), find("output.weight"), nullptr};
  m->layout.layers.resize(n_layer);
  for (int il = 0; il < n_layer; ++il)
    for (int t = 0; t < kLayerTensorCount; ++t)
      if (m->file.tensor_index.count(layer_tensor_gguf_name(il, static_cast<LayerTensor>(t))))  // dense, no biases
        m->layout.layers[il][t] = find(layer_tensor_gguf_name(il, static_cast<LayerTensor>(t)));
  if (write) {
    FILE* f = std::fopen(path.c_str(), "wb");
    EXPECT_NE(f, nullptr);
    std::vector<uint8_t> chunk(1 << 20);
    for (uint64_t p = 0; p < m->file.file_size; p += chunk.size()) {
      const uint64_t n = std::min<uint64_t>(chunk.size(), m->file.file_size - p);
      for (uint64_t i = 0; i < n; ++i) chunk[i] = fake_byte(p + i);
      std::fwrite(chunk.data(), 1, n, f);
    }
    std::fclose(f);
  }
  return m;
}

}  // namespace flea::test
