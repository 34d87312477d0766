// GGUF reader: one test per validation rule, each on a small crafted file, plus the reference models.
#include <gtest/gtest.h>

#include <cstring>
#include <optional>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "model/llama.h"
#include "gguf_bytes.h"
#include "test_util.h"

namespace flea::gguf {
namespace {

using test::Bytes;

struct TensorSpec {
  std::string name;
  std::vector<int64_t> ne;
  uint32_t type = 0;  // F32
  uint64_t offset = 0;
};

// A whole file: header, kvs (pre-encoded), tensor infos, padding, then `data_bytes` zero bytes.
struct FileSpec {
  uint32_t version = 3;
  std::vector<Bytes> kvs;
  std::vector<TensorSpec> tensors;
  uint64_t alignment = 32;
  uint64_t data_bytes = 0;
  std::optional<uint64_t> tensor_count_override;
  std::optional<uint64_t> kv_count_override;

  std::vector<uint8_t> build() const {
    Bytes out;
    out.put<uint32_t>(kMagic).put<uint32_t>(version);
    out.put<uint64_t>(tensor_count_override.value_or(tensors.size()));
    out.put<uint64_t>(kv_count_override.value_or(kvs.size()));
    for (const auto& kv : kvs) out.raw(kv);
    for (const auto& t : tensors) {
      out.str(t.name).put<uint32_t>(static_cast<uint32_t>(t.ne.size()));
      for (int64_t n : t.ne) out.put<int64_t>(n);
      out.put<uint32_t>(t.type).put<uint64_t>(t.offset);
    }
    while (out.b.size() % alignment) out.b.push_back(0);
    out.b.resize(out.b.size() + data_bytes, 0);
    return out.b;
  }
};

Bytes kv_u32(const std::string& key, uint32_t v) { Bytes b; b.str(key).put<uint32_t>(4).put<uint32_t>(v); return b; }
Bytes kv_f32(const std::string& key, float v) { Bytes b; b.str(key).put<uint32_t>(6).put<float>(v); return b; }
Bytes kv_str(const std::string& key, const std::string& v) { Bytes b; b.str(key).put<uint32_t>(8).str(v); return b; }

StatusOr<File> parse(const std::vector<uint8_t>& bytes) { return read_memory(bytes.data(), bytes.size(), "crafted.gguf"); }

// Asserts the parse fails and the one-line message names `field` and the byte offset.
void expect_error(const std::vector<uint8_t>& bytes, const std::string& field, const std::string& fragment = "") {
  auto r = parse(bytes);
  ASSERT_FALSE(r.ok()) << "accepted a file that breaks the rule for " << field;
  const std::string& m = r.status().message();
  EXPECT_NE(m.find("'" + field), std::string::npos) << m;
  EXPECT_NE(m.find("byte offset"), std::string::npos) << m;
  EXPECT_NE(m.find("expected"), std::string::npos) << m;
  EXPECT_EQ(m.find('\n'), std::string::npos) << "error must be one line: " << m;
  if (!fragment.empty()) {
    EXPECT_NE(m.find(fragment), std::string::npos) << m;
  }
}

FileSpec one_tensor_file() {
  FileSpec s;
  s.kvs.push_back(kv_str("general.architecture", "test"));
  s.tensors.push_back({"a", {32, 2}, 0, 0});
  s.data_bytes = 32 * 2 * 4;
  return s;
}

TEST(GgufReader, ParsesValidV3AndV2) {
  for (uint32_t version : {2u, 3u}) {
    FileSpec s = one_tensor_file();
    s.version = version;
    auto r = parse(s.build());
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    EXPECT_EQ(r->version, version);
    ASSERT_EQ(r->tensors.size(), 1u);
    EXPECT_EQ(r->tensors[0].n_bytes, 256u);
    EXPECT_EQ(r->tensors[0].file_offset, r->data_offset);
    EXPECT_EQ(r->data_offset % 32, 0u);
  }
}

TEST(GgufReader, EveryValueTypeIncludingArrays) {
  FileSpec s;
  Bytes b;
  s.kvs.push_back(Bytes(b).str("u8").put<uint32_t>(0).put<uint8_t>(200));
  s.kvs.push_back(Bytes().str("i8").put<uint32_t>(1).put<int8_t>(-5));
  s.kvs.push_back(Bytes().str("u16").put<uint32_t>(2).put<uint16_t>(60000));
  s.kvs.push_back(Bytes().str("i16").put<uint32_t>(3).put<int16_t>(-300));
  s.kvs.push_back(kv_u32("u32", 4000000000u));
  s.kvs.push_back(Bytes().str("i32").put<uint32_t>(5).put<int32_t>(-70000));
  s.kvs.push_back(kv_f32("f32", 1.5f));
  s.kvs.push_back(Bytes().str("bool").put<uint32_t>(7).put<uint8_t>(1));
  s.kvs.push_back(kv_str("str", "hello"));
  s.kvs.push_back(Bytes().str("u64").put<uint32_t>(10).put<uint64_t>(1ull << 40));
  s.kvs.push_back(Bytes().str("i64").put<uint32_t>(11).put<int64_t>(-(1ll << 40)));
  s.kvs.push_back(Bytes().str("f64").put<uint32_t>(12).put<double>(2.25));
  s.kvs.push_back(Bytes().str("arr_i32").put<uint32_t>(9).put<uint32_t>(5).put<uint64_t>(3)
                      .put<int32_t>(1).put<int32_t>(-2).put<int32_t>(3));
  s.kvs.push_back(Bytes().str("arr_f32").put<uint32_t>(9).put<uint32_t>(6).put<uint64_t>(2)
                      .put<float>(0.5f).put<float>(-1.0f));
  s.kvs.push_back(Bytes().str("arr_str").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(2).str("x").str("yz"));
  auto r = parse(s.build());
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  int64_t v;
  ASSERT_TRUE(r->find("u8")->as_int(&v)); EXPECT_EQ(v, 200);
  ASSERT_TRUE(r->find("i8")->as_int(&v)); EXPECT_EQ(v, -5);
  ASSERT_TRUE(r->find("u16")->as_int(&v)); EXPECT_EQ(v, 60000);
  ASSERT_TRUE(r->find("i16")->as_int(&v)); EXPECT_EQ(v, -300);
  ASSERT_TRUE(r->find("u32")->as_int(&v)); EXPECT_EQ(v, 4000000000ll);
  ASSERT_TRUE(r->find("i32")->as_int(&v)); EXPECT_EQ(v, -70000);
  EXPECT_DOUBLE_EQ(r->find("f32")->f, 1.5);
  EXPECT_EQ(r->find("bool")->i, 1);
  EXPECT_EQ(*r->get_string("str"), "hello");
  EXPECT_EQ(r->find("u64")->u, 1ull << 40);
  ASSERT_TRUE(r->find("i64")->as_int(&v)); EXPECT_EQ(v, -(1ll << 40));
  EXPECT_DOUBLE_EQ(*r->get_float("f64"), 2.25);
  EXPECT_EQ(r->find("arr_i32")->arr_int, (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(r->find("arr_f32")->arr_float, (std::vector<double>{0.5, -1.0}));
  EXPECT_EQ(r->find("arr_str")->arr_str, (std::vector<std::string>{"x", "yz"}));
  EXPECT_FALSE(r->get_int("str").ok());
  EXPECT_EQ(r->get_int("missing").status().code(), StatusCode::kNotFound);
}

TEST(GgufReader, RejectsBadMagic) {
  auto b = one_tensor_file().build();
  std::memcpy(b.data(), "GGML", 4);
  expect_error(b, "magic", "\"GGML\"");
  expect_error(std::vector<uint8_t>{'G', 'G'}, "magic");
}

TEST(GgufReader, RejectsUnsupportedVersion) {
  FileSpec s = one_tensor_file();
  s.version = 1;
  expect_error(s.build(), "version", "2 or 3");
  s.version = 4;
  expect_error(s.build(), "version", "2 or 3");
}

TEST(GgufReader, RejectsByteSwappedVersion) {
  FileSpec s = one_tensor_file();
  s.version = 0x03000000;
  expect_error(s.build(), "version", "byte-swapped");
}

TEST(GgufReader, RejectsTensorCountThatCannotFit) {
  FileSpec s = one_tensor_file();
  s.tensor_count_override = 1ll << 40;
  expect_error(s.build(), "tensor_count");
  s.tensor_count_override = ~uint64_t{1};  // overflows count × size
  expect_error(s.build(), "tensor_count");
}

TEST(GgufReader, RejectsKvCountThatCannotFit) {
  FileSpec s = one_tensor_file();
  s.kv_count_override = 1ll << 50;
  expect_error(s.build(), "metadata_kv_count");
}

TEST(GgufReader, RejectsStringLengthPastFile) {
  FileSpec s;
  s.kvs.push_back(Bytes().str("k").put<uint32_t>(8).put<uint64_t>(1000).put<uint32_t>(0));
  expect_error(s.build(), "k.length", "left in the file");
}

TEST(GgufReader, RejectsStringLengthOverCap) {
  FileSpec s;
  s.kvs.push_back(Bytes().str("k").put<uint32_t>(8).put<uint64_t>(kMaxStringBytes + 1));
  expect_error(s.build(), "k.length", "at most");
  FileSpec key;
  key.kvs.push_back(Bytes().put<uint64_t>(1ull << 62));  // key length itself
  key.data_bytes = 64;
  expect_error(key.build(), "kv[0].key.length");
}

TEST(GgufReader, RejectsArrayPastFile) {
  FileSpec s;
  s.kvs.push_back(Bytes().str("arr").put<uint32_t>(9).put<uint32_t>(4).put<uint64_t>(1ull << 61));
  expect_error(s.build(), "arr.count");
  FileSpec strs;
  strs.kvs.push_back(Bytes().str("arr").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(1ull << 40));
  expect_error(strs.build(), "arr.count");
}

TEST(GgufReader, RejectsNestedArrays) {
  FileSpec s;
  s.kvs.push_back(Bytes().str("arr").put<uint32_t>(9).put<uint32_t>(9).put<uint64_t>(1));
  expect_error(s.build(), "arr.array_type", "nested");
}

TEST(GgufReader, RejectsUnknownValueType) {
  FileSpec s;
  s.kvs.push_back(Bytes().str("k").put<uint32_t>(13).put<uint32_t>(0));
  expect_error(s.build(), "k.type");
  FileSpec a;
  a.kvs.push_back(Bytes().str("arr").put<uint32_t>(9).put<uint32_t>(77).put<uint64_t>(1));
  expect_error(a.build(), "arr.array_type");
}

TEST(GgufReader, RejectsEmptyKey) {
  FileSpec s;
  s.kvs.push_back(kv_u32("", 1));
  expect_error(s.build(), "kv[0].key", "non-empty");
}

TEST(GgufReader, RejectsDuplicateKey) {
  FileSpec s;
  s.kvs.push_back(kv_u32("dup", 1));
  s.kvs.push_back(kv_u32("dup", 2));
  expect_error(s.build(), "kv[1].key", "not already defined");
}

TEST(GgufReader, RejectsBadBool) {
  FileSpec s;
  s.kvs.push_back(Bytes().str("b").put<uint32_t>(7).put<uint8_t>(2));
  expect_error(s.build(), "b", "0 or 1");
}

TEST(GgufReader, RejectsDuplicateTensorName) {
  FileSpec s = one_tensor_file();
  s.tensors.push_back({"a", {32}, 0, 256});
  s.data_bytes += 128;
  expect_error(s.build(), "tensor[1].name", "not already used");
}

TEST(GgufReader, RejectsOverlongTensorName) {
  FileSpec s = one_tensor_file();
  s.tensors[0].name = std::string(64, 'x');
  expect_error(s.build(), "tensor[0].name.length");
  s.tensors[0].name = "";
  expect_error(s.build(), "tensor[0].name", "non-empty");
}

TEST(GgufReader, RejectsAlignmentNotPowerOfTwo) {
  FileSpec s = one_tensor_file();
  s.kvs.push_back(kv_u32("general.alignment", 48));
  expect_error(s.build(), "general.alignment", "power of two");
  FileSpec z = one_tensor_file();
  z.kvs.push_back(kv_u32("general.alignment", 0));
  expect_error(z.build(), "general.alignment");
}

TEST(GgufReader, HonoursCustomAlignment) {
  FileSpec s = one_tensor_file();
  s.kvs.push_back(kv_u32("general.alignment", 64));
  s.alignment = 64;
  auto r = parse(s.build());
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->alignment, 64u);
  EXPECT_EQ(r->data_offset % 64, 0u);
}

TEST(GgufReader, RejectsNDimsOutOfRange) {
  FileSpec s = one_tensor_file();
  s.tensors[0].ne = {};
  expect_error(s.build(), "tensor 'a'.n_dims", "1..4");
  s.tensors[0].ne = {32, 1, 1, 1, 1};
  expect_error(s.build(), "tensor 'a'.n_dims", "1..4");
}

TEST(GgufReader, RejectsNonPositiveDimension) {
  FileSpec s = one_tensor_file();
  s.tensors[0].ne = {32, 0};
  expect_error(s.build(), "tensor 'a'.ne[1]", "> 0");
  s.tensors[0].ne = {32, -4};
  expect_error(s.build(), "tensor 'a'.ne[1]", "> 0");
}

TEST(GgufReader, RejectsElementCountOverflow) {
  FileSpec s = one_tensor_file();
  s.tensors[0].ne = {1ll << 32, 1ll << 32};
  expect_error(s.build(), "tensor 'a'.ne[1]", "int64");
  // Fits in int64 elements but not in bytes for F32 (4 bytes each).
  s.tensors[0].ne = {1ll << 31, 1ll << 31};
  expect_error(s.build(), "tensor 'a'.ne", "64 bits");
}

TEST(GgufReader, RejectsUnknownTensorType) {
  FileSpec s = one_tensor_file();
  s.tensors[0].type = 99;
  expect_error(s.build(), "tensor 'a'.type", "known ggml type");
}

TEST(GgufReader, RejectsRowNotMultipleOfBlockSize) {
  FileSpec s = one_tensor_file();
  s.tensors[0].type = static_cast<uint32_t>(GgmlType::Q4_K);
  s.tensors[0].ne = {100, 2};
  expect_error(s.build(), "tensor 'a'.ne[0]", "multiple of 256");
}

TEST(GgufReader, RejectsUnalignedOffset) {
  FileSpec s = one_tensor_file();
  s.tensors[0].offset = 4;
  expect_error(s.build(), "tensor 'a'.offset", "multiple of the alignment 32");
}

TEST(GgufReader, RejectsOverlappingTensors) {
  FileSpec s = one_tensor_file();
  s.tensors.push_back({"b", {32, 2}, 0, 128});  // a covers [0, 256)
  s.data_bytes = 512;
  expect_error(s.build(), "tensor 'b'.offset", "overlapping tensor 'a'");
}

TEST(GgufReader, RejectsDataPastEndOfFile) {
  FileSpec s = one_tensor_file();
  s.data_bytes = 255;
  expect_error(s.build(), "tensor 'a'.offset", "data section");
  s.data_bytes = 256;
  s.tensors[0].offset = 1ull << 62;
  expect_error(s.build(), "tensor 'a'.offset");
}

TEST(GgufReader, EveryTruncationIsAnErrorNotACrash) {
  FileSpec s = one_tensor_file();
  s.kvs.push_back(Bytes().str("arr").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(2).str("x").str("yz"));
  const auto full = s.build();
  ASSERT_TRUE(parse(full).ok());
  for (size_t n = 0; n < full.size(); ++n) {
    std::vector<uint8_t> cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_FALSE(parse(cut).ok()) << "prefix of " << n << " bytes accepted";
  }
}

TEST(GgufReader, MissingFileIsNotFound) {
  auto r = read_file("/nonexistent/x.gguf");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("/nonexistent/x.gguf"), std::string::npos);
}

// ---- LLaMA hyperparameter validation --------------------------------------------------------

struct LlamaSpec {
  int64_t n_embd = 64, n_ff = 128, n_layer = 2, n_head = 4, n_head_kv = 2, n_vocab = 16;
  bool write_block_count = true;
  int64_t block_count = -1;  // default: n_layer
  int64_t head_count_override = -1;
  std::string wrong_shape_tensor;  // this tensor gets a transposed shape
  std::string arch = "llama";
  std::vector<Bytes> extra_kvs;            // appended to the metadata
  std::vector<std::string> bias_layers;    // "0", "1": layers that get q/k/v biases ("0q": only q)
  std::string extra_tensor;                // one more [n_embd] tensor of this name

