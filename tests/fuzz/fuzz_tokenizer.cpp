// libFuzzer target: the SentencePiece tokenizer on arbitrary bytes, with the LLaMA vocabulary
// from ../shared/reference (or $FLEA_FUZZ_VOCAB). Ids stay in range, and valid UTF-8 round-trips.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "fuzz_vocab.h"

namespace {

const flea::Tokenizer* tokenizer() {
  static std::unique_ptr<flea::Tokenizer> tok =
      flea::fuzz::load_vocab("FLEA_FUZZ_VOCAB", FLEA_FUZZ_VOCAB_DEFAULT, "fuzz_tokenizer");
  return tok.get();
}

bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const flea::Tokenizer* tok = tokenizer();
  const std::string text(reinterpret_cast<const char*>(data), size);
  const auto ids = tok->encode(text, false);
  for (int32_t id : ids) {
    if (id < 0 || id >= tok->n_vocab()) __builtin_trap();
  }
  const std::string back = tok->decode(ids);
  // SentencePiece writes spaces as U+2581, so a literal U+2581 in the text reads back as a space.
  std::string expected = text;
  for (size_t at; (at = expected.find("\xE2\x96\x81")) != std::string::npos;) expected.replace(at, 3, " ");
  if (valid_utf8(text) && text.find('\0') == std::string::npos && back != expected) __builtin_trap();
  // parse_special (<s>, </s>, <unk> as tokens): ids stay in range too.
  for (int32_t id : tok->encode(text, false, /*parse_special=*/true)) {
    if (id < 0 || id >= tok->n_vocab()) __builtin_trap();
  }
  return 0;
}
