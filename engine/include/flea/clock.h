// Monotonic time in nanoseconds: the one clock every timing in the engine and harness reads.
#pragma once

#include <chrono>
#include <cstdint>

namespace flea {

inline int64_t steady_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace flea
