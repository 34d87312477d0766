#include "chat/prompt_cache.h"

#include <algorithm>

namespace flea::chat {

size_t reusable_prefix(const std::vector<int32_t>& cached, const std::vector<int32_t>& prompt) {
  const size_t n = std::min(cached.size(), prompt.size());
  size_t keep = 0;
  while (keep < n && cached[keep] == prompt[keep]) ++keep;
  if (keep == prompt.size() && keep > 0) --keep;
  return keep;
}

}  // namespace flea::chat
