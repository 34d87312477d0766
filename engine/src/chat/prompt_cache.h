// Reusing the KV cache across chat turns: the next turn's prompt usually starts with every token
// already in the cache (the previous prompt and reply), so only the rest needs evaluating.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace flea::chat {

// How many leading tokens of `cached` (the tokens in the KV cache, by position) the evaluation of
// `prompt` can keep: their longest common prefix, but at least one prompt token is left to
// evaluate, since its logits start the reply. Fewer than cached.size() means the cache must be
// cut back (or, where the backend cannot, cleared) before evaluating prompt[result..].
size_t reusable_prefix(const std::vector<int32_t>& cached, const std::vector<int32_t>& prompt);

}  // namespace flea::chat
