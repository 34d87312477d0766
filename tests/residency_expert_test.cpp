// Expert-granular residency: a streamed MoE layer reads its dense part ahead and only the routed
// experts after routing. Logits are bit-identical to full residency for every I/O backend, prefetch
// depth, cache size and policy (Mixtral-style and Llama 4 layouts, prompt batches and decoding);
// the bytes read are exactly the dense parts plus the missed experts; the plan states them; the
// caches evict in their stated order; errors name what went wrong.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "compute/cpu/thread_pool.h"
#include "model/llama.h"
#include "model/synth.h"
#include "residency/options.h"
#include "residency/plan.h"
#include "residency/provider.h"
#include "residency/telemetry.h"
#include "test_util.h"

namespace flea {
namespace {

// A synthetic model written once per suite into a temp dir.
std::string synth_file(const test::TempDir& dir, const std::string& preset, synth::FileType type) {
  const synth::SynthOptions o = test::synth_options(preset, type, dir.file(preset + ".gguf"));
  const Status st = synth::synth_model(o);
  EXPECT_TRUE(st.ok()) << st.to_string();
  return o.out_path;
}

struct RunResult {
  std::vector<float> logits;  // the prompt's rows, then each decoded token's row
  Plan plan;
  uint64_t read_bytes = 0;    // during the decoded tokens (after the prompt)
  int64_t hits = 0, misses = 0;
  std::vector<std::vector<int64_t>> routed;  // ForwardStats::expert_rows over the decoded tokens
};

// A prompt in one batch, then `n_decode` tokens one at a time (each the previous row's argmax).
RunResult run_with(const Model& m, const ResidencyOptions& opts, int n_decode, cpu::ThreadPool* pool) {
  RunResult r;
  auto plan = plan_residency(m.file, m.layout, opts, nullptr);
  EXPECT_TRUE(plan.ok()) << plan.status().to_string();
  if (!plan.ok()) return r;
  r.plan = *plan;
  Telemetry tel;
  auto provider = make_provider(m.file.path, m.file, m.layout, *plan, opts, &tel);
  EXPECT_TRUE(provider.ok()) << provider.status().to_string();
  if (!provider.ok()) return r;
  const std::vector<int32_t> prompt = {1, 17, 33, 250, 9, 120, 64, 3};
  Session s(m, provider->get(), pool, static_cast<int64_t>(prompt.size() + n_decode) + 1);
  std::vector<float> out;
  Status st = s.eval(prompt, &out, true);
  EXPECT_TRUE(st.ok()) << st.to_string();
  r.logits = out;
  (*provider)->wait_idle();
  tel.reset();
  s.stats().reset(m.hp.n_layer);
  int32_t tok = argmax(&out[out.size() - static_cast<size_t>(m.hp.n_vocab)], m.hp.n_vocab);
  for (int i = 0; i < n_decode && st.ok(); ++i) {
    st = s.eval({tok}, &out, false);
    EXPECT_TRUE(st.ok()) << st.to_string();
    r.logits.insert(r.logits.end(), out.begin(), out.end());
    tok = argmax(out.data(), m.hp.n_vocab);
  }
  (*provider)->wait_idle();
  r.read_bytes = tel.read_bytes();
  r.hits = tel.expert_hits();
  r.misses = tel.expert_misses();
  r.routed = s.stats().expert_rows;
  return r;
}

class ExpertStreaming : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    moe_ = synth_file(*dir_, "moe-tiny", synth::FileType::Q4_K_M);
    l4_ = synth_file(*dir_, "llama4-tiny", synth::FileType::Q8_0);
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static test::TempDir* dir_;
  static std::string moe_, l4_;
};
test::TempDir* ExpertStreaming::dir_ = nullptr;
std::string ExpertStreaming::moe_, ExpertStreaming::l4_;

ResidencyOptions transient(const std::string& io, int prefetch, int cache, const std::string& policy) {
  ResidencyOptions o;
  o.residency = "transient";
  o.io = io;
  o.prefetch = prefetch;
  o.expert_cache = cache;
  o.expert_policy = policy;
  return o;
}

TEST_F(ExpertStreaming, BitIdenticalToFullForEveryBackendPrefetchCacheAndPolicy) {
  cpu::ThreadPool pool(2);
  std::vector<std::string> backends = {"pread", "odirect", "mmap"};
#ifdef FLEA_HAVE_IO_URING
  backends.push_back("io_uring");
#endif
  for (const std::string& path : {moe_, l4_}) {
    auto m = Model::open(path);
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    const int n_expert = static_cast<int>((*m)->hp.n_expert);
    const RunResult want = run_with(**m, ResidencyOptions{}, 6, &pool);
    ASSERT_FALSE(want.logits.empty());
    for (const std::string& io : backends) {
      for (int prefetch : {0, 2}) {
        for (int cache : {0, 1, n_expert}) {
          for (const std::string policy : {"lru", "lfu"}) {
            const RunResult got = run_with(**m, transient(io, prefetch, cache, policy), 6, &pool);
            const std::string what = path + " io " + io + " prefetch " + std::to_string(prefetch) + " cache " +
                                     std::to_string(cache) + " " + policy;
            ASSERT_GT(got.plan.n_expert_layers, 0) << what;
            ASSERT_EQ(got.logits.size(), want.logits.size()) << what;
            EXPECT_EQ(std::memcmp(got.logits.data(), want.logits.data(), want.logits.size() * sizeof(float)), 0) << what;
            EXPECT_EQ(got.routed, want.routed) << what;
          }
        }
      }
    }
    // The layer-granular baseline reads every expert with its layer, and agrees too.
    ResidencyOptions layer = transient("pread", 1, -1, "lru");
    layer.expert_residency = "layer";
    const RunResult got = run_with(**m, layer, 6, &pool);
    EXPECT_EQ(got.plan.n_expert_layers, 0);
    EXPECT_EQ(std::memcmp(got.logits.data(), want.logits.data(), want.logits.size() * sizeof(float)), 0);
  }
}

// Per decoded token: every streamed layer's dense part, plus each routed expert that missed.
TEST_F(ExpertStreaming, BytesReadAreDensePartsPlusMissedExpertsExactly) {
  cpu::ThreadPool pool(2);
  auto m = Model::open(moe_);
  ASSERT_TRUE(m.ok());
  const int n_decode = 5;
  const int64_t k = (*m)->hp.n_expert_used;
  // No cache: every routed expert of every token is read.
  const RunResult none = run_with(**m, transient("pread", 1, 0, "lru"), n_decode, &pool);
  uint64_t expected = static_cast<uint64_t>(n_decode) * none.plan.dense_bytes_per_token;
  int64_t routed = 0;
  for (const LayerPlan& lp : none.plan.layers) {
    ASSERT_TRUE(lp.experts_streamed);
    for (int e = 0; e < lp.n_expert; ++e) {
      const int64_t n = none.routed[static_cast<size_t>(lp.layer)][static_cast<size_t>(e)];
      routed += n;
      uint64_t one = 0;
      for (const ReadSpan& s : expert_read(lp, e).spans) one += std::min(s.length, (*m)->file.file_size - s.file_offset);
      expected += static_cast<uint64_t>(n) * one;
    }
  }
  EXPECT_EQ(routed, n_decode * k * (*m)->hp.n_layer);
  EXPECT_EQ(none.hits, 0);
  EXPECT_EQ(none.misses, routed);
  EXPECT_EQ(none.read_bytes, expected);
  // Every expert cached: after the prompt touched them all, decoding reads only the dense parts.
  const RunResult all = run_with(**m, transient("pread", 1, static_cast<int>((*m)->hp.n_expert), "lru"), n_decode, &pool);
  EXPECT_EQ(all.misses, 0);
  EXPECT_EQ(all.hits, routed);
  EXPECT_EQ(all.read_bytes, static_cast<uint64_t>(n_decode) * all.plan.dense_bytes_per_token);
}

TEST_F(ExpertStreaming, PlanStatesDenseAndExpertBytesAndSizesTheCacheFromTheBudget) {
  auto m = Model::open(moe_);
  ASSERT_TRUE(m.ok());
  const Model& model = **m;
  auto p = plan_residency(model.file, model.layout, transient("pread", 1, -1, "lru"), nullptr);
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  const int k = static_cast<int>(model.hp.n_expert_used), n = static_cast<int>(model.hp.n_expert);
  EXPECT_EQ(p->n_expert, n);
  EXPECT_EQ(p->n_expert_used, k);
  EXPECT_EQ(p->n_expert_layers, model.hp.n_layer);
  EXPECT_EQ(p->expert_cache_slots, 0) << "no budget: no cache";
  EXPECT_EQ(p->expert_scratch_slots, k);
  uint64_t dense = 0, experts = 0, slot = 0;
  for (const LayerPlan& lp : p->layers) {
    // The dense part's spans reach into an expert tensor only up to the 4096-byte boundary.
    for (LayerTensor t : {LayerTensor::kFfnGateExps, LayerTensor::kFfnUpExps, LayerTensor::kFfnDownExps}) {
      EXPECT_EQ(lp.buffer_offset[static_cast<int>(t)], kNotInBuffer);
      const gguf::TensorInfo* ti = model.layout.layers[static_cast<size_t>(lp.layer)][static_cast<int>(t)];
      for (const ReadSpan& s : lp.spans)
        EXPECT_TRUE(s.file_offset + s.length <= io::align_up(ti->file_offset) ||
                    s.file_offset >= io::align_down(ti->file_offset + ti->n_bytes))
            << "layer " << lp.layer << " dense span overlaps " << ti->name;
      // Expert e's slab lies inside its read.
      for (int e = 0; e < n; ++e) {
        const ExpertRead r = expert_read(lp, e);
        const size_t mi = static_cast<size_t>(t) - static_cast<size_t>(LayerTensor::kFfnGateExps);
        const uint64_t off = ti->file_offset + static_cast<uint64_t>(e) * (ti->n_bytes / static_cast<uint64_t>(n));
        EXPECT_EQ(r.spans[mi].file_offset + (r.data_offset[mi] - r.spans[mi].buffer_offset), off);
        EXPECT_LE(r.data_offset[mi] + ti->n_bytes / static_cast<uint64_t>(n), r.spans[mi].buffer_offset + r.spans[mi].length);
        slot = std::max(slot, r.buffer_bytes);
      }
    }
    dense += lp.read_bytes;
    experts += static_cast<uint64_t>(k) * lp.expert_read_bytes;
  }
  EXPECT_EQ(p->dense_bytes_per_token, dense);
  EXPECT_EQ(p->expert_bytes_per_token, experts);
  EXPECT_EQ(p->streamed_bytes_per_token, dense + experts);
  EXPECT_EQ(p->expert_slot_bytes, slot);
  EXPECT_EQ(p->expert_pool_bytes, static_cast<uint64_t>(k) * slot);

  // A budget: ring, scratch experts, then the dense parts cached, then the expert cache.
  const uint64_t mib = 1 << 20;
  const uint64_t ring_and_scratch = 2 * p->slot_bytes + static_cast<uint64_t>(k) * slot;
  const uint64_t all_dense = dense;
  const int64_t budget_mb = static_cast<int64_t>((ring_and_scratch + all_dense + 2 * p->n_expert_layers * slot) / mib + 1);
  ResidencyOptions b = transient("pread", 1, -1, "lru");
  b.ram_budget_mb = budget_mb;
  auto q = plan_residency(model.file, model.layout, b, nullptr);
  ASSERT_TRUE(q.ok()) << q.status().to_string();
  EXPECT_EQ(q->n_cached, model.hp.n_layer) << "every dense part is cached first";
  EXPECT_GE(q->expert_cache_per_layer, 2);
  EXPECT_LE(q->host_staging_bytes, static_cast<uint64_t>(budget_mb) * mib);
  EXPECT_DOUBLE_EQ(q->predicted_expert_hit_rate,
                   static_cast<double>(q->expert_cache_slots) / (n * static_cast<double>(q->n_expert_layers)));
  // The slots are shared out evenly: the layers' caches differ by at most one and add up.
  int sum = 0, lo = n, hi = 0;
  for (const LayerPlan& lp : q->layers) {
    sum += lp.expert_cache;
    lo = std::min(lo, lp.expert_cache);
    hi = std::max(hi, lp.expert_cache);
  }
  EXPECT_EQ(sum, q->expert_cache_slots);
  EXPECT_LE(hi - lo, 1);
  EXPECT_EQ(q->streamed_bytes_per_token,
            static_cast<uint64_t>(std::llround((1.0 - q->predicted_expert_hit_rate) * static_cast<double>(experts))));
  // With every dense part cached the ring is gone, and the expert cache takes what is left.
  ASSERT_EQ(q->ring_slots, 0);
  EXPECT_EQ(static_cast<uint64_t>(q->expert_cache_slots),
            std::min<uint64_t>(static_cast<uint64_t>(n) * q->n_expert_layers,
                               (static_cast<uint64_t>(budget_mb) * mib - q->cache_bytes - static_cast<uint64_t>(k) * slot) / slot));
  // An odd number of slots over two layers: the first layer takes the extra one.
  bool odd_seen = false;
  for (int64_t mb = budget_mb - 2; mb <= budget_mb + 2 && !odd_seen; ++mb) {
    b.ram_budget_mb = mb;
    auto r = plan_residency(model.file, model.layout, b, nullptr);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    if (r->expert_cache_slots % 2 == 0) continue;
    odd_seen = true;
    EXPECT_EQ(r->layers[0].expert_cache, r->layers[1].expert_cache + 1);
  }
  EXPECT_TRUE(odd_seen) << "no budget near " << budget_mb << " MiB gave an odd slot count";
  // Too small a budget names what it needs and the minimum.
  b.expert_cache = n;
  b.ram_budget_mb = 1;
  auto tiny = plan_residency(model.file, model.layout, b, nullptr);
  ASSERT_FALSE(tiny.ok());
  EXPECT_EQ(tiny.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(tiny.status().message().find("expert buffers"), std::string::npos) << tiny.status().message();
  EXPECT_NE(tiny.status().message().find("minimum --ram-budget-mb"), std::string::npos) << tiny.status().message();
  // Full residency and the layer-granular baseline stream no experts one by one.
  for (const std::string mode : {"full-expert", "transient-layer"}) {
    ResidencyOptions o;
    o.residency = mode == "full-expert" ? "full" : "transient";
    o.expert_residency = mode == "full-expert" ? "expert" : "layer";
    auto r = plan_residency(model.file, model.layout, o, nullptr);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->n_expert_layers, 0) << mode;
    EXPECT_EQ(r->expert_pool_bytes, 0u) << mode;
  }
}

// Drives the provider directly: layer 0, one expert per step, cache of one expert per layer.
class ExpertCacheOrder : public ExpertStreaming {
 protected:
  // Hit (true) or miss per step.
  std::vector<bool> steps(const std::string& policy, const std::vector<int>& experts) {
    auto m = Model::open(moe_);
    EXPECT_TRUE(m.ok());
    ResidencyOptions o = transient("pread", 0, 1, policy);
    auto plan = plan_residency((*m)->file, (*m)->layout, o, nullptr);
    EXPECT_TRUE(plan.ok());
    Telemetry tel;
    auto p = make_provider((*m)->file.path, (*m)->file, (*m)->layout, *plan, o, &tel);
    EXPECT_TRUE(p.ok());
    std::vector<bool> hit;
    std::vector<ExpertSlabs> slabs;
    for (int e : experts) {
      auto w = (*p)->acquire(0);
      EXPECT_TRUE(w.ok());
      EXPECT_EQ((*w)[LayerTensor::kFfnGateExps], nullptr);
      const int64_t h0 = tel.expert_hits();
      const Status st = (*p)->acquire_experts(0, {e}, &slabs);
      EXPECT_TRUE(st.ok()) << st.to_string();
      // The slabs are the file's bytes.
      const gguf::TensorInfo* up = (*m)->layout.layers[0][static_cast<int>(LayerTensor::kFfnUpExps)];
      const uint64_t n = up->n_bytes / static_cast<uint64_t>((*m)->hp.n_expert);
      const std::vector<uint8_t> file = test::read_bytes((*m)->file.path);
      EXPECT_EQ(std::memcmp(slabs[0].up, file.data() + up->file_offset + static_cast<uint64_t>(e) * n, n), 0);
      hit.push_back(tel.expert_hits() > h0);
      (*p)->release(0);
    }
    return hit;
  }
};

TEST_F(ExpertCacheOrder, LruKeepsTheMostRecentLfuTheMostOftenRouted) {
  // LRU with one slot: the last expert used stays.
  EXPECT_EQ(steps("lru", {0, 0, 1, 0, 0}), (std::vector<bool>{false, true, false, false, true}));
  // LFU: expert 1 does not displace expert 0 until it has been routed to more often (4 > 3 times);
  // until then it is read into a scratch buffer each time and 0 stays a hit.
  EXPECT_EQ(steps("lfu", {0, 0, 1, 0, 1, 1, 1, 1}),
            (std::vector<bool>{false, true, false, true, false, false, false, true}));
}

TEST_F(ExpertStreaming, ErrorsNameTheLayerAndExpert) {
  auto m = Model::open(moe_);
  ASSERT_TRUE(m.ok());
  ResidencyOptions o = transient("pread", 0, 0, "lru");
  auto plan = plan_residency((*m)->file, (*m)->layout, o, nullptr);
  ASSERT_TRUE(plan.ok());
  {
    auto p = make_provider((*m)->file.path, (*m)->file, (*m)->layout, *plan, o, nullptr);
    ASSERT_TRUE(p.ok());
    ASSERT_TRUE((*p)->acquire(1).ok());
    std::vector<ExpertSlabs> slabs;
    const Status over = (*p)->acquire_experts(1, {0, 1, 2}, &slabs);
    EXPECT_EQ(over.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(over.message().find("at most 2"), std::string::npos) << over.message();
    const Status range = (*p)->acquire_experts(1, {9}, &slabs);
    EXPECT_EQ(range.code(), StatusCode::kOutOfRange);
    EXPECT_NE(range.message().find("expert 9"), std::string::npos) << range.message();
    (*p)->release(1);
  }
  // A read error on an expert fails the forward pass with the file offset and layer; the fault
  // fired once, so the next pass reads the expert and agrees with full residency.
  const LayerPlan& lp = plan->layers[1];
  o.fault_plan = "eio@" + std::to_string(expert_read(lp, 3).spans[1].file_offset + 100);
  o.prefetch = 1;
  auto plan2 = plan_residency((*m)->file, (*m)->layout, o, nullptr);
  auto p = make_provider((*m)->file.path, (*m)->file, (*m)->layout, *plan2, o, nullptr);
  ASSERT_TRUE(p.ok());
  cpu::ThreadPool pool(2);
  Session s(**m, p->get(), &pool, 64);
  std::vector<float> got;
  Status st = ok_status();
  // Prompt rows route to every expert, so expert 3 of layer 1 is read.
  const std::vector<int32_t> prompt = {1, 17, 33, 250, 9, 120, 64, 3};
  st = s.eval(prompt, &got, true);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kIoError);
  EXPECT_NE(st.message().find("layer 1"), std::string::npos) << st.message();
  s.reset();
  st = s.eval(prompt, &got, true);
  ASSERT_TRUE(st.ok()) << st.to_string();
  cpu::ThreadPool pool2(2);
  const RunResult want = run_with(**m, ResidencyOptions{}, 0, &pool2);
  ASSERT_EQ(got.size(), want.logits.size());
  EXPECT_EQ(std::memcmp(got.data(), want.logits.data(), got.size() * sizeof(float)), 0);
}

}  // namespace
}  // namespace flea
