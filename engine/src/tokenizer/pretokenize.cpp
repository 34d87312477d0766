#include "tokenizer/pretokenize.h"

#include <unicode/uchar.h>

#include <array>

namespace flea::bpe {

namespace {

constexpr uint32_t kReplacement = 0xFFFD;
constexpr uint32_t kNone = 0xFFFFFFFF;  // "past the end": no class, matches nothing

// Per-code-point classes the regexes ask about.
enum : uint8_t {
  kLetter = 1 << 0,  // \p{L}
  kNumber = 1 << 1,  // \p{N}
  kSpace = 1 << 2,   // \s: the Unicode White_Space property, as llama.cpp and Python/Rust regex use it
  kUpperish = 1 << 3,  // [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]
  kLowerish = 1 << 4,  // [\p{Ll}\p{Lm}\p{Lo}\p{M}]
};

uint8_t classify_icu(uint32_t cp) {
  const auto c = static_cast<UChar32>(cp);
  uint8_t f = 0;
  switch (u_charType(c)) {
    case U_UPPERCASE_LETTER:
    case U_TITLECASE_LETTER:
      f = kLetter | kUpperish;
      break;
    case U_LOWERCASE_LETTER:
      f = kLetter | kLowerish;
      break;
    case U_MODIFIER_LETTER:
    case U_OTHER_LETTER:
      f = kLetter | kUpperish | kLowerish;
      break;
    case U_NON_SPACING_MARK:
    case U_ENCLOSING_MARK:
    case U_COMBINING_SPACING_MARK:
      f = kUpperish | kLowerish;
      break;
    case U_DECIMAL_DIGIT_NUMBER:
    case U_LETTER_NUMBER:
    case U_OTHER_NUMBER:
      f = kNumber;
      break;
    default:
      break;
  }
  if (u_isUWhiteSpace(c)) f |= kSpace;
  return f;
}

uint8_t classify(uint32_t cp) {
  static const std::array<uint8_t, 128> kAscii = [] {
    std::array<uint8_t, 128> t{};
    for (uint32_t c = 0; c < 128; ++c) t[c] = classify_icu(c);
    return t;
  }();
  return cp < 128 ? kAscii[cp] : classify_icu(cp);
}

// The text being split: code points, their classes, and the pieces cut so far.
class Splitter {
 public:
  explicit Splitter(const std::vector<uint32_t>& cps) : cps_(cps), n_(cps.size()), flags_(cps.size()) {
    for (size_t i = 0; i < n_; ++i) flags_[i] = classify(cps[i]);
    pieces_.reserve(n_ / 3 + 1);
  }

  size_t size() const { return n_; }
  uint32_t cp(size_t i) const { return i < n_ ? cps_[i] : kNone; }
  uint8_t flags(size_t i) const { return i < n_ ? flags_[i] : 0; }
  bool letter(size_t i) const { return flags(i) & kLetter; }
  bool number(size_t i) const { return flags(i) & kNumber; }
  bool space(size_t i) const { return flags(i) & kSpace; }
  bool crlf(size_t i) const { return cp(i) == '\r' || cp(i) == '\n'; }
  // [^\s\p{L}\p{N}]
  bool other(size_t i) const { return i < n_ && !(flags_[i] & (kSpace | kLetter | kNumber)); }
  // [^\r\n\p{L}\p{N}]
  bool prefix(size_t i) const { return i < n_ && !crlf(i) && !(flags_[i] & (kLetter | kNumber)); }

  // End of the longest run from i of code points that satisfy pred.
  template <typename Pred>
  size_t run(size_t i, Pred pred) const {
    while (i < n_ && pred(i)) ++i;
    return i;
  }

  // 's|'t|'re|'ve|'m|'ll|'d at i, ASCII case-folded when fold; returns the end or i.
  size_t contraction(size_t i, bool fold) const {
    if (cp(i) != '\'') return i;
    auto lower = [&](size_t k) { return fold && cp(k) >= 'A' && cp(k) <= 'Z' ? cp(k) + 32 : cp(k); };
    const uint32_t a = lower(i + 1);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    const uint32_t b = lower(i + 2);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    return i;
  }

