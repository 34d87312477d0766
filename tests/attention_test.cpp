// CPU attention (compute/cpu/attention.h) against a plain double-precision reference on random data,
// at every SIMD level this CPU has (scalar, avx2, avx512; forced with quant::force_simd_level), for
// head dims 64/128/80/36, GQA 1/4/8, batches of 1/7/64/300 rows of one or several sequences,
// positions crossing the kernel's key blocks, and chunked windows; the F16 cache's rounding; the KV
// byte accounting per cache type; and F16- vs F32-cache logits on the reference models.
#include <gtest/gtest.h>
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <random>

#include "compute/cpu/attention.h"
#include "compute/cpu/thread_pool.h"
#include "model/llama.h"
#include "model/memory_provider.h"
#include "quant/fp16.h"
#include "quant/quant.h"
#include "test_util.h"

namespace flea {
namespace {

using cpu::KvType;

// One sequence of a test batch: n_past keys already cached, n_new rows appended by the batch.
struct SeqSpec {
  int64_t n_past;
  int64_t n_new;
};

struct Case {
  int64_t head_dim;
  int64_t n_head_kv;
  int64_t n_gqa;
  std::vector<SeqSpec> seqs;
  int64_t chunk = 0;        // chunked window: a row at pos sees [pos / chunk * chunk, pos]
  bool bounded = false;     // chunk-bounded cache: chunk slots per sequence, rows inside one chunk
  KvType type = KvType::kF16;
};

std::string describe(const Case& c) {
  std::string s = "D=" + std::to_string(c.head_dim) + " kv_heads=" + std::to_string(c.n_head_kv) +
                  " gqa=" + std::to_string(c.n_gqa) + " chunk=" + std::to_string(c.chunk) +
                  (c.bounded ? " bounded" : "") + " " + cpu::kv_type_name(c.type) + " seqs:";
  for (const SeqSpec& q : c.seqs) s += " " + std::to_string(q.n_past) + "+" + std::to_string(q.n_new);
  return s;
}

// Runs cpu::attention on random q, k, v for `c` and returns the largest |got - want| over all outputs,
// want computed in double from the same cache contents (so F16 rounding of the cache is not error).
double max_error(const Case& c, cpu::ThreadPool* pool, uint32_t seed) {
  const int64_t D = c.head_dim, Hkv = c.n_head_kv, H = Hkv * c.n_gqa, KV = Hkv * D, HD = H * D;
  const int64_t n_seq = static_cast<int64_t>(c.seqs.size());
  int64_t n_ctx = 0, T = 0;
  for (const SeqSpec& q : c.seqs) {
    n_ctx = std::max(n_ctx, q.n_past + q.n_new);
    T += q.n_new;
  }
  const int64_t slots = c.bounded ? c.chunk : n_ctx;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  // Keys and values of every slot (visible or not: a kernel that reads outside the window is caught).
  const size_t es = cpu::kv_type_bytes(c.type);
  std::vector<uint8_t> kc(static_cast<size_t>(n_seq * slots * KV) * es), vc(kc.size());
  std::vector<float> row(static_cast<size_t>(KV));
  for (int64_t s = 0; s < n_seq * slots; ++s) {
    for (float& x : row) x = u(rng);
    cpu::store_kv(c.type, row.data(), KV, &kc[static_cast<size_t>(s * KV) * es]);
    for (float& x : row) x = u(rng);
    cpu::store_kv(c.type, row.data(), KV, &vc[static_cast<size_t>(s * KV) * es]);
  }
  auto cached = [&](const std::vector<uint8_t>& cache, int64_t s, int64_t p, int64_t h, int64_t d) {
    const int64_t i = (s * slots + p % slots) * KV + h * D + d;
    return c.type == KvType::kF16 ? fp16_to_fp32(reinterpret_cast<const uint16_t*>(cache.data())[i])
                                  : reinterpret_cast<const float*>(cache.data())[i];
  };
  // Rows of the sequences interleaved round-robin (each sequence's rows stay in position order).
  std::vector<int32_t> seq;
  std::vector<int64_t> pos, first;
  std::vector<int64_t> next(static_cast<size_t>(n_seq));
  for (int64_t s = 0; s < n_seq; ++s) next[static_cast<size_t>(s)] = c.seqs[static_cast<size_t>(s)].n_past;
  while (static_cast<int64_t>(seq.size()) < T) {
    for (int64_t s = 0; s < n_seq; ++s) {
      const SeqSpec& q = c.seqs[static_cast<size_t>(s)];
      if (next[static_cast<size_t>(s)] == q.n_past + q.n_new) continue;
      const int64_t p = next[static_cast<size_t>(s)]++;
      seq.push_back(static_cast<int32_t>(s));
      pos.push_back(p);
      first.push_back(c.chunk > 0 ? p / c.chunk * c.chunk : 0);
    }
  }
  // q scaled up so that softmax is peaked, not near uniform.
  std::vector<float> q(static_cast<size_t>(T * HD)), out(q.size(), NAN);
  for (float& x : q) x = 4.0f * u(rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  cpu::AttentionBatch b{T, H, Hkv, D, scale, q.data(), seq.data(), pos.data(), first.data(),
                        {c.type, kc.data(), vc.data(), slots}, out.data()};
  cpu::attention(b, pool);

  double worst = 0;
  std::vector<double> w;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kvh = h / c.n_gqa, s = seq[static_cast<size_t>(t)];
      const int64_t lo = first[static_cast<size_t>(t)], hi = pos[static_cast<size_t>(t)];
      w.assign(static_cast<size_t>(hi - lo + 1), 0.0);
      double mx = -INFINITY;
      for (int64_t p = lo; p <= hi; ++p) {
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(q[static_cast<size_t>(t * HD + h * D + d)]) * cached(kc, s, p, kvh, d);
        w[static_cast<size_t>(p - lo)] = dot * scale;
        mx = std::max(mx, dot * scale);
      }
      double sum = 0;
      for (double& x : w) sum += (x = std::exp(x - mx));
      for (int64_t d = 0; d < D; ++d) {
        double want = 0;
        for (int64_t p = lo; p <= hi; ++p) want += w[static_cast<size_t>(p - lo)] * cached(vc, s, p, kvh, d);
        want /= sum;
        const double got = out[static_cast<size_t>(t * HD + h * D + d)];
        if (!std::isfinite(got)) return INFINITY;
        worst = std::max(worst, std::fabs(got - want));
      }
    }
  }
  return worst;
}

// Outputs are convex combinations of values in [-1, 1]. Float32 arithmetic over <= 640 keys: the
// scores (|q.k/sqrt(D)| up to ~10) carry ~1e-6 absolute error, exp ~2e-7 relative, the sums of
// weights and of weighted values ~n * 6e-8 relative in the worst case; measured errors are below
// 2e-6. 2e-5 leaves margin for summation order while still failing on any masking, GQA-mapping
// or softmax error (those are >= 1e-3 on this data).
constexpr double kTolerance = 2e-5;

class AttentionLevel : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    const std::string want = GetParam(), best = quant::best_simd_level();
    const bool has = want == "scalar" || best == "avx512" || (want == "avx2" && best == "avx2");
    if (!has) GTEST_SKIP() << "this CPU's best SIMD level is " << best << ", not " << want;
    quant::force_simd_level(GetParam());
    ASSERT_EQ(std::string(quant::simd_level()), want);
  }
  void TearDown() override { quant::force_simd_level(quant::best_simd_level()); }

  void check(const Case& c, uint32_t seed = 1) {
    EXPECT_LE(max_error(c, &pool_, seed), kTolerance) << describe(c) << " at " << GetParam();
    EXPECT_LE(max_error(c, nullptr, seed + 1000), kTolerance) << describe(c) << " at " << GetParam() << ", no pool";
  }
  cpu::ThreadPool pool_{3};
};

