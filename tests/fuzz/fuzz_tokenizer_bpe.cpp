// libFuzzer target: the byte-level BPE tokenizer on arbitrary bytes, with the Llama 3 vocabulary
// from ../shared/reference (or $FLEA_FUZZ_BPE_VOCAB, e.g. the GPT-2 one). Properties: no crash, ids
// in range with and without parse_special, and strictly valid UTF-8 round-trips (invalid bytes read
// as U+FFFD, as in llama.cpp, so they do not).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "fuzz_vocab.h"

namespace {

const flea::Tokenizer* tokenizer() {
  static std::unique_ptr<flea::Tokenizer> tok = [] {
    auto t = flea::fuzz::load_vocab("FLEA_FUZZ_BPE_VOCAB", FLEA_FUZZ_BPE_VOCAB_DEFAULT, "fuzz_tokenizer_bpe");
    if (!t->is_byte_level()) std::abort();  // this target is for byte-level BPE vocabularies
    return t;
  }();
  return tok.get();
}

// Well-formed UTF-8: shortest forms only, no surrogates, nothing above U+10FFFF.
bool strictly_valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t k = 1; k < n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const flea::Tokenizer* tok = tokenizer();
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (bool parse_special : {false, true}) {
    const auto ids = tok->encode(text, false, parse_special);
    for (int32_t id : ids) {
      if (id < 0 || id >= tok->n_vocab()) __builtin_trap();
    }
    // Control tokens decode to nothing, so only plain text must come back unchanged.
    if (!parse_special && strictly_valid_utf8(text) && tok->decode(ids) != text) __builtin_trap();
  }
  return 0;
}
