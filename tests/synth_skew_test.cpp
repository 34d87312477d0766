// flea synth --expert-skew: S = 0 is byte-identical to no option, S > 0 changes only token_embd and
// the routers, and the routing the engine then does is skewed (popular experts, chosen again by the
// next token) while the model stays finite and its greedy output keeps varying.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>

#include "compute/cpu/thread_pool.h"
#include "gguf/gguf.h"
#include "model/llama.h"
#include "model/memory_provider.h"
#include "model/synth.h"
#include "quant/quant.h"
#include "test_util.h"

namespace flea::synth {
namespace {

using test::TempDir;

SynthOptions options(const std::string& preset, FileType ft, const std::string& out, double skew, uint64_t seed = 0) {
  SynthOptions o = test::synth_options(preset, ft, out, seed);
  o.threads = 2;  // the generator's default, as before
  o.expert_skew = skew;
  return o;
}

// Mixtral's routing (8 experts, top-2) at a width and depth a test can run: 16 layers of 512.
SynthOptions narrow_mixtral(const std::string& out, double skew) {
  SynthOptions o = options("mixtral-8x7b", FileType::Q4_K_M, out, skew);
  o.shape.n_embd = 512;
  o.shape.n_ff = o.shape.n_ff_exp = 512;
  o.shape.n_layer = 16;
  o.shape.n_head = 8;
  o.shape.n_head_kv = 2;
  o.shape.n_vocab = 2000;
  return o;
}

// What the engine routed, token by token.
struct RoutingTrace {
  int64_t n_expert = 0, n_used = 0;
  std::vector<int64_t> moe_layers;
  std::vector<std::vector<std::vector<int64_t>>> chosen;  // [token][moe layer] expert ids
  std::vector<int32_t> tokens;                            // the tokens evaluated
  bool finite = true;                                     // every logit of every step
};

// Evaluates `prompt` one token at a time, then `n_greedy` more tokens each the argmax of the last
// logits (as flea bench's tg does), reading each token's experts off ForwardStats.
RoutingTrace trace_routing(const std::string& path, const std::vector<int32_t>& prompt, int n_greedy) {
  RoutingTrace r;
  auto m = Model::open(path);
  EXPECT_TRUE(m.ok()) << m.status().to_string();
  if (!m.ok()) return r;
  const LlamaHparams& hp = (*m)->hp;
  r.n_expert = hp.n_expert;
  r.n_used = hp.n_expert_used;
  for (int64_t il = 0; il < hp.n_layer; ++il) {
    if (hp.is_moe_layer(il)) r.moe_layers.push_back(il);
  }
  cpu::ThreadPool pool(2);
  auto weights = MemoryProvider::load(**m);
  EXPECT_TRUE(weights.ok());
  if (!weights.ok()) return r;
  const int64_t n = static_cast<int64_t>(prompt.size()) + n_greedy;
  Session session(**m, weights->get(), &pool, n + 1);
  std::vector<float> logits;
  int32_t tok = prompt.empty() ? 1 : prompt[0];
  for (int64_t t = 0; t < n; ++t) {
    if (t < static_cast<int64_t>(prompt.size())) tok = prompt[static_cast<size_t>(t)];
    session.stats().reset(hp.n_layer);
    const Status st = session.eval({tok}, &logits, false);
    EXPECT_TRUE(st.ok()) << st.to_string();
    if (!st.ok()) return r;
    r.tokens.push_back(tok);
    for (float v : logits) r.finite = r.finite && std::isfinite(v);
    std::vector<std::vector<int64_t>> per_layer;
    for (int64_t il : r.moe_layers) {
      const std::vector<int64_t>& rows = session.stats().expert_rows[static_cast<size_t>(il)];
      std::vector<int64_t> ids;
      for (size_t e = 0; e < rows.size(); ++e) {
        if (rows[e] > 0) ids.push_back(static_cast<int64_t>(e));
      }
      EXPECT_EQ(static_cast<int64_t>(ids.size()), r.n_used) << "token " << t << " layer " << il;
      per_layer.push_back(std::move(ids));
    }
    r.chosen.push_back(std::move(per_layer));
    tok = argmax(logits.data(), hp.n_vocab);
  }
  return r;
}

// Per MoE layer, averaged over the layers.
struct RoutingSummary {
  double reuse = 0;         // fraction of a token's experts the previous token chose too
  double chance_reuse = 0;  // the same for independent tokens with these popularities: sum p_e^2 / k
  double min_top_share = 1, max_top_share = 0;  // over layers: the most popular expert's share of the rows
  int distinct_tokens = 0;
  std::vector<double> by_rank;  // share of the routed rows of the most popular expert, the next, ... (layer mean)
};

RoutingSummary summarize(const RoutingTrace& r, size_t first_token = 0) {
  RoutingSummary s;
  const size_t n_tok = r.chosen.size() - first_token;
  for (size_t l = 0; l < r.moe_layers.size(); ++l) {
    std::vector<double> count(static_cast<size_t>(r.n_expert), 0);
    double shared = 0;
    for (size_t t = first_token; t < r.chosen.size(); ++t) {
      const auto& now = r.chosen[t][l];
      for (int64_t e : now) count[static_cast<size_t>(e)] += 1;
      if (t > first_token) {
        const auto& before = r.chosen[t - 1][l];
        for (int64_t e : now) shared += std::count(before.begin(), before.end(), e);
      }
    }
    const double top = *std::max_element(count.begin(), count.end()) / static_cast<double>(n_tok * r.n_used);
    std::vector<double> sorted = count;
    std::sort(sorted.rbegin(), sorted.rend());
    s.by_rank.resize(sorted.size());
    for (size_t e = 0; e < sorted.size(); ++e) s.by_rank[e] += sorted[e] / static_cast<double>(n_tok * r.n_used) / r.moe_layers.size();
    double chance = 0;
    for (double c : count) chance += (c / n_tok) * (c / n_tok) / r.n_used;
    s.min_top_share = std::min(s.min_top_share, top);
    s.max_top_share = std::max(s.max_top_share, top);
    s.reuse += shared / static_cast<double>((n_tok - 1) * r.n_used) / r.moe_layers.size();
    s.chance_reuse += chance / r.moe_layers.size();
  }
  s.distinct_tokens = static_cast<int>(std::set<int32_t>(r.tokens.begin() + first_token, r.tokens.end()).size());
  return s;
}

// A seeded stream of ordinary (non-special) token ids.
std::vector<int32_t> random_tokens(int n, int64_t n_vocab, uint64_t seed) {
  std::vector<int32_t> t;
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int i = 0; i < n; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    t.push_back(static_cast<int32_t>(3 + (x >> 33) % static_cast<uint64_t>(n_vocab - 3)));
  }
  return t;
}

struct LoadedFile {
  gguf::File file;
  std::vector<uint8_t> bytes;
  const uint8_t* data(const std::string& tensor) const {
    const gguf::TensorInfo* t = file.find_tensor(tensor);
    return t == nullptr ? nullptr : bytes.data() + t->file_offset;
  }
};

LoadedFile load(const std::string& path) {
  LoadedFile f;
  auto g = gguf::read_file(path);
  EXPECT_TRUE(g.ok()) << g.status().message();
  if (g.ok()) f.file = *g;
  f.bytes = test::read_bytes(path);
  return f;
}

// Row r of a 2-D F32 tensor (the routers).
std::vector<double> f32_row(const LoadedFile& f, const std::string& name, int64_t r) {
  const gguf::TensorInfo* t = f.file.find_tensor(name);
  EXPECT_NE(t, nullptr) << name;
  std::vector<double> row(static_cast<size_t>(t->ne[0]));
  const auto* p = reinterpret_cast<const float*>(f.bytes.data() + t->file_offset) + r * t->ne[0];
  for (size_t i = 0; i < row.size(); ++i) row[i] = p[i];
  return row;
}

// The skew's offset of each router row (file b minus file a, same seed): expert e's coefficient along
// the offsets' common direction, signed so that the largest is the rank-1 expert (a centred -ln(rank)
// has one large positive value). `parallel` is false when the offsets do not share one direction.
std::vector<double> router_offset_coefs(const LoadedFile& a, const LoadedFile& b, int64_t il, int64_t n_expert,
                                        bool* parallel) {
  const std::string name = "blk." + std::to_string(il) + ".ffn_gate_inp.weight";
  std::vector<std::vector<double>> d;
  for (int64_t e = 0; e < n_expert; ++e) {
    std::vector<double> r0 = f32_row(a, name, e), r1 = f32_row(b, name, e);
    for (size_t i = 0; i < r0.size(); ++i) r1[i] -= r0[i];
    d.push_back(r1);
  }
  const std::vector<double>& u = d[0];
  double uu = 0;
  for (double x : u) uu += x * x;
  std::vector<double> c;
  double cubes = 0;
  *parallel = true;
  for (const auto& row : d) {
    double dot = 0, rr = 0;
    for (size_t i = 0; i < row.size(); ++i) dot += row[i] * u[i], rr += row[i] * row[i];
    *parallel = *parallel && std::abs(dot * dot / (rr * uu) - 1.0) < 1e-6;
    c.push_back(dot / uu);
    cubes += c.back() * c.back() * c.back();
  }
  if (cubes < 0) {
    for (double& x : c) x = -x;
  }
  return c;
}

TEST(SynthSkew, ZeroIsByteIdenticalToNoOption) {
  TempDir dir;
  struct Case { const char* preset; FileType type; };
  for (const Case& c : {Case{"moe-tiny", FileType::Q4_K_M}, Case{"moe-tiny", FileType::F16},
                        Case{"llama4-tiny", FileType::Q8_0}, Case{"tiny", FileType::Q4_0}}) {
    SCOPED_TRACE(std::string(c.preset) + " " + file_type_name(c.type));
    SynthOptions plain = options(c.preset, c.type, dir.file("plain.gguf"), 0.0, 3);
    SynthOptions zero = plain;
    zero.out_path = dir.file("zero.gguf");
    zero.expert_skew = 0.0;
    plain.expert_skew = SynthOptions{}.expert_skew;  // the default: no option given
    ASSERT_TRUE(synth_model(plain).ok());
    ASSERT_TRUE(synth_model(zero).ok());
    EXPECT_EQ(test::read_bytes(plain.out_path), test::read_bytes(zero.out_path));
    EXPECT_EQ(load(zero.out_path).file.find(kExpertSkewKey), nullptr);
  }
}

// S > 0 touches token_embd and the routers only, records S, and the router rows move along one
// direction by amounts proportional to the centred -ln(rank) of each expert.
TEST(SynthSkew, ChangesOnlyTheEmbeddingAndTheRouters) {
  TempDir dir;
  const double skew = 1.5;
  ASSERT_TRUE(synth_model(options("moe-tiny", FileType::Q4_K_M, dir.file("s0.gguf"), 0.0, 9)).ok());
  ASSERT_TRUE(synth_model(options("moe-tiny", FileType::Q4_K_M, dir.file("s1.gguf"), skew, 9)).ok());
  SynthOptions inline_gen = options("moe-tiny", FileType::Q4_K_M, dir.file("s1-inline.gguf"), skew, 9);
  inline_gen.threads = 0;  // skewed bytes do not depend on threading or chunking either
  ASSERT_TRUE(synth_model(inline_gen).ok());
  EXPECT_EQ(test::read_bytes(dir.file("s1.gguf")), test::read_bytes(inline_gen.out_path));
  const LoadedFile a = load(dir.file("s0.gguf")), b = load(dir.file("s1.gguf"));
  ASSERT_EQ(a.file.tensors.size(), b.file.tensors.size());
  for (const gguf::TensorInfo& t : a.file.tensors) {
    const bool intended = t.name == "token_embd.weight" || t.name.find("ffn_gate_inp") != std::string::npos;
    EXPECT_EQ(std::equal(a.data(t.name), a.data(t.name) + t.n_bytes, b.data(t.name)), !intended) << t.name;
  }
  // Every other key unchanged (general.name included); one key added.
  ASSERT_EQ(b.file.kv.size(), a.file.kv.size() + 1);
  for (const gguf::KeyValue& kv : a.file.kv) {
    const gguf::Value* v = b.file.find(kv.key);
    ASSERT_NE(v, nullptr) << kv.key;
    EXPECT_EQ(v->to_display_string(), kv.value.to_display_string()) << kv.key;
  }
  const gguf::Value* recorded = b.file.find(kExpertSkewKey);
  ASSERT_NE(recorded, nullptr);
  EXPECT_EQ(recorded->type, gguf::ValueType::FLOAT32);
  EXPECT_DOUBLE_EQ(recorded->f, skew);

  // Router offsets: row e of (S>0 - S=0) is c_e v with c_e = S gain z_e; the c_e sorted are
  // proportional to mean(ln k) - ln(rank) for ranks 1..4.
  const int64_t X = 4;
  std::vector<double> want(X);
  double mean_log = 0;
  for (int64_t k = 1; k <= X; ++k) mean_log += std::log(static_cast<double>(k)) / X;
  for (int64_t k = 1; k <= X; ++k) want[k - 1] = mean_log - std::log(static_cast<double>(k));
  for (int il : {0, 1}) {
    SCOPED_TRACE("layer " + std::to_string(il));
    bool parallel = false;
    std::vector<double> c = router_offset_coefs(a, b, il, X, &parallel);
    EXPECT_TRUE(parallel) << "router offsets do not share one direction";
    std::sort(c.rbegin(), c.rend());
    double cw = 0, ww = 0;
    for (int64_t k = 0; k < X; ++k) cw += c[k] * want[k], ww += want[k] * want[k];
    const double scale = cw / ww;
    for (int64_t k = 0; k < X; ++k) EXPECT_NEAR(c[k], scale * want[k], 1e-5 * std::abs(scale)) << "rank " << k + 1;
  }
  // The embedding rows share 0.1 of their rms (1) along m: the mean row moves by rms ~0.1.
  const gguf::TensorInfo* embd = a.file.find_tensor("token_embd.weight");
  const quant::QuantOps* q = quant::ops(embd->type);
  ASSERT_NE(q, nullptr);
  const int64_t E = embd->ne[0], V = embd->ne[1];
  std::vector<float> ea(static_cast<size_t>(E * V)), eb(ea.size());
  q->dequantize(a.data("token_embd.weight"), ea.data(), E * V);
  q->dequantize(b.data("token_embd.weight"), eb.data(), E * V);
  double ss = 0;
  for (int64_t i = 0; i < E; ++i) {
    double mean_diff = 0;
    for (int64_t r = 0; r < V; ++r) mean_diff += (eb[r * E + i] - ea[r * E + i]) / V;
    ss += mean_diff * mean_diff;
  }
  EXPECT_NEAR(std::sqrt(ss / E), 0.1, 0.01);
}

TEST(SynthSkew, RoutingIsSkewedAndTheModelStaysSane) {
  TempDir dir;
  // Uniform routing gives each of the 4 experts 1/4 of the rows; over 256 tokens chance alone moves
  // the top one to ~0.3 and the last to ~0.2 (by_rank is the mean over layers of the sorted shares).
  struct Want { const char* preset; double skew; double top_min, top_max, last_min, last_max; };
  for (const Want& w : {Want{"moe-tiny", 0.0, 0.25, 0.34, 0.18, 0.25}, Want{"moe-tiny", 2.0, 0.40, 0.5, 0.0, 0.12},
                        Want{"llama4-tiny", 0.0, 0.25, 0.36, 0.15, 0.25},
                        Want{"llama4-tiny", 2.0, 0.6, 1.0, 0.0, 0.1}}) {
    SCOPED_TRACE(std::string(w.preset) + " S=" + std::to_string(w.skew));
    const std::string path = dir.file("r.gguf");
    SynthOptions o = options(w.preset, FileType::Q4_K_M, path, w.skew);
    ASSERT_TRUE(synth_model(o).ok());
    const RoutingTrace given = trace_routing(path, random_tokens(256, o.shape.n_vocab, 7), 0);
    const RoutingSummary s = summarize(given);
    EXPECT_TRUE(given.finite);
    EXPECT_GE(s.min_top_share, w.top_min);
    EXPECT_LE(s.max_top_share, w.top_max);
    EXPECT_GE(s.by_rank.back(), w.last_min);
    EXPECT_LE(s.by_rank.back(), w.last_max);
    // With independent prompt tokens, consecutive tokens share experts as often as popularity predicts.
    EXPECT_NEAR(s.reuse, s.chance_reuse, 0.05);
    // Greedy decoding still produces varied text (no loop of a few tokens).
    const RoutingSummary g = summarize(trace_routing(path, {1}, 128), 1);
    EXPECT_GE(g.distinct_tokens, 40);
  }
}

TEST(SynthSkew, CliTakesTheOptionForMoeShapesOnly) {
  const std::string flea = test::bin_dir() + "/flea";
  std::string out;
  ASSERT_EQ(test::run_command(flea + " synth --help", &out), 0);
  EXPECT_NE(out.find("--expert-skew"), std::string::npos) << out;
  EXPECT_EQ(test::run_command(flea + " synth --shape tiny --expert-skew 1 --dry-run 2>&1", &out), 2);
  EXPECT_NE(out.find("needs a mixture-of-experts shape"), std::string::npos) << out;
  EXPECT_EQ(test::run_command(flea + " synth --shape moe-tiny --expert-skew -1 --dry-run 2>&1", &out), 2);
  EXPECT_EQ(test::run_command(flea + " synth --shape tiny --expert-skew 0 --dry-run 2>&1", &out), 0) << out;
  // A narrower Mixtral (the README's measurements): --n-ff sets the experts' width too.
  EXPECT_EQ(test::run_command(flea + " synth --shape mixtral-8x7b --n-embd 512 --n-ff 512 --n-layer 16 --n-head 8 "
                                     "--n-head-kv 2 --n-vocab 2000 --expert-skew 1 --dry-run 2>&1", &out), 0) << out;
  TempDir dir;
  ASSERT_EQ(test::run_command(flea + " synth --shape moe-tiny --type Q8_0 --expert-skew 0.5 -q --out " +
                                  dir.file("m.gguf") + " 2>&1", &out), 0) << out;
  const gguf::Value* v = load(dir.file("m.gguf")).file.find(kExpertSkewKey);
  ASSERT_NE(v, nullptr);
  EXPECT_DOUBLE_EQ(v->f, 0.5);
}

// The figures README.md quotes (run with --gtest_also_run_disabled_tests; 10-30 s): per shape and S,
// the share of routed rows of the most popular expert, the next, ... (sorted per layer, mean over
// layers), the layers whose most used expert is the one the skew ranks first, and reuse (fraction of
// a token's experts the previous token chose too) against the chance level of that popularity, over
// a seeded random prompt (each token given) and over greedy decoding from BOS (each token the argmax,
// as flea bench's tg).
TEST(SynthSkew, DISABLED_RoutingTable) {
  TempDir dir;
  for (const char* shape : {"moe-tiny", "narrow-mixtral", "llama4-tiny"}) {
    for (double skew : {0.0, 0.5, 1.0, 2.0, 4.0}) {
      const std::string path = dir.file(skew == 0 ? "s0.gguf" : "s.gguf");
      SynthOptions o = std::string(shape) == "narrow-mixtral" ? narrow_mixtral(path, skew)
                                                             : options(shape, FileType::Q4_K_M, path, skew);
      ASSERT_TRUE(synth_model(o).ok());
      const RoutingTrace given = trace_routing(path, random_tokens(256, o.shape.n_vocab, 7), 0);
      const RoutingTrace greedy = trace_routing(path, {1}, 256);
      const RoutingSummary a = summarize(given), b = summarize(greedy, 1);
      // MoE layers whose most used expert (over the prompt) is the one the skew ranks first.
      int intended = 0;
      if (skew > 0) {
        const LoadedFile f0 = load(dir.file("s0.gguf")), f = load(path);
        for (size_t l = 0; l < given.moe_layers.size(); ++l) {
          bool parallel = false;
          const std::vector<double> c = router_offset_coefs(f0, f, given.moe_layers[l], given.n_expert, &parallel);
          std::vector<int64_t> count(static_cast<size_t>(given.n_expert), 0);
          for (const auto& tok : given.chosen) {
            for (int64_t e : tok[l]) ++count[static_cast<size_t>(e)];
          }
          intended += std::max_element(c.begin(), c.end()) - c.begin() ==
                      std::max_element(count.begin(), count.end()) - count.begin();
        }
      }
      const std::string layers = skew > 0 ? std::to_string(intended) + "/" + std::to_string(given.moe_layers.size()) : "-";
      std::printf("%-14s S=%-3g prompt: reuse %.2f (chance %.2f) top=intended %s by rank", shape, skew, a.reuse,
                  a.chance_reuse, layers.c_str());
      for (double v : a.by_rank) std::printf(" %.2f", v);
      std::printf(" | greedy: reuse %.2f (chance %.2f) distinct tokens %d by rank", b.reuse, b.chance_reuse,
                  b.distinct_tokens);
      for (double v : b.by_rank) std::printf(" %.2f", v);
      std::printf("\n");
      EXPECT_TRUE(given.finite && greedy.finite);
    }
  }
}

}  // namespace
}  // namespace flea::synth
