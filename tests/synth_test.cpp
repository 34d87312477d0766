// flea synth: tensor tables equal to llama.cpp's reference files, exact planned sizes, determinism,
// weight statistics and a finite, non-degenerate forward pass on the tiny preset.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "compute/cpu/thread_pool.h"
#include "gguf/gguf.h"
#include "model/llama.h"
#include "model/memory_provider.h"
#include "model/synth.h"
#include "quant/fp16.h"
#include "quant/quant.h"
#include "test_util.h"

namespace flea::synth {
namespace {

using test::TempDir;

SynthOptions options(const std::string& preset, FileType ft, const std::string& out, uint64_t seed = 0) {
  SynthOptions o = test::synth_options(preset, ft, out, seed);
  o.threads = 2;  // the generator's default: these tests cover the threaded writer
  return o;
}

// ---- test-local dequantization (independent of engine/src/quant) ----------------------------

float h2f(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return fp16_to_fp32(h);
}

void k_scale_min(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

std::vector<float> dequantize(GgmlType type, const uint8_t* p, int64_t n) {
  std::vector<float> y(static_cast<size_t>(n));
  float* o = y.data();
  switch (type) {
    case GgmlType::F32: std::memcpy(o, p, n * 4); break;
    case GgmlType::F16: for (int64_t i = 0; i < n; ++i) o[i] = h2f(p + 2 * i); break;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) { uint16_t h; std::memcpy(&h, p + 2 * i, 2); o[i] = bf16_to_fp32(h); }
      break;
    case GgmlType::Q8_0:
      for (int64_t b = 0; b < n / 32; ++b, p += 34, o += 32) {
        for (int j = 0; j < 32; ++j) o[j] = h2f(p) * static_cast<int8_t>(p[2 + j]);
      }
      break;
    case GgmlType::Q4_0:
      for (int64_t b = 0; b < n / 32; ++b, p += 18, o += 32) {
        for (int j = 0; j < 16; ++j) {
          o[j] = h2f(p) * ((p[2 + j] & 0xF) - 8);
          o[j + 16] = h2f(p) * ((p[2 + j] >> 4) - 8);
        }
      }
      break;
    case GgmlType::Q4_K:
    case GgmlType::Q5_K: {
      const bool q5 = type == GgmlType::Q5_K;
      const size_t bytes = q5 ? 176 : 144;
      for (int64_t b = 0; b < n / 256; ++b, p += bytes) {
        const float d = h2f(p), dmin = h2f(p + 2);
        const uint8_t* sc = p + 4;
        const uint8_t* qh = p + 16;
        const uint8_t* qs = p + (q5 ? 48 : 16);
        for (int c = 0; c < 4; ++c) {
          int s0, m0, s1, m1;
          k_scale_min(2 * c, sc, &s0, &m0);
          k_scale_min(2 * c + 1, sc, &s1, &m1);
          for (int l = 0; l < 32; ++l) {
            int lo = qs[32 * c + l] & 0xF;
            if (q5) lo |= ((qh[l] >> (2 * c)) & 1) << 4;
            *o++ = d * s0 * lo - dmin * m0;
          }
          for (int l = 0; l < 32; ++l) {
            int hi = qs[32 * c + l] >> 4;
            if (q5) hi |= ((qh[l] >> (2 * c + 1)) & 1) << 4;
            *o++ = d * s1 * hi - dmin * m1;
          }
        }
      }
      break;
    }
    case GgmlType::Q6_K:
      for (int64_t b = 0; b < n / 256; ++b, p += 210) {
        const float d = h2f(p + 208);
        const uint8_t* ql = p;
        const uint8_t* qh = p + 128;
        const int8_t* sc = reinterpret_cast<const int8_t*>(p + 192);
        for (int half = 0; half < 2; ++half, ql += 64, qh += 32, sc += 8, o += 128) {
          for (int l = 0; l < 32; ++l) {
            const int is = l / 16;
            o[l] = d * sc[is] * (((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
            o[l + 32] = d * sc[is + 2] * (((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
            o[l + 64] = d * sc[is + 4] * (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            o[l + 96] = d * sc[is + 6] * (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
          }
        }
      }
      break;
    default:
      // The low-bit types: the engine's own dequantizer (tested against hand-built blocks in
      // quant_*_test.cpp and end to end against llama.cpp's logits).
      if (const quant::QuantOps* q = quant::ops(type)) q->dequantize(p, o, n);
      else ADD_FAILURE() << "test cannot dequantize " << type_info(type).name;
  }
  return y;
}

struct LoadedModel {
  gguf::File file;
  std::vector<uint8_t> bytes;
  std::vector<float> tensor(const std::string& name) const {
    const gguf::TensorInfo* t = file.find_tensor(name);
    EXPECT_NE(t, nullptr) << name;
    if (!t) return {};
    return dequantize(t->type, bytes.data() + t->file_offset, t->n_elements());
  }
};

LoadedModel load(const std::string& path) {
  LoadedModel m;
  auto f = gguf::read_file(path);
  EXPECT_TRUE(f.ok()) << f.status().message();
  if (f.ok()) m.file = *f;
  m.bytes = test::read_bytes(path);
  return m;
}

// ---- tests --------------------------------------------------------------------------------------

TEST(Synth, TinyReadsBackWithPlannedSizeAndValidHparams) {
  TempDir dir;
  for (const std::string& type : file_type_names()) {
    SynthOptions o = options("tiny", *parse_file_type(type), dir.file("tiny-" + type + ".gguf"), 3);
    auto planned = synth_planned_bytes(o);
    ASSERT_TRUE(planned.ok());
    ASSERT_TRUE(synth_model(o).ok()) << type;
    auto f = gguf::read_file(o.out_path);
    ASSERT_TRUE(f.ok()) << f.status().message();
    EXPECT_EQ(f->file_size, *planned) << type;
    auto hp = llama_hparams(*f);
    ASSERT_TRUE(hp.ok()) << hp.status().message();
    EXPECT_EQ(hp->n_embd, 256);
    EXPECT_EQ(hp->n_ff, 768);
    EXPECT_EQ(hp->n_layer, 4);
    EXPECT_EQ(hp->n_head_kv, 2);
    EXPECT_EQ(hp->n_vocab, 1024);
    EXPECT_EQ(*f->get_int("general.file_type"), llama_ftype_id(*parse_file_type(type)));
    EXPECT_EQ(*f->get_string("general.name"), "flea-synth-tiny");
    const gguf::Value* tokens = f->find("tokenizer.ggml.tokens");
    ASSERT_NE(tokens, nullptr);
    ASSERT_EQ(tokens->arr_str.size(), 1024u);
    EXPECT_EQ(tokens->arr_str[0], "<unk>");
    EXPECT_EQ(tokens->arr_str[3], "<0x00>");
    EXPECT_EQ(tokens->arr_str[258], "<0xFF>");
    EXPECT_EQ(tokens->arr_str[259], "\xE2\x96\x81");
  }
}

// The reference models were written by llama.cpp's converter and quantizer; synth at their shape,
// with their name, must reproduce the whole header byte for byte, hence every tensor's name, type,
// shape, order, size and offset, and the file size.
// The shape of a reference case (top-level, quants/ or arch/ manifest).
SynthShape shape_of_case(const nlohmann::json& c) {
  SynthShape s;
  s.name = c["shape"];
  s.n_embd = c["n_embd"];
  s.n_ff = c["n_ff"];
  s.n_layer = c["n_layer"];
  s.n_head = c["n_head"];
  s.n_head_kv = c["n_head_kv"];
  s.n_vocab = c["n_vocab"];
  s.rope_freq_base = c["rope_freq_base"];
  s.rms_eps = c["rms_eps"];
  s.tied = c["tied"];
  s.n_ctx = 2048;
  if (c.contains("features")) {
    const auto& f = c["features"];
    s.arch = c["arch"];
    s.qkv_bias = f["attn_bias"];
    s.n_ctx = f["context_length"];
    s.n_expert = f["n_expert"];
    s.n_expert_used = f["n_expert_used"];
    s.n_ff_exp = f.contains("n_ff_exp") ? f["n_ff_exp"].get<int64_t>() : s.n_ff;
    s.moe_every = f.contains("interleave_moe_layer_step") ? f["interleave_moe_layer_step"].get<int64_t>() : 1;
    s.shared_expert = f.contains("shared_expert") && f["shared_expert"].get<bool>();
    if (!f["rope_scaling"].is_null()) {
      s.rope_scaling_factor = f["rope_scaling"]["factor"];
      s.rope_low_freq_factor = f["rope_scaling"]["low_freq_factor"];
      s.rope_high_freq_factor = f["rope_scaling"]["high_freq_factor"];
      s.rope_original_ctx = f["rope_scaling"]["original_max_position_embeddings"];
    }
  }
  return s;
}

// Tensor table (names, order, types, shapes, offsets) equal to llama.cpp's file of that case; with
// `same_header` also the exact header bytes (same metadata keys and vocab).
void expect_matches_reference(const std::string& set, const nlohmann::json& c, bool same_header, const TempDir& dir) {
  const std::string ft_name = c["file_type"];
  SCOPED_TRACE(set + c["model"].get<std::string>());
  auto ft = parse_file_type(ft_name);
  ASSERT_TRUE(ft.ok()) << ft_name;
  const SynthShape s = shape_of_case(c);
  SynthOptions o;
  o.shape = s;
  o.file_type = *ft;
  o.model_name = "refgen-pub";
  o.out_path = dir.file("ref-" + ft_name + ".gguf");

  auto plan = synth_tensor_plan(s, *ft);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  const auto& want = c["tensors"];
  ASSERT_EQ(plan->size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ((*plan)[i].name, want[i]["name"].get<std::string>()) << i;
    EXPECT_STREQ(type_info((*plan)[i].type).name, want[i]["type"].get<std::string>().c_str()) << (*plan)[i].name;
    EXPECT_EQ((*plan)[i].ne, want[i]["shape"].get<std::vector<int64_t>>()) << (*plan)[i].name;
    if ((*plan)[i].name == "rope_freqs.weight") {
      const auto ref = c["features"]["rope_freqs"].get<std::vector<float>>();
      ASSERT_EQ((*plan)[i].values.size(), ref.size());
      for (size_t j = 0; j < ref.size(); ++j) EXPECT_NEAR((*plan)[i].values[j], ref[j], 1e-6 * ref[j]) << j;
    }
  }
  if (!same_header) return;
  EXPECT_EQ(*synth_planned_bytes(o), c["model_bytes"].get<uint64_t>());
  ASSERT_TRUE(synth_model(o).ok());
  auto f = gguf::read_file(o.out_path);
  ASSERT_TRUE(f.ok()) << f.status().message();
  EXPECT_EQ(f->file_size, c["model_bytes"].get<uint64_t>());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(f->tensors[i].n_bytes, want[i]["n_bytes"].get<uint64_t>()) << f->tensors[i].name;
    EXPECT_EQ(f->tensors[i].file_offset, want[i]["file_offset"].get<uint64_t>()) << f->tensors[i].name;
  }
  std::map<std::string, int> counts;
  for (const auto& t : f->tensors) counts[type_info(t.type).name]++;
  const auto want_counts = c["tensor_types"].get<std::map<std::string, int>>();
  EXPECT_EQ(counts, want_counts);
  const std::vector<uint8_t> ours = test::read_bytes(o.out_path);
  const std::vector<uint8_t> ref = test::read_bytes(test::reference_dir() + "/" + set + c["model"].get<std::string>());
  ASSERT_EQ(ours.size(), ref.size());
  EXPECT_TRUE(std::equal(ours.begin(), ours.begin() + static_cast<std::ptrdiff_t>(f->data_offset), ref.begin()))
      << "header bytes differ from " << c["model"];
}

nlohmann::json reference_manifest(const std::string& set) {
  std::ifstream in(test::reference_dir() + "/" + set + "manifest.json");
  return nlohmann::json::parse(in);
}

TEST(Synth, PubShapeMatchesLlamaCppReferenceFiles) {
  if (!test::reference_available()) GTEST_SKIP() << "no reference data at " << test::reference_dir();
  TempDir dir;
  int n_cases = 0;
  for (const std::string set : {"", "quants/"}) {
    const nlohmann::json manifest = reference_manifest(set);
    for (const auto& c : manifest["cases"]) {
      expect_matches_reference(set, c, /*same_header=*/true, dir);
      ++n_cases;
    }
  }
  EXPECT_EQ(n_cases, 7 + 7);
}

// Llama 3 (rope_freqs from the rope scaling), Qwen2 (biases, qwen2 keys), Mixtral-style MoE (3-D
// expert tensors, F32 router) and Llama 4 (interleaved MoE, shared expert): the tensor table and type
// mix of llama.cpp's files (their vocabularies differ from the synthetic one, so not the header).
TEST(Synth, ArchitectureShapesMatchLlamaCppReferenceFiles) {
  if (!test::reference_available()) GTEST_SKIP() << "no reference data at " << test::reference_dir();
  TempDir dir;
  int n_cases = 0;
  const nlohmann::json manifest = reference_manifest("arch/");
  for (const auto& c : manifest["cases"]) {
    expect_matches_reference("arch/", c, /*same_header=*/false, dir);
    ++n_cases;
  }
  EXPECT_EQ(n_cases, 8);
}

// A synthetic file of each architecture preset opens with that architecture's facts.
TEST(Synth, ArchitecturePresetsOpenWithTheirFacts) {
  TempDir dir;
  struct Want { const char* preset; const char* arch; bool bias; bool freqs; RopeType rope; };
  for (const Want& w : {Want{"llama3-8b", "llama", false, true, RopeType::kNorm},
                        Want{"qwen2.5-7b", "qwen2", true, false, RopeType::kNeox},
                        Want{"mixtral-8x7b", "llama", false, false, RopeType::kNorm},
                        Want{"llama4-scout", "llama4", false, true, RopeType::kNorm}}) {
    SCOPED_TRACE(w.preset);
    SynthOptions o = options(w.preset, FileType::Q8_0, dir.file(std::string(w.preset) + ".gguf"), 5);
    // Same architecture, small enough to write: 2 layers, narrow.
    o.shape.n_embd = 256;
    o.shape.n_ff = 512;
    o.shape.n_layer = 2;
    o.shape.n_head = 4;
    o.shape.n_head_kv = 2;
    o.shape.n_vocab = 512;
    if (o.shape.n_expert > 0) o.shape.n_ff_exp = o.shape.arch == "llama4" ? 256 : o.shape.n_ff;
    ASSERT_TRUE(synth_model(o).ok());
    auto m = Model::open(o.out_path);
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    const SynthShape full = *synth_preset(w.preset);
    EXPECT_EQ((*m)->hp.n_expert, full.n_expert);
    EXPECT_EQ((*m)->hp.n_expert_used, full.n_expert_used);
    EXPECT_EQ((*m)->hp.shared_expert, full.shared_expert);
    // A forward pass over the synthetic experts stays finite.
    cpu::ThreadPool pool(2);
    auto weights = MemoryProvider::load(**m);
    ASSERT_TRUE(weights.ok());
    Session session(**m, weights->get(), &pool, 8);
    std::vector<float> logits;
    ASSERT_TRUE(session.eval({1, 2, 3, 4}, &logits, false).ok());
    for (float v : logits) ASSERT_TRUE(std::isfinite(v));
    EXPECT_STREQ((*m)->hp.arch->name, w.arch);
    EXPECT_EQ((*m)->hp.qkv_bias, w.bias);
    EXPECT_EQ((*m)->hp.rope_freqs, w.freqs);
    EXPECT_EQ((*m)->hp.rope_type, w.rope);
  }
}

// Llama 3.1-8B's factors (factor 8, low 1, high 4, original context 8192, base 500000): 128-dim heads
// give 64 pairs; wavelengths below 2048 keep 1, above 8192 get 8, the band between is blended.
TEST(Synth, RopeFreqFactorsFollowTheLlama31Rule) {
  const SynthShape s = *synth_preset("llama3-8b");
  const std::vector<float> f = rope_freq_factors(s);
  ASSERT_EQ(f.size(), 64u);
  EXPECT_EQ(f[0], 1.0f);
  EXPECT_EQ(f[63], 8.0f);
  int blended = 0;
  for (size_t i = 1; i < f.size(); ++i) {
    EXPECT_GE(f[i], f[i - 1]) << i;  // longer wavelengths are never scaled less
    blended += f[i] > 1.0f && f[i] < 8.0f;
  }
  EXPECT_GT(blended, 0);
}

TEST(Synth, VocabFromAnotherFileReplacesTheSyntheticOne) {
  if (!test::reference_available()) GTEST_SKIP() << "no reference data at " << test::reference_dir();
  TempDir dir;
  auto v = read_vocab_source(test::reference_dir() + "/tokenizer/ggml-vocab-gpt-2.gguf");
  ASSERT_TRUE(v.ok()) << v.status().message();
  EXPECT_EQ(v->n_tokens, 50257);
  SynthOptions o = options("tiny", FileType::Q8_0, dir.file("v.gguf"), 1);
  o.vocab = &*v;
  EXPECT_FALSE(synth_model(o).ok()) << "n_vocab 1024 cannot take a 50257-token vocabulary";
  o.shape.n_vocab = v->n_tokens;
  o.shape.n_layer = 1;
  ASSERT_TRUE(synth_model(o).ok());
  auto f = gguf::read_file(o.out_path);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(*f->get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f->find("tokenizer.ggml.merges")->array_size(), 50000u);
  EXPECT_EQ(f->find_tensor("token_embd.weight")->ne[1], 50257);
  EXPECT_FALSE(read_vocab_source(o.out_path + ".missing").ok());
}

TEST(Synth, SameSeedSameBytesOtherSeedOtherBytes) {
  TempDir dir;
  SynthOptions a = options("tiny", FileType::Q4_K_M, dir.file("a.gguf"), 42);
  SynthOptions b = a;
  b.out_path = dir.file("b.gguf");
  b.threads = 0;  // generated inline: bytes must not depend on threading or chunking
  SynthOptions c = a;
  c.out_path = dir.file("c.gguf");
  c.seed = 43;
  ASSERT_TRUE(synth_model(a).ok());
  ASSERT_TRUE(synth_model(b).ok());
  ASSERT_TRUE(synth_model(c).ok());
  const auto ba = test::read_bytes(a.out_path), bb = test::read_bytes(b.out_path), bc = test::read_bytes(c.out_path);
  EXPECT_EQ(ba, bb);
  ASSERT_EQ(ba.size(), bc.size());
  const LoadedModel m = load(a.out_path);
  // Every tensor's data differs under another seed, not just some of them.
  for (const auto& t : m.file.tensors) {
    EXPECT_FALSE(std::equal(ba.begin() + t.file_offset, ba.begin() + t.file_offset + t.n_bytes,
                            bc.begin() + t.file_offset)) << t.name;
  }
}

// Figures of llama.cpp's files for Llama-2 (Q4_K_M of 7B / 13B / 70B, F16 and Q8_0 of 7B).
TEST(Synth, PlannedSizesMatchRealLlama2FilesWithinOnePercent) {
  struct Case { const char* shape; FileType ft; double real_bytes; };
  const Case cases[] = {
      {"7b", FileType::Q4_K_M, 4081004224.0},  {"13b", FileType::Q4_K_M, 7865956224.0},
      {"70b", FileType::Q4_K_M, 41417124864.0}, {"7b", FileType::F16, 13478104576.0},
      {"7b", FileType::Q8_0, 7161089728.0},
  };
  for (const Case& c : cases) {
    auto bytes = synth_planned_bytes(options(c.shape, c.ft, ""));
    ASSERT_TRUE(bytes.ok());
    const double rel = std::abs(static_cast<double>(*bytes) - c.real_bytes) / c.real_bytes;
    EXPECT_LT(rel, 0.01) << c.shape << " " << file_type_name(c.ft) << ": planned " << *bytes;
  }
}

std::map<std::string, std::string> type_map(const SynthShape& s, FileType ft) {
  std::map<std::string, std::string> m;
  auto plan = synth_tensor_plan(s, ft);
  EXPECT_TRUE(plan.ok()) << plan.status().message();
  if (!plan.ok()) return m;
  for (const auto& t : *plan) m[t.name] = type_info(t.type).name;
  return m;
}

TEST(Synth, TypeMixFollowsLlamaCppRules) {
  // 7B Q4_K_M: attn_v / ffn_down get Q6_K on layers 0-3, 28-31 and every third in between.
  auto m = type_map(*synth_preset("7b"), FileType::Q4_K_M);
  for (int il = 0; il < 32; ++il) {
    const bool more = il < 4 || il >= 28 || (il - 4) % 3 == 2;
    const std::string p = "blk." + std::to_string(il) + ".";
    EXPECT_EQ(m[p + "attn_v.weight"], more ? "Q6_K" : "Q4_K") << il;
    EXPECT_EQ(m[p + "ffn_down.weight"], more ? "Q6_K" : "Q4_K") << il;
    EXPECT_EQ(m[p + "attn_q.weight"], "Q4_K");
    EXPECT_EQ(m[p + "attn_norm.weight"], "F32");
  }
  EXPECT_EQ(m["output.weight"], "Q6_K");
  EXPECT_EQ(m["token_embd.weight"], "Q4_K");
  // 70B (80 layers, GQA): the small attn_v goes to Q5_K where the mix says Q4_K.
  m = type_map(*synth_preset("70b"), FileType::Q4_K_M);
  EXPECT_EQ(m["blk.10.attn_v.weight"], "Q5_K");
  EXPECT_EQ(m["blk.0.attn_v.weight"], "Q6_K");
  EXPECT_EQ(m["blk.10.ffn_down.weight"], "Q4_K");
  EXPECT_EQ(type_map(*synth_preset("70b"), FileType::Q5_K_M)["blk.10.attn_v.weight"], "Q5_K");
  // Q4_0 and Q8_0: output.weight Q6_K resp. kept Q8_0.
  EXPECT_EQ(type_map(*synth_preset("7b"), FileType::Q4_0)["output.weight"], "Q6_K");
  EXPECT_EQ(type_map(*synth_preset("7b"), FileType::Q8_0)["output.weight"], "Q8_0");
  // Tied embeddings: token_embd takes the output tensor's type.
  SynthShape tied = *synth_preset("tiny");
  tied.tied = true;
  m = type_map(tied, FileType::Q4_K_M);
  EXPECT_EQ(m.count("output.weight"), 0u);
  EXPECT_EQ(m["token_embd.weight"], "Q6_K");
  // Rows that do not fill a 256 super-block: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0.
  SynthShape odd = *synth_preset("tiny");
  odd.n_ff = 800;  // ffn_down rows of 800 = 25 x 32
  EXPECT_EQ(type_map(odd, FileType::Q4_K_M)["blk.1.ffn_down.weight"], "Q5_0");
  EXPECT_EQ(type_map(odd, FileType::Q4_K_M)["blk.2.ffn_down.weight"], "Q8_0");  // a Q6_K layer of 4
  EXPECT_EQ(type_map(odd, FileType::Q5_K_M)["blk.1.ffn_down.weight"], "Q5_1");
  EXPECT_EQ(type_map(odd, FileType::Q4_K_M)["blk.1.ffn_up.weight"], "Q4_K");
  odd.n_embd = 288;  // output rows of 288: Q8_0
  odd.n_head = 4;
  odd.n_head_kv = 2;
  EXPECT_EQ(type_map(odd, FileType::Q4_K_M)["output.weight"], "Q8_0");
}

TEST(Synth, RejectsInvalidShapes) {
  SynthShape s = *synth_preset("tiny");
  s.n_head_kv = 3;
  EXPECT_FALSE(synth_tensor_plan(s, FileType::F16).ok());
  s = *synth_preset("tiny");
  s.n_embd = 250;
  EXPECT_FALSE(synth_tensor_plan(s, FileType::F16).ok());
  s = *synth_preset("tiny");
  s.n_vocab = 100;
  EXPECT_FALSE(synth_tensor_plan(s, FileType::F16).ok());
  EXPECT_FALSE(synth_preset("8x7b").ok());
  EXPECT_FALSE(parse_file_type("IQ2_XXS").ok());
}

double mean_of(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += x;
  return s / static_cast<double>(v.size());
}

double std_of(const std::vector<float>& v) {
  const double m = mean_of(v);
  double s = 0;
  for (float x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size()));
}

TEST(Synth, WeightStatisticsMatchTheirTargets) {
  TempDir dir;
  for (const std::string& type : file_type_names()) {
    SCOPED_TRACE(type);
    SynthOptions o = options("tiny", *parse_file_type(type), dir.file(type + ".gguf"), 9);
    ASSERT_TRUE(synth_model(o).ok());
    const LoadedModel m = load(o.out_path);
    for (const auto& t : m.file.tensors) {
      const std::vector<float> w = m.tensor(t.name);
      for (float x : w) ASSERT_TRUE(std::isfinite(x)) << t.name;
      const double mean = mean_of(w), sd = std_of(w);
      if (t.n_dims == 1) {
        EXPECT_NEAR(mean, 1.0, 0.02) << t.name;
        EXPECT_NEAR(sd, 0.1, 0.02) << t.name;
      } else {
        const double target = t.name == "token_embd.weight" ? 1.0 : 1.0 / std::sqrt(static_cast<double>(t.ne[0]));
        EXPECT_NEAR(sd / target, 1.0, 0.08) << t.name << " std " << sd;
        EXPECT_LT(std::abs(mean), 0.05 * target) << t.name << " mean " << mean;
      }
    }
  }
}

// A plain float LLaMA forward pass over the dequantized weights: activations stay finite and the
// logits vary across the vocabulary and across positions.
TEST(Synth, ForwardPassIsFiniteAndNonDegenerate) {
  TempDir dir;
  for (FileType ft : {FileType::Q4_K_M, FileType::F16, FileType::Q4_0}) {
    SCOPED_TRACE(file_type_name(ft));
    SynthOptions o = options("tiny", ft, dir.file("fw.gguf"), 1);
    ASSERT_TRUE(synth_model(o).ok());
    const LoadedModel m = load(o.out_path);
    const SynthShape& s = o.shape;
    const int64_t E = s.n_embd, F = s.n_ff, H = s.n_head, HKV = s.n_head_kv, D = E / H, V = s.n_vocab;
    const std::vector<int> tokens = {1, 300, 17, 900, 5, 640};
    const int64_t T = static_cast<int64_t>(tokens.size());
    auto matvec = [](const std::vector<float>& W, int64_t in, int64_t out, const float* x, float* y) {
      for (int64_t r = 0; r < out; ++r) {  // W is [in, out] in GGUF order: row r holds `in` values
        double acc = 0;
        for (int64_t k = 0; k < in; ++k) acc += static_cast<double>(W[r * in + k]) * x[k];
        y[r] = static_cast<float>(acc);
      }
    };
    auto rmsnorm = [&](const float* x, const std::vector<float>& g, float* y) {
      double ss = 0;
      for (int64_t i = 0; i < E; ++i) ss += static_cast<double>(x[i]) * x[i];
      const float r = static_cast<float>(1.0 / std::sqrt(ss / E + s.rms_eps));
      for (int64_t i = 0; i < E; ++i) y[i] = x[i] * r * g[i];
    };
    const std::vector<float> emb = m.tensor("token_embd.weight");
    std::vector<float> x(T * E);  // (T, E) residual stream
    for (int64_t t = 0; t < T; ++t) std::copy_n(emb.begin() + tokens[t] * E, E, x.begin() + t * E);
    std::vector<float> xn(E), q(T * E), k(T * HKV * D), v(T * HKV * D), att(T * E), tmp(E), g(F), u(F);
    for (int64_t il = 0; il < s.n_layer; ++il) {
      const std::string p = "blk." + std::to_string(il) + ".";
      const auto wq = m.tensor(p + "attn_q.weight"), wk = m.tensor(p + "attn_k.weight"),
                 wv = m.tensor(p + "attn_v.weight"), wo = m.tensor(p + "attn_output.weight"),
                 an = m.tensor(p + "attn_norm.weight"), fn = m.tensor(p + "ffn_norm.weight"),
                 wg = m.tensor(p + "ffn_gate.weight"), wu = m.tensor(p + "ffn_up.weight"),
                 wd = m.tensor(p + "ffn_down.weight");
      for (int64_t t = 0; t < T; ++t) {
        rmsnorm(&x[t * E], an, xn.data());
        matvec(wq, E, E, xn.data(), &q[t * E]);
        matvec(wk, E, HKV * D, xn.data(), &k[t * HKV * D]);
        matvec(wv, E, HKV * D, xn.data(), &v[t * HKV * D]);
        for (int64_t h = 0; h < H + HKV; ++h) {  // RoPE (normal, pairs of adjacent dims)
          float* vec = h < H ? &q[t * E + h * D] : &k[t * HKV * D + (h - H) * D];
          for (int64_t i = 0; i < D; i += 2) {
            const double th = t * std::pow(s.rope_freq_base, -static_cast<double>(i) / D);
            const float a = vec[i], b = vec[i + 1];
            vec[i] = static_cast<float>(a * std::cos(th) - b * std::sin(th));
            vec[i + 1] = static_cast<float>(a * std::sin(th) + b * std::cos(th));
          }
        }
      }
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t h = 0; h < H; ++h) {
          const int64_t hk = h / (H / HKV);
          std::vector<double> sc(t + 1);
          double mx = -1e300, sum = 0;
          for (int64_t j = 0; j <= t; ++j) {
            double d = 0;
            for (int64_t i = 0; i < D; ++i) d += q[t * E + h * D + i] * k[j * HKV * D + hk * D + i];
            sc[j] = d / std::sqrt(static_cast<double>(D));
            mx = std::max(mx, sc[j]);
          }
          for (auto& e : sc) sum += (e = std::exp(e - mx));
          for (int64_t i = 0; i < D; ++i) {
            double a = 0;
            for (int64_t j = 0; j <= t; ++j) a += sc[j] / sum * v[j * HKV * D + hk * D + i];
            att[t * E + h * D + i] = static_cast<float>(a);
          }
        }
        matvec(wo, E, E, &att[t * E], tmp.data());
        for (int64_t i = 0; i < E; ++i) x[t * E + i] += tmp[i];
        rmsnorm(&x[t * E], fn, xn.data());
        matvec(wg, E, F, xn.data(), g.data());
        matvec(wu, E, F, xn.data(), u.data());
        for (int64_t i = 0; i < F; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
        matvec(wd, F, E, g.data(), tmp.data());
        for (int64_t i = 0; i < E; ++i) x[t * E + i] += tmp[i];
      }
      for (float e : x) ASSERT_TRUE(std::isfinite(e)) << "layer " << il;
      EXPECT_LT(std_of(x), 50.0) << "residual stream blew up at layer " << il;
    }
    const auto on = m.tensor("output_norm.weight"), out = m.tensor("output.weight");
    std::vector<float> logits(V);
    std::vector<int64_t> argmax;
    for (int64_t t = 0; t < T; ++t) {
      rmsnorm(&x[t * E], on, xn.data());
      matvec(out, E, V, xn.data(), logits.data());
      for (float l : logits) ASSERT_TRUE(std::isfinite(l));
      const double sd = std_of(logits);
      EXPECT_GT(sd, 0.3) << "logits nearly constant at position " << t;
      EXPECT_LT(sd, 10.0) << "logits exploded at position " << t;
      argmax.push_back(std::max_element(logits.begin(), logits.end()) - logits.begin());
    }
    std::sort(argmax.begin(), argmax.end());
    EXPECT_GE(std::unique(argmax.begin(), argmax.end()) - argmax.begin(), 3) << "argmax barely varies";
  }
}

TEST(SynthCli, DryRunPrintsPlannedBytesAndBadFlagsExit2) {
  const std::string flea = test::bin_dir() + "/flea";
  std::string out;
  ASSERT_EQ(test::run_command(flea + " synth --shape 7b --type Q4_K_M --dry-run", &out), 0);
  const auto planned = synth_planned_bytes(options("7b", FileType::Q4_K_M, ""));
  EXPECT_NE(out.find("planned_bytes " + std::to_string(*planned) + "\n"), std::string::npos) << out;
  ASSERT_EQ(test::run_command(flea + " synth --shape custom1 --n-embd 512 --n-ff 1024 --n-layer 3 "
                                     "--n-head 8 --n-head-kv 2 --n-vocab 2000 --tied --type Q6_K --dry-run", &out), 0);
  EXPECT_NE(out.find("n_head_kv 2"), std::string::npos) << out;
  EXPECT_NE(out.find("tied"), std::string::npos) << out;
  EXPECT_EQ(test::run_command(flea + " synth --shape nosuch --type Q4_K_M --out /dev/null 2>&1", &out), 2);
  EXPECT_NE(out.find("unknown shape 'nosuch'"), std::string::npos) << out;
  EXPECT_EQ(test::run_command(flea + " synth --shape tiny --type Q3_K --out x.gguf 2>&1", &out), 2);
  EXPECT_EQ(test::run_command(flea + " synth --shape tiny --n-head-kv 3 --dry-run 2>&1", &out), 2);
  EXPECT_NE(out.find("n_head_kv"), std::string::npos) << out;
  EXPECT_EQ(test::run_command(flea + " synth --shape tiny --type Q4_0 2>&1", &out), 2) << "no --out";
  TempDir dir;
  ASSERT_EQ(test::run_command(flea + " synth --shape tiny --type Q8_0 --seed 5 --out " + dir.file("t.gguf") + " 2>&1", &out), 0) << out;
  EXPECT_EQ(test::read_bytes(dir.file("t.gguf")).size(), *synth_planned_bytes(options("tiny", FileType::Q8_0, "")));
}

}  // namespace
}  // namespace flea::synth