TEST_P(AttentionLevel, SingleRowDecode) {
  for (int64_t D : {64, 128, 80, 36}) {
    for (int64_t G : {1, 4, 8}) {
      check({D, 2, G, {{0, 1}}});           // the first token: one key
      check({D, 2, G, {{70, 1}}});          // 71 keys: vector body and tail of the softmax
      check({D, 1, G, {{300, 1}}, 0, false, KvType::kF32});
    }
  }
}

TEST_P(AttentionLevel, PromptBlocksCrossKeyBlocks) {
  for (int64_t D : {64, 128, 80}) {
    for (int64_t G : {1, 4, 8}) {
      check({D, 2, G, {{0, 7}}});
      check({D, 2, G, {{29, 64}}});         // starts 3 keys before a 32-key block boundary
      check({D, 1, G, {{0, 300}}}, 7);
    }
  }
  check({128, 2, 4, {{5, 300}}, 0, false, KvType::kF32});
  check({36, 3, 2, {{11, 40}}});            // head dim not a multiple of 8: scalar tails
}

TEST_P(AttentionLevel, SeveralSequencesInOneBatch) {
  // Interleaved rows: a long prompt, a single decode row, a short prompt, an empty cache.
  check({64, 2, 4, {{100, 37}, {250, 1}, {3, 9}, {0, 1}}});
  check({128, 8, 1, {{0, 64}, {64, 64}}});
  check({80, 1, 8, {{17, 300}, {0, 7}, {1000, 1}}}, 3);
}