  // \s*[\r\n]+|\s+(?!\S)|\s+ at i (with_crlf: the first alternative too); returns the end or i.
  size_t whitespace(size_t i, bool with_crlf) const {
    const size_t end = run(i, [&](size_t k) { return space(k); });
    if (end == i) return i;
    if (with_crlf) {
      // \s* backtracks to the last \r or \n of the run; [\r\n]+ then ends right after it.
      for (size_t k = end; k > i; --k) {
        if (crlf(k - 1)) return k;
      }
    }
    // \s+(?!\S): all of a run that ends the text; one short of a run followed by a non-space
    // (which then starts the next piece). A single space before a non-space is \s+ alone.
    if (end < n_ && end - i > 1) return end - 1;
    return end;
  }

  enum class Tail { kNone, kCrlf, kCrlfSlash };
  // ' ?[^\s\p{L}\p{N}]+' then the tail: nothing, [\r\n]* or [\r\n/]*; returns the end or i.
  size_t punctuation(size_t i, Tail tail) const {
    size_t k = cp(i) == ' ' && other(i + 1) ? i + 1 : i;
    if (!other(k)) return i;
    k = run(k, [&](size_t j) { return other(j); });
    if (tail == Tail::kNone) return k;
    return run(k, [&](size_t j) { return crlf(j) || (tail == Tail::kCrlfSlash && cp(j) == '/'); });
  }

  void cut(size_t len) { pieces_.push_back(len); }
  std::vector<size_t> take() { return std::move(pieces_); }

