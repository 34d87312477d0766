// reusable_prefix: how much of the KV cache flea chat keeps for the next turn's prompt.
#include "chat/prompt_cache.h"

#include <gtest/gtest.h>

namespace flea::chat {
namespace {

TEST(PromptCache, EmptyCacheKeepsNothing) {
  EXPECT_EQ(reusable_prefix({}, {1, 2, 3}), 0u);
}

TEST(PromptCache, CacheThatPrefixesThePromptIsKeptWhole) {
  EXPECT_EQ(reusable_prefix({1, 2, 3}, {1, 2, 3, 4, 5}), 3u);
}

TEST(PromptCache, DivergenceKeepsTheCommonPrefix) {
  // e.g. the template trims the reply, or the reply re-tokenizes differently: cut back to position 2.
  EXPECT_EQ(reusable_prefix({1, 2, 3, 4}, {1, 2, 9, 4, 5}), 2u);
  EXPECT_EQ(reusable_prefix({7, 2}, {1, 2}), 0u);
}

TEST(PromptCache, AtLeastOneTokenIsLeftToEvaluate) {
  EXPECT_EQ(reusable_prefix({1, 2, 3}, {1, 2, 3}), 2u);     // same prompt again
  EXPECT_EQ(reusable_prefix({1, 2, 3, 4}, {1, 2}), 1u);     // a shorter prompt inside the cache
  EXPECT_EQ(reusable_prefix({1}, {}), 0u);
}

}  // namespace
}  // namespace flea::chat
