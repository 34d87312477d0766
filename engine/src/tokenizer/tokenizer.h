// Tokenizer for GGUF vocabularies, matching llama.cpp. Two kinds, chosen by tokenizer.ggml.model:
// - "llama": SentencePiece BPE. The text gets a leading space, spaces become U+2581 "▁", the UTF-8
//   characters are merged pairwise (highest-scoring vocab piece first, leftmost on ties) and
//   whatever stays without a piece falls back to its bytes <0xNN>.
// - "gpt2": byte-level BPE (GPT-2, Llama 3, Qwen2, Llama 4), see bpe.h; tokenizer.ggml.pre names
//   the pre-tokenizer, tokenizer.ggml.merges the merge ranks. No space prefix.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "flea/status.h"

namespace flea::gguf {
struct File;
}

namespace flea {

// tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

class Tokenizer {
 public:
  // Reads tokenizer.ggml.{model,tokens,scores,token_type,bos_token_id,eos_token_id,
  // unknown_token_id,add_space_prefix,add_bos_token} and for "gpt2" also {pre,merges} (scores are
  // optional there). Errors name the offending key; an unknown pre-tokenizer names the supported ones.
  static StatusOr<Tokenizer> from_gguf(const gguf::File& file);

  // Builds a vocabulary directly (tests, synthetic models). Same validation as from_gguf.
  struct Vocab {
    std::string model = "llama";  // or "gpt2"
    std::vector<std::string> tokens;
    std::vector<float> scores;   // "gpt2": may be empty
    std::vector<int32_t> types;  // TokenType values
    int32_t bos_id = 1;          // "gpt2": -1 = none (likewise eos_id, unk_id)
    int32_t eos_id = 2;
    int32_t unk_id = 0;
    bool add_space_prefix = true;  // "llama" only
    bool add_bos = true;
    std::string pre;                  // "gpt2": tokenizer.ggml.pre
    std::vector<std::string> merges;  // "gpt2": tokenizer.ggml.merges, "A B", rank = index
  };
  static StatusOr<Tokenizer> from_vocab(Vocab vocab);

  // Text -> ids, like llama_tokenize(add_special = add_bos, parse_special). User-defined tokens are
  // always matched literally; with parse_special, control and unknown tokens too (so "<|eot_id|>"
  // is one id), otherwise their spellings are ordinary text. Longer spellings are matched first.
  // add_bos without a BOS token (bos() < 0) adds nothing.
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special = false) const;

  // Ids -> text: "▁" -> " ", byte tokens -> raw bytes, control and unused tokens omitted, unknown
  // -> "▅"; the space the encoder prepended is removed from the first piece after any leading
  // control tokens (BOS), so decode(encode(t, b)) == t for valid UTF-8. Ids out of range are skipped.
  // Byte-level BPE: normal tokens go back through the inverse byte-to-unicode table, user-defined
  // tokens are their text, and no space is stripped.
  std::string decode(const std::vector<int32_t>& ids) const;

  // The bytes one token contributes to the text (no leading-space stripping; a byte token is one
  // possibly incomplete UTF-8 byte). Empty for control tokens and ids out of range.
  std::string piece(int32_t id) const;
  // The vocabulary spelling ("▁Hello", "<0x0A>", "<s>"). Empty for ids out of range.
  const std::string& token_text(int32_t id) const;
  TokenType token_type(int32_t id) const;
  float score(int32_t id) const;

  int32_t bos() const;  // -1 when the vocab has none (byte-level BPE only; likewise eos, unk)
  int32_t eos() const;
  // eos, or a control token spelled like an end of turn (<|eot_id|>, <|eom_id|>, <|im_end|>, ...).
  bool is_end_of_generation(int32_t id) const;
  int32_t unk() const;
  bool is_byte_level() const;  // tokenizer.ggml.model = "gpt2"
  int32_t n_vocab() const;
  bool add_bos_default() const;
  // Exact vocab lookup, -1 when the text is not a token.
  int32_t find(std::string_view text) const;

 private:
  struct Data;
  explicit Tokenizer(std::shared_ptr<const Data> data) : data_(std::move(data)) {}
  // One run of raw text (no user-defined tokens inside), already space-prefixed and escaped.
  void encode_spm(std::string_view escaped, std::vector<int32_t>* out) const;

  std::shared_ptr<const Data> data_;  // immutable, shared by copies
};

}  // namespace flea
