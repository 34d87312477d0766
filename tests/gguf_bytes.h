// Little-endian byte builder for hand-made GGUF files (crafted headers, tensor infos, hostile
// counts), shared by the GGUF reader and resource-bound tests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "gguf/gguf.h"

namespace flea::test {

struct Bytes {
  std::vector<uint8_t> b;
  template <typename T> Bytes& put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    b.insert(b.end(), p, p + sizeof(T));
    return *this;
  }
  // A GGUF string: u64 length, then the bytes.
  Bytes& str(const std::string& s) {
    put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& raw(const Bytes& o) {
    b.insert(b.end(), o.b.begin(), o.b.end());
    return *this;
  }
  // GGUF v3 header claiming these counts.
  Bytes& header(uint64_t n_tensors, uint64_t n_kv) {
    return put<uint32_t>(gguf::kMagic).put<uint32_t>(3).put<uint64_t>(n_tensors).put<uint64_t>(n_kv);
  }
  // Trailing zero bytes (so "remaining bytes" checks have something to compare against).
  Bytes& pad(size_t n) {
    b.resize(b.size() + n, 0);
    return *this;
  }
};

}  // namespace flea::test
