// Byte-level BPE pre-tokenizers: the text is cut into pieces by the vocabulary's split regex before
// any merging. Each regex is matched by a hand-written matcher over code points (leftmost
// alternative wins, greedy with the backtracking a regex engine would do); Unicode categories
// (\p{L}, \p{N}, \p{Lu}..., \s = the White_Space property) come from ICU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "flea/status.h"

namespace flea::bpe {

enum class PreTokenizer {
  // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kGpt2,
  // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
  // \s*[\r\n]+|\s+(?!\S)|\s+
  kLlama3,
  // kLlama3 with \p{N} (single digits) instead of \p{N}{1,3}
  kQwen2,
  // GPT-4o's (tiktoken o200k_base) regex, U = [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}], W = [\p{Ll}\p{Lm}\p{Lo}\p{M}],
  // C = (?i:'s|'t|'re|'ve|'m|'ll|'d):  [^\r\n\p{L}\p{N}]?U*W+C?|[^\r\n\p{L}\p{N}]?U+W*C?|\p{N}{1,3}|
  // ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
  kLlama4,
};

struct PreTokenizerInfo {
  PreTokenizer kind;
  bool ignore_merges;  // a piece that is a whole vocab token is emitted as is
  bool add_bos;        // default of tokenizer.ggml.add_bos_token
};

// tokenizer.ggml.pre -> pre-tokenizer. Unknown names are an error that names the value and the
// supported list (a wrong split silently gives wrong ids, so there is no fallback).
StatusOr<PreTokenizerInfo> pre_tokenizer_from_name(std::string_view name);
// "gpt-2, llama-bpe (also llama3, llama-v3), qwen2, llama4"
const char* supported_pre_tokenizers();

// UTF-8 -> code points the way llama.cpp reads them: a byte that does not start a well-formed
// sequence (bad lead byte, missing continuation, truncated at the end) becomes U+FFFD and the
// decoder moves on by one byte. Overlong forms and surrogates are decoded, not rejected; a value
// above U+10FFFF counts as invalid (llama.cpp throws there).
std::vector<uint32_t> decode_utf8_lenient(std::string_view text);
void append_utf8(uint32_t cp, std::string* out);

// Splits code points into pieces; returns the length in code points of each piece, in order
// (they sum to cps.size(); no piece is empty).
std::vector<size_t> pre_tokenize(PreTokenizer kind, const std::vector<uint32_t>& cps);

}  // namespace flea::bpe