TEST_P(AttentionLevel, ChunkedWindows) {
  // Unbounded cache: one block of rows spans a chunk boundary (rows see different first keys).
  check({64, 2, 4, {{0, 300}}, 48});
  check({128, 1, 8, {{90, 64}, {10, 7}}, 40});
  check({64, 2, 4, {{130, 1}}, 48});
  // Bounded cache (chunk slots, position p in slot p % chunk): rows inside one chunk, as
  // Session::eval_batch splits them.
  check({64, 2, 4, {{101, 27}}, 64, true});
  check({80, 2, 1, {{640, 64}, {700, 1}}, 64, true});
}

INSTANTIATE_TEST_SUITE_P(Levels, AttentionLevel, ::testing::Values("scalar", "avx2", "avx512"),
                         [](const ::testing::TestParamInfo<const char*>& i) { return std::string(i.param); });

__attribute__((target("f16c"))) uint16_t f16c_round(float x) {
  return static_cast<uint16_t>(_mm_extract_epi16(_mm_cvtps_ph(_mm_set1_ps(x), 0), 0));
}

// The F16 cache stores what F16C's _mm_cvtps_ph with rounding 0 (nearest even) gives: ties, values
// next to ties, subnormals, overflow to infinity.
TEST(KvStore, F16RoundsLikeF16cNearestEven) {
  if (std::string(quant::best_simd_level()) == "scalar") GTEST_SKIP() << "no F16C on this CPU";
  std::vector<float> xs = {0.0f, -0.0f, 1.0f, 1.0f + 1.0f / 2048, 1.0f + 3.0f / 2048, 65504.0f, 65520.0f, 1e6f,
                           -1e6f, 6e-8f, 3e-8f, 1e-5f, -2.5e-6f, INFINITY, -INFINITY};
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-8.0f, 8.0f);
  for (int i = 0; i < 20000; ++i) xs.push_back(u(rng));
  for (int i = 0; i < 2000; ++i) xs.push_back(std::ldexp(u(rng), -20));  // subnormal range
  std::vector<uint16_t> got(xs.size());
  cpu::store_kv(KvType::kF16, xs.data(), static_cast<int64_t>(xs.size()), got.data());
  for (size_t i = 0; i < xs.size(); ++i) ASSERT_EQ(got[i], f16c_round(xs[i])) << "x = " << xs[i];
  std::vector<float> f32(3);
  cpu::store_kv(KvType::kF32, xs.data(), 3, f32.data());
  EXPECT_EQ(std::memcmp(f32.data(), xs.data(), 3 * sizeof(float)), 0);
}

TEST(KvStore, ParsesTypeNames) {
  KvType t = KvType::kF32;
  EXPECT_TRUE(cpu::parse_kv_type("f16", &t));
  EXPECT_EQ(t, KvType::kF16);
  EXPECT_TRUE(cpu::parse_kv_type("f32", &t));
  EXPECT_EQ(t, KvType::kF32);
  EXPECT_FALSE(cpu::parse_kv_type("q8_0", &t));
  EXPECT_FALSE(cpu::parse_kv_type("F16", &t));
  EXPECT_EQ(cpu::kv_type_bytes(KvType::kF16), 2u);
  EXPECT_EQ(cpu::kv_type_bytes(KvType::kF32), 4u);
}

