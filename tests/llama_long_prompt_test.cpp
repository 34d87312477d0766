// Llama 4 past one attention chunk: the reference l4 model over an 8292-token prompt (chunk 8192), in
// one batch, against llama.cpp's last rows (tests/fixtures/l4_long, made by the 2026 llama.cpp the l4
// reference came from). The chunked layers' last rows see only positions 8192.., the NoPE layer all of
// them; the chunk-bounded KV cache holds 8192 positions for the chunked layers.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "compute/cpu/thread_pool.h"
#include "model/llama.h"
#include "model/memory_provider.h"
#include "test_util.h"

namespace flea {
namespace {

TEST(LlamaLongPrompt, L4LastRowsMatchLlamaCppPastOneChunk) {
  if (!test::reference_available()) GTEST_SKIP() << "reference data not found";
  const std::string fixture = test::source_dir() + "/tests/fixtures/l4_long/logits-last4.f32";
  const std::vector<float> want = test::read_f32(fixture);
  auto m = Model::open(test::reference_dir() + "/arch/l4-Q8_0.gguf");
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  const int64_t V = (*m)->hp.n_vocab;
  ASSERT_EQ(want.size(), static_cast<size_t>(4 * V)) << fixture;
  ASSERT_EQ((*m)->hp.attn_chunk, 8192);
  // BOS, then ids that avoid the special tokens (tests/fixtures/l4_long/make.sh writes the same).
  std::vector<int32_t> ids = {301};
  for (int i = 1; i < 8292; ++i) ids.push_back(1 + (i * 7919 + 17) % 300);
  auto p = MemoryProvider::load(**m);
  ASSERT_TRUE(p.ok());
  cpu::ThreadPool pool(2);
  Session s(**m, p->get(), &pool, static_cast<int64_t>(ids.size()));
  std::vector<float> got;
  const Status st = s.eval(ids, &got, true);
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_EQ(got.size(), ids.size() * static_cast<size_t>(V));
  for (int r = 0; r < 4; ++r) {
    const float* g = &got[(ids.size() - 4 + static_cast<size_t>(r)) * static_cast<size_t>(V)];
    const float* w = &want[static_cast<size_t>(r * V)];
    double err = 0, norm = 0;
    int64_t ag = 0, aw = 0;
    for (int64_t i = 0; i < V; ++i) {
      err += (static_cast<double>(g[i]) - w[i]) * (static_cast<double>(g[i]) - w[i]);
      norm += static_cast<double>(w[i]) * w[i];
      if (g[i] > g[ag]) ag = i;
      if (w[i] > w[aw]) aw = i;
    }
    // The Q8_0 bound of the arch/ reference cases.
    EXPECT_LE(err / norm, 5e-4) << "row " << ids.size() - 4 + static_cast<size_t>(r);
    EXPECT_EQ(ag, aw) << "row " << ids.size() - 4 + static_cast<size_t>(r);
  }
}

}  // namespace
}  // namespace flea