 private:
  const std::vector<uint32_t>& cps_;
  size_t n_;
  std::vector<uint8_t> flags_;
  std::vector<size_t> pieces_;
};

// One match at i (i < size); returns its end (> i).
size_t match_gpt2(const Splitter& s, size_t i) {
  if (size_t e = s.contraction(i, /*fold=*/false); e > i) return e;
  const size_t j = s.cp(i) == ' ' ? i + 1 : i;  // ' ?' binds only if the class follows
  if (s.letter(j)) return s.run(j, [&](size_t k) { return s.letter(k); });
  if (s.number(j)) return s.run(j, [&](size_t k) { return s.number(k); });
  if (size_t e = s.punctuation(i, Splitter::Tail::kNone); e > i) return e;
  if (size_t e = s.whitespace(i, /*with_crlf=*/false); e > i) return e;
  return i + 1;
}

size_t match_llama3(const Splitter& s, size_t i, size_t max_digits) {
  if (size_t e = s.contraction(i, /*fold=*/true); e > i) return e;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (s.letter(i)) return s.run(i, [&](size_t k) { return s.letter(k); });
  if (s.prefix(i) && s.letter(i + 1)) return s.run(i + 1, [&](size_t k) { return s.letter(k); });
  // \p{N}{1,max_digits}: groups are cut from the left
  if (s.number(i)) {
    size_t e = i;
    while (e - i < max_digits && s.number(e)) ++e;
    return e;
  }
  if (size_t e = s.punctuation(i, Splitter::Tail::kCrlf); e > i) return e;
  if (size_t e = s.whitespace(i, /*with_crlf=*/true); e > i) return e;
  return i + 1;
}

// [^\r\n\p{L}\p{N}]?U*W+C?|[^\r\n\p{L}\p{N}]?U+W*C? at i, each optional prefix tried with and then
// without (greedy '?'), as a backtracking engine would; returns the end or i.
size_t match_llama4_word(const Splitter& s, size_t i) {
  auto upper = [&](size_t k) { return (s.flags(k) & kUpperish) != 0; };
  auto lower = [&](size_t k) { return (s.flags(k) & kLowerish) != 0; };
  auto with_contraction = [&](size_t e) { return s.contraction(e, /*fold=*/true); };
  const bool has_prefix = s.prefix(i);
  // U*W+: U* takes its longest run and gives code points back until W+ can start; the first
  // start that works is kept, and W+ then runs as far as it can.
  auto upper_star_lower_plus = [&](size_t start) -> size_t {
    const size_t u_end = s.run(start, upper);
    for (size_t j = u_end + 1; j-- > start;) {
      if (lower(j)) return with_contraction(s.run(j, lower));
    }
    return start;
  };
  for (size_t start : {has_prefix ? i + 1 : i, i}) {
    if (size_t e = upper_star_lower_plus(start); e > start) return e;
    if (!has_prefix) break;
  }
  // U+W*: never needs to backtrack, W* and C? always succeed.
  for (size_t start : {has_prefix ? i + 1 : i, i}) {
    if (upper(start)) return with_contraction(s.run(s.run(start, upper), lower));
    if (!has_prefix) break;
  }
  return i;
}

size_t match_llama4(const Splitter& s, size_t i) {
  if (size_t e = match_llama4_word(s, i); e > i) return e;
  if (s.number(i)) {
    size_t e = i;
    while (e - i < 3 && s.number(e)) ++e;
    return e;
  }
  if (size_t e = s.punctuation(i, Splitter::Tail::kCrlfSlash); e > i) return e;
  if (size_t e = s.whitespace(i, /*with_crlf=*/true); e > i) return e;
  return i + 1;
}

}  // namespace

StatusOr<PreTokenizerInfo> pre_tokenizer_from_name(std::string_view name) {
  if (name == "gpt-2") return PreTokenizerInfo{PreTokenizer::kGpt2, false, false};
  if (name == "llama-bpe" || name == "llama3" || name == "llama-v3") {
    return PreTokenizerInfo{PreTokenizer::kLlama3, true, true};
  }
  if (name == "qwen2") return PreTokenizerInfo{PreTokenizer::kQwen2, false, false};
  if (name == "llama4") return PreTokenizerInfo{PreTokenizer::kLlama4, true, true};
  std::string shown;
  for (char c : name.substr(0, 60)) shown += (c >= 0x20 && c < 0x7f) ? c : '?';
  return unimplemented("tokenizer.ggml.pre = '" + shown + "' is not a supported pre-tokenizer (supported: " +
                       supported_pre_tokenizers() + ")");
}

const char* supported_pre_tokenizers() { return "gpt-2, llama-bpe (also llama3, llama-v3), qwen2, llama4"; }

std::vector<uint32_t> decode_utf8_lenient(std::string_view text) {
  std::vector<uint32_t> out;
  out.reserve(text.size());
  const size_t n = text.size();
  auto byte = [&](size_t k) { return static_cast<uint8_t>(text[k]); };
  auto cont = [&](size_t k) { return k < n && (byte(k) & 0xC0) == 0x80; };
  for (size_t i = 0; i < n;) {
    const uint8_t b = byte(i);
    uint32_t cp = kReplacement;
    size_t len = 1;
    if (b < 0x80) {
      cp = b;
    } else if ((b & 0xE0) == 0xC0 && cont(i + 1)) {
      cp = ((b & 0x1Fu) << 6) | (byte(i + 1) & 0x3Fu);
      len = 2;
    } else if ((b & 0xF0) == 0xE0 && cont(i + 1) && cont(i + 2)) {
      cp = ((b & 0x0Fu) << 12) | ((byte(i + 1) & 0x3Fu) << 6) | (byte(i + 2) & 0x3Fu);
      len = 3;
    } else if ((b & 0xF8) == 0xF0 && cont(i + 1) && cont(i + 2) && cont(i + 3)) {
      cp = ((b & 0x07u) << 18) | ((byte(i + 1) & 0x3Fu) << 12) | ((byte(i + 2) & 0x3Fu) << 6) | (byte(i + 3) & 0x3Fu);
      len = 4;
      if (cp > 0x10FFFF) {
        cp = kReplacement;
        len = 1;
      }
    }
    out.push_back(cp);
    i += len;
  }
  return out;
}

void append_utf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::vector<size_t> pre_tokenize(PreTokenizer kind, const std::vector<uint32_t>& cps) {
  Splitter s(cps);
  for (size_t i = 0; i < s.size();) {
    size_t end = i + 1;
    switch (kind) {
      case PreTokenizer::kGpt2:
        end = match_gpt2(s, i);
        break;
      case PreTokenizer::kLlama3:
        end = match_llama3(s, i, 3);
        break;
      case PreTokenizer::kQwen2:
        end = match_llama3(s, i, 1);
        break;
      case PreTokenizer::kLlama4:
        end = match_llama4(s, i);
        break;
    }
    s.cut(end - i);
    i = end;
  }
  return s.take();
}

}  // namespace flea::bpe
