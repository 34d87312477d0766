// Llama 4's chunked-attention layers keep a KV cache of one chunk (attn_chunk positions), not the
// context: logits are bit-identical to an unbounded cache across chunk boundaries (one batch that
// spans several chunks, token-by-token decoding, two sequences in one batch), the cache is that much
// smaller, and a rollback into an overwritten chunk is refused.
#include <gtest/gtest.h>

#include <cstring>

#include "compute/cpu/thread_pool.h"
#include "model/llama.h"
#include "model/memory_provider.h"
#include "model/synth.h"
#include "test_util.h"

namespace flea {
namespace {

class ChunkedKv : public ::testing::Test {
 protected:
  void SetUp() override {
    const synth::SynthOptions o = test::synth_options("llama4-tiny", synth::FileType::Q8_0, dir_.file("l4.gguf"));
    ASSERT_TRUE(synth::synth_model(o).ok());
    auto m = Model::open(o.out_path);
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    model_ = std::move(*m);
    model_->hp.attn_chunk = kChunk;  // a chunk short enough to cross many times in a test
    auto p = MemoryProvider::load(*model_);
    ASSERT_TRUE(p.ok());
    provider_ = std::move(*p);
  }
  static constexpr int64_t kChunk = 8;
  static constexpr int64_t kCtx = 64;
  std::vector<int32_t> tokens(int n, int salt) const {
    std::vector<int32_t> t;
    for (int i = 0; i < n; ++i) t.push_back(static_cast<int32_t>((i * 37 + salt * 11 + 5) % model_->hp.n_vocab));
    return t;
  }
  test::TempDir dir_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<MemoryProvider> provider_;
  cpu::ThreadPool pool_{2};
  // The bounded cache splits a prompt at chunk boundaries; bit-identity across batch splits holds
  // for the per-row dots, not for the tile matmul of batches >= amx::min_tokens(type).
  test::AmxOff vnni_only_;
};

TEST_F(ChunkedKv, BoundedCacheMatchesUnboundedAcrossChunks) {
  Session bounded(*model_, provider_.get(), &pool_, kCtx, 2, true);
  Session full(*model_, provider_.get(), &pool_, kCtx, 2, false);
  // Rope layers hold kChunk positions, NoPE layers the context.
  const auto& hp = model_->hp;
  uint64_t want = 0;
  for (int64_t il = 0; il < hp.n_layer; ++il)
    want += 2 * static_cast<uint64_t>((hp.uses_rope(il) ? kChunk : kCtx) * hp.n_embd_kv() * 2) * sizeof(uint16_t);  // F16
  EXPECT_EQ(bounded.kv_cache_bytes(), want);
  EXPECT_LT(bounded.kv_cache_bytes(), full.kv_cache_bytes());

  // One prompt over three chunks (21 positions), every row's logits.
  const std::vector<int32_t> prompt = tokens(21, 0);
  std::vector<float> a, b;
  ASSERT_TRUE(bounded.eval(prompt, &a, true).ok());
  ASSERT_TRUE(full.eval(prompt, &b, true).ok());
  ASSERT_EQ(a.size(), b.size());
  ASSERT_EQ(a.size(), prompt.size() * static_cast<size_t>(hp.n_vocab));
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
  // Then token by token into the fourth and fifth chunks.
  for (int32_t tok : tokens(19, 1)) {
    ASSERT_TRUE(bounded.eval({tok}, &a, false).ok());
    ASSERT_TRUE(full.eval({tok}, &b, false).ok());
    ASSERT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << "at position " << bounded.n_past();
  }
  // Two sequences in one batch, at different offsets into their chunks.
  std::vector<BatchRow> rows;
  for (int32_t tok : tokens(13, 2)) rows.push_back({1, tok});
  for (int32_t tok : tokens(3, 3)) rows.push_back({0, tok});
  ASSERT_TRUE(bounded.eval_batch(rows, &a, true).ok());
  ASSERT_TRUE(full.eval_batch(rows, &b, true).ok());
  ASSERT_EQ(a.size(), rows.size() * static_cast<size_t>(hp.n_vocab));
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
}

TEST_F(ChunkedKv, RollbackIntoAnOverwrittenChunkIsRefused) {
  Session s(*model_, provider_.get(), &pool_, kCtx);
  std::vector<float> out;
  ASSERT_TRUE(s.eval(tokens(11, 0), &out, false).ok());  // positions 0..10: chunk 1 holds 8..10
  EXPECT_TRUE(s.truncate(0, 9).ok());                     // inside the newest chunk
  EXPECT_TRUE(s.truncate(0, 8).ok());                     // its start: nothing before it is needed
  const Status st = s.truncate(0, 8);
  EXPECT_TRUE(st.ok());
  ASSERT_TRUE(s.eval(tokens(3, 1), &out, false).ok());    // 8..10 again
  const Status back = s.truncate(0, 5);                   // chunk 0, partly overwritten
  EXPECT_EQ(back.code(), StatusCode::kUnimplemented);
  EXPECT_NE(back.message().find("chunk"), std::string::npos) << back.message();
  EXPECT_EQ(s.n_past(), 11);
}

}  // namespace
}  // namespace flea