  std::vector<uint8_t> build() const {
    FileSpec s;
    s.kvs.push_back(kv_str("general.architecture", arch));
    s.kvs.push_back(kv_u32("llama.embedding_length", static_cast<uint32_t>(n_embd)));
    s.kvs.push_back(kv_u32("llama.feed_forward_length", static_cast<uint32_t>(n_ff)));
    if (write_block_count) {
      s.kvs.push_back(kv_u32("llama.block_count", static_cast<uint32_t>(block_count >= 0 ? block_count : n_layer)));
    }
    s.kvs.push_back(kv_u32("llama.attention.head_count",
                           static_cast<uint32_t>(head_count_override >= 0 ? head_count_override : n_head)));
    s.kvs.push_back(kv_u32("llama.attention.head_count_kv", static_cast<uint32_t>(n_head_kv)));
    s.kvs.push_back(kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f));
    for (const Bytes& k : extra_kvs) s.kvs.push_back(k);
    const int64_t kv = n_embd / n_head * n_head_kv;
    uint64_t off = 0;
    auto add = [&](const std::string& name, std::vector<int64_t> ne) {
      if (name == wrong_shape_tensor && ne.size() == 2) std::swap(ne[0], ne[1]);
      int64_t n = 1;
      for (int64_t d : ne) n *= d;
      s.tensors.push_back({name, ne, 0, off});
      off += static_cast<uint64_t>(n) * 4;
      off = (off + 31) / 32 * 32;
    };
    add("token_embd.weight", {n_embd, n_vocab});
    for (int64_t il = 0; il < n_layer; ++il) {
      const std::string p = "blk." + std::to_string(il) + ".";
      add(p + "attn_norm.weight", {n_embd});
      add(p + "attn_q.weight", {n_embd, n_embd});
      add(p + "attn_k.weight", {n_embd, kv});
      add(p + "attn_v.weight", {n_embd, kv});
      add(p + "attn_output.weight", {n_embd, n_embd});
      add(p + "ffn_norm.weight", {n_embd});
      add(p + "ffn_gate.weight", {n_embd, n_ff});
      add(p + "ffn_up.weight", {n_embd, n_ff});
      add(p + "ffn_down.weight", {n_ff, n_embd});
      for (const std::string& b : bias_layers) {
        if (b[0] - '0' != il) continue;
        add(p + "attn_q.bias", {n_embd});
        if (b.size() == 1) {
          add(p + "attn_k.bias", {kv});
          add(p + "attn_v.bias", {kv});
        }
      }
    }
    if (!extra_tensor.empty()) add(extra_tensor, {n_embd});
    add("output_norm.weight", {n_embd});
    add("output.weight", {n_embd, n_vocab});
    s.data_bytes = off;
    return s.build();
  }
};

StatusOr<LlamaHparams> hparams_of(const LlamaSpec& spec) {
  auto f = parse(spec.build());
  if (!f.ok()) return f.status();
  return llama_hparams(*f);
}

TEST(LlamaHparams, AcceptsConsistentGqaModel) {
  auto hp = hparams_of(LlamaSpec{});
  ASSERT_TRUE(hp.ok()) << hp.status().to_string();
  EXPECT_EQ(hp->n_layer, 2);
  EXPECT_EQ(hp->n_gqa(), 2);
  EXPECT_EQ(hp->n_embd_kv(), 32);
  EXPECT_EQ(hp->n_vocab, 16);
  EXPECT_EQ(hp->n_rot, 16);
  EXPECT_FALSE(hp->tied_embeddings);
}

TEST(LlamaHparams, RejectsMissingHyperparameter) {
  LlamaSpec s;
  s.write_block_count = false;
  auto hp = hparams_of(s);
  ASSERT_FALSE(hp.ok());
  EXPECT_NE(hp.status().message().find("llama.block_count"), std::string::npos) << hp.status().message();
}

TEST(LlamaHparams, RejectsBlockCountDisagreeingWithTensors) {
  LlamaSpec s;
  s.block_count = 3;
  auto hp = hparams_of(s);
  ASSERT_FALSE(hp.ok());
  EXPECT_NE(hp.status().message().find("'llama.block_count' = 3"), std::string::npos) << hp.status().message();
  EXPECT_NE(hp.status().message().find("2 layers found"), std::string::npos) << hp.status().message();
}

TEST(LlamaHparams, RejectsHeadCountsThatDoNotDivide) {
  LlamaSpec s;
  s.head_count_override = 5;  // 64 % 5 != 0
  auto hp = hparams_of(s);
  ASSERT_FALSE(hp.ok());
  EXPECT_NE(hp.status().message().find("head_count' = 5"), std::string::npos) << hp.status().message();
  LlamaSpec kv;
  kv.n_head_kv = 3;  // 4 % 3 != 0
  hp = hparams_of(kv);
  ASSERT_FALSE(hp.ok());
  EXPECT_NE(hp.status().message().find("head_count_kv' = 3"), std::string::npos) << hp.status().message();
}

TEST(LlamaHparams, RejectsTensorShapeDisagreeingWithMetadata) {
  LlamaSpec s;
  s.wrong_shape_tensor = "blk.1.ffn_down.weight";
  auto hp = hparams_of(s);
  ASSERT_FALSE(hp.ok());
  EXPECT_NE(hp.status().message().find("blk.1.ffn_down.weight' shape = [64, 128]"), std::string::npos)
      << hp.status().message();
}

// A file the forward pass would compute wrongly is refused in one line naming what it found.
TEST(LlamaHparams, RefusesVariantsTheForwardPassDoesNotCompute) {
  struct Case {
    const char* what;
    LlamaSpec spec;
    const char* want;
  };
  std::vector<Case> cases;
  {
    LlamaSpec s;
    s.arch = "gemma2";
    cases.push_back({"architecture", s, "general.architecture = \"gemma2\" is not an architecture this engine runs (supported: llama, qwen2, llama4)"});
  }
  {
    LlamaSpec s;
    s.extra_kvs.push_back(kv_str("llama.rope.scaling.type", "yarn"));
    cases.push_back({"yarn", s, "'llama.rope.scaling.type' = \"yarn\" is not supported"});
  }
  {
    LlamaSpec s;
    s.extra_kvs.push_back(kv_u32("llama.attention.key_length", 32));  // head_dim is 64 / 4 = 16
    cases.push_back({"head size", s, "'llama.attention.key_length' = 32 differs from embedding_length / head_count = 16"});
  }
  {
    LlamaSpec s;  // experts announced, dense tensors present
    s.extra_kvs.push_back(kv_u32("llama.expert_count", 8));
    s.extra_kvs.push_back(kv_u32("llama.expert_used_count", 2));
    cases.push_back({"moe keys without expert tensors", s, "tensor 'blk.0.ffn_gate_inp.weight' = missing"});
  }
  {
    LlamaSpec s;
    s.extra_kvs.push_back(kv_u32("llama.expert_count", 8));
    s.extra_kvs.push_back(kv_u32("llama.expert_used_count", 9));
    cases.push_back({"more experts used than exist", s, "'llama.expert_used_count' = 9 (expected 1..8)"});
  }
  {
    LlamaSpec s;
    s.extra_tensor = "blk.1.attn_q_norm.weight";
    cases.push_back({"extra tensor", s, "tensor 'blk.1.attn_q_norm.weight' is not part of a dense llama layer"});
  }
  {
    LlamaSpec s;
    s.bias_layers = {"0q"};
    cases.push_back({"one bias of three", s, "layer 0 q/k/v biases = 1 of 3"});
  }
  {
    LlamaSpec s;
    s.bias_layers = {"0"};
    cases.push_back({"biases in some layers", s, "tensor 'blk.1.attn_q.bias' = missing (expected as in layer 0)"});
  }
  for (const Case& c : cases) {
    auto hp = hparams_of(c.spec);
    ASSERT_FALSE(hp.ok()) << c.what;
    EXPECT_NE(hp.status().message().find(c.want), std::string::npos) << c.what << ": " << hp.status().message();
    EXPECT_EQ(hp.status().message().find('\n'), std::string::npos) << c.what;
  }
  // q/k/v biases in every layer of a llama file are fine (llama.cpp loads them as optional).
  LlamaSpec ok;
  ok.bias_layers = {"0", "1"};
  auto hp = hparams_of(ok);
  ASSERT_TRUE(hp.ok()) << hp.status().to_string();
  EXPECT_TRUE(hp->qkv_bias);
  EXPECT_EQ(hp->rope_type, RopeType::kNorm);
}

// Llama 4's layer pattern and its position rules (../shared/reference/README.md, l4 section).
TEST(LlamaHparams, Llama4LayerPatternChunksAndTemperature) {
  LlamaHparams hp;
  hp.n_layer = 8;
  hp.n_expert = 16;
  hp.moe_every = 2;
  hp.nope_every = 4;
  hp.attn_chunk = 8192;
  for (int64_t il = 0; il < 8; ++il) {
    EXPECT_EQ(hp.is_moe_layer(il), il % 2 == 1) << il;
    EXPECT_EQ(hp.uses_rope(il), il % 4 != 3) << il;
  }
  // Chunked (rope) layers see their own chunk only; the NoPE layers everything.
  EXPECT_EQ(hp.first_visible(0, 0), 0);
  EXPECT_EQ(hp.first_visible(0, 8191), 0);
  EXPECT_EQ(hp.first_visible(0, 8192), 8192);
  EXPECT_EQ(hp.first_visible(2, 20000), 16384);
  EXPECT_EQ(hp.first_visible(3, 20000), 0);
  // Temperature 1 + 0.1 ln(floor((p + 1) / 8192) + 1) on the NoPE layers only.
  EXPECT_FLOAT_EQ(hp.attn_temperature(3, 0), 1.0f);
  EXPECT_FLOAT_EQ(hp.attn_temperature(3, 8190), 1.0f);
  EXPECT_FLOAT_EQ(hp.attn_temperature(3, 8191), 1.0f + 0.1f * std::log(2.0f));
  EXPECT_FLOAT_EQ(hp.attn_temperature(3, 16382), 1.0f + 0.1f * std::log(2.0f));
  EXPECT_FLOAT_EQ(hp.attn_temperature(3, 16383), 1.0f + 0.1f * std::log(3.0f));
  EXPECT_FLOAT_EQ(hp.attn_temperature(2, 16383), 1.0f);
  // Dense LLaMA: every layer dense, rope everywhere, full attention.
  LlamaHparams dense;
  dense.n_layer = 4;
  for (int64_t il = 0; il < 4; ++il) {
    EXPECT_FALSE(dense.is_moe_layer(il));
    EXPECT_TRUE(dense.uses_rope(il));
    EXPECT_EQ(dense.first_visible(il, 9000), 0);
  }
}

// ---- reference models: the tensor table must equal llama.cpp's manifest -----------------------

TEST(GgufReference, TensorTablesMatchManifest) {
  if (!test::reference_available()) GTEST_SKIP() << "reference data not found at " << test::reference_dir();
  std::ifstream in(test::reference_dir() + "/manifest.json");
  nlohmann::json manifest = nlohmann::json::parse(in);
  ASSERT_GE(manifest["cases"].size(), 7u);
  for (const auto& c : manifest["cases"]) {
    const std::string path = test::reference_dir() + "/" + c["model"].get<std::string>();
    auto f = read_file(path);
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    EXPECT_EQ(f->file_size, c["model_bytes"].get<uint64_t>());
    ASSERT_EQ(f->tensors.size(), c["tensors"].size()) << path;
    for (size_t k = 0; k < f->tensors.size(); ++k) {
      const auto& want = c["tensors"][k];
      const TensorInfo& got = f->tensors[k];
      EXPECT_EQ(got.name, want["name"].get<std::string>());
      EXPECT_EQ(std::string(type_info(got.type).name), want["type"].get<std::string>()) << got.name;
      std::vector<int64_t> shape(got.ne.begin(), got.ne.begin() + got.n_dims);
      EXPECT_EQ(shape, want["shape"].get<std::vector<int64_t>>()) << got.name;
      EXPECT_EQ(got.n_bytes, want["n_bytes"].get<uint64_t>()) << got.name;
      EXPECT_EQ(got.file_offset, want["file_offset"].get<uint64_t>()) << got.name;
    }
    auto hp = llama_hparams(*f);
    ASSERT_TRUE(hp.ok()) << hp.status().to_string();
    EXPECT_EQ(hp->n_embd, c["n_embd"].get<int64_t>());
    EXPECT_EQ(hp->n_ff, c["n_ff"].get<int64_t>());
    EXPECT_EQ(hp->n_layer, c["n_layer"].get<int64_t>());
    EXPECT_EQ(hp->n_head, c["n_head"].get<int64_t>());
    EXPECT_EQ(hp->n_head_kv, c["n_head_kv"].get<int64_t>());
    EXPECT_EQ(hp->n_vocab, c["n_vocab"].get<int64_t>());
    EXPECT_EQ(hp->tied_embeddings, c["tied"].get<bool>());
    EXPECT_DOUBLE_EQ(hp->rope_freq_base, c["rope_freq_base"].get<double>());
  }
}

TEST(GgufReference, InspectCliMatchesManifestAndRejectsGarbage) {
  if (!test::reference_available()) GTEST_SKIP() << "reference data not found";
  std::string out;
  const std::string flea = test::bin_dir() + "/flea";
  ASSERT_EQ(test::run_command(flea + " inspect --json " + test::reference_dir() + "/pub-Q4_K_M.gguf", &out), 0);
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["tensors"].size(), 21u);
  EXPECT_EQ(j["layers"]["blk.0"].get<uint64_t>(), 370688u);
  test::TempDir dir;
  test::write_bytes(dir.file("bad.gguf"), {'G', 'G', 'U', 'F', 9, 0, 0, 0});
  EXPECT_EQ(test::run_command(flea + " inspect " + dir.file("bad.gguf") + " 2>&1", &out), 2);
  EXPECT_NE(out.find("field 'version' = 9"), std::string::npos) << out;
}

}  // namespace
}  // namespace flea::gguf