// session_kv_bytes (what the residency planner sets aside) and Session::kv_cache_bytes per type.
TEST(KvBytes, ExactForEachType) {
  LlamaHparams hp;  // the 1b shape's attention: 16 layers, 8 KV heads of 64
  hp.n_layer = 16;
  hp.n_embd = 2048;
  hp.n_head = 32;
  hp.n_head_kv = 8;
  // 2 (K, V) x 16 layers x 4096 positions x 512 x 2 sequences x element bytes
  EXPECT_EQ(session_kv_bytes(hp, 4096, 2, KvType::kF16), 268435456u);
  EXPECT_EQ(session_kv_bytes(hp, 4096, 2, KvType::kF32), 536870912u);
  EXPECT_EQ(session_kv_bytes(hp, 4096, 2), 268435456u);  // F16 by default
  hp.attn_chunk = 1024;  // Llama 4: rope layers hold one chunk, every 4th layer (NoPE) the context
  hp.nope_every = 4;
  EXPECT_EQ(session_kv_bytes(hp, 4096, 1, KvType::kF16), 2u * (12 * 1024 + 4 * 4096) * 512 * 2);
  EXPECT_EQ(session_kv_bytes(hp, 4096, 1, KvType::kF32), 2u * (12 * 1024 + 4 * 4096) * 512 * 4);

  test::TempDir dir;
  const synth::SynthOptions o = test::synth_options("llama4-tiny", synth::FileType::Q8_0, dir.file("l4.gguf"));
  ASSERT_TRUE(synth::synth_model(o).ok());
  auto m = Model::open(o.out_path);
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  auto p = MemoryProvider::load(**m);
  ASSERT_TRUE(p.ok());
  const auto& mhp = (*m)->hp;
  cpu::ThreadPool pool(2);
  for (KvType t : {KvType::kF16, KvType::kF32}) {
    Session s(**m, p->get(), &pool, 64, 3, true, t);
    EXPECT_EQ(s.kv_type(), t);
    EXPECT_EQ(s.kv_cache_bytes(), session_kv_bytes(mhp, 64, 3, t)) << cpu::kv_type_name(t);
  }
  Session f16(**m, p->get(), &pool, 64, 3, true, KvType::kF16);
  Session f32(**m, p->get(), &pool, 64, 3, true, KvType::kF32);
  EXPECT_EQ(2 * f16.kv_cache_bytes(), f32.kv_cache_bytes());
  std::vector<float> logits;
  ASSERT_TRUE(f16.eval({1, 2, 3}, &logits, false).ok());  // and the cache is used, not just sized
}

// The F16 cache against the F32 cache on every dense reference model (the F16 cache is llama.cpp's
// default, the reference logits were made with it). F16 keeps 11 significant bits of keys and values:
// on the F16 model (F16 activations) the logits differ by NMSE ~2e-7 (bound 1e-6), BF16 ~1e-5 (bound
// 5e-5). Quantized models quantize every activation to 8 bits before each matmul, so any perturbation
// re-rolls that rounding: their F16-vs-F32 NMSE, 1.2e-4 .. 3.1e-4 measured, is the size of their own
// quantization noise (llama.cpp vs exact math is up to 1.6e-4 for Q8_0), bound 1e-3. The argmax
// must agree except at near-ties (top two within kTie of each other in the F32 run; flips seen
// on Q5_K_M, Q2_K, Q5_1 and IQ4_XS rows, the widest 0.061).
constexpr float kTie = 0.1f;
TEST(KvCacheType, F16LogitsMatchF32OnReferenceModels) {
  if (!test::reference_available()) GTEST_SKIP() << "reference data not found at " << test::reference_dir();
  cpu::ThreadPool pool(2);
  int n_cases = 0;
  for (const test::ReferenceCase& rc : test::reference_cases(/*with_experts=*/false)) {
    auto m = Model::open(rc.path);
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    auto p = MemoryProvider::load(**m);
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    const int64_t V = (*m)->hp.n_vocab;
    for (const auto& prompt : rc.c["prompts"]) {
      const auto tokens = prompt["tokens"].get<std::vector<int32_t>>();
      std::vector<float> a, b;
      Session f16(**m, p->get(), &pool, static_cast<int64_t>(tokens.size()), 1, true, KvType::kF16);
      Session f32(**m, p->get(), &pool, static_cast<int64_t>(tokens.size()), 1, true, KvType::kF32);
      ASSERT_TRUE(f16.eval(tokens, &a, true).ok());
      ASSERT_TRUE(f32.eval(tokens, &b, true).ok());
      ASSERT_EQ(a.size(), b.size());
      double err = 0, norm = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        err += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
        norm += static_cast<double>(b[i]) * b[i];
      }
      // Top-1 must agree wherever the F32 run's winner leads its runner-up by more than kTie.
      int agree = 0;
      for (size_t t = 0; t < tokens.size(); ++t) {
        const float* fa = &a[t * V];
        const float* fb = &b[t * V];
        const int32_t ia = argmax(fa, V), ib = argmax(fb, V);
        agree += ia == ib;
        EXPECT_TRUE(ia == ib || fb[ib] - fb[ia] <= kTie)
            << rc.path << " position " << t << ": f16 picks " << ia << ", f32 " << ib << " by " << fb[ib] - fb[ia];
      }
      const std::string type = rc.c["file_type"].get<std::string>();
      const double bound = type == "F16" ? 1e-6 : type == "BF16" ? 5e-5 : 1e-3;
      std::printf("[ %s ] len %zu: f16 vs f32 cache nmse %.3e (bound %.0e), top-1 %d/%zu\n", rc.path.c_str(),
                  tokens.size(), err / norm, bound, agree, tokens.size());
      EXPECT_LE(err / norm, bound) << rc.path;
      ++n_cases;
    }
  }
  EXPECT_GT(n_cases, 0);
}

}  // namespace
}  // namespace flea
