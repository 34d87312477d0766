// Byte-level BPE (tokenizer.ggml.model = "gpt2": GPT-2, Llama 3, Qwen2, Llama 4 vocabularies), as
// llama.cpp does it: the pre-tokenizer cuts the text into pieces; every byte of a piece is spelled
// with GPT-2's byte-to-unicode character; a piece that is a whole token is emitted as is when the
// pre-tokenizer says ignore_merges; otherwise its bytes are merged pairwise, always the adjacent pair
// with the lowest merge rank (leftmost on ties), until no pair has a rank.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "flea/status.h"
#include "tokenizer/pretokenize.h"

namespace flea::bpe {

using TextToId = std::unordered_map<std::string_view, int32_t>;

// GPT-2's table: bytes 0x21..0x7E, 0xA1..0xAC, 0xAE..0xFF are spelled as the code point of the same
// value; the other 68 bytes, in increasing order, as U+0100, U+0101, ...
uint32_t byte_to_codepoint(uint8_t byte);
// A vocab spelling back to bytes through the inverse table ("Ġhello" -> " hello"). A code point
// outside the table (no such token in a well-formed vocab) is kept as its own UTF-8.
std::string spelling_to_bytes(std::string_view spelling);
// Bytes -> vocab spelling (" hello" -> "Ġhello").
std::string bytes_to_spelling(std::string_view bytes);
// For error messages: control bytes as \xNN, cut after max_len bytes with "...".
std::string printable(std::string_view s, size_t max_len = 40);

class Model {
 public:
  // merges: tokenizer.ggml.merges, "A B" in priority order (rank = index). Each A, B and AB must be
  // tokens of the vocabulary (Hugging Face's BPE refuses such files too); errors name the merge.
  // `vocab` must outlive the model.
  static StatusOr<std::unique_ptr<Model>> build(const std::vector<std::string>& merges, PreTokenizerInfo pre,
                                                const TextToId* vocab);

  // Appends the ids of one run of text (no special tokens inside). Invalid UTF-8 reads as U+FFFD,
  // one per bad byte, like llama.cpp (so such text does not round-trip).
  void encode(std::string_view text, std::vector<int32_t>* out) const;

  const PreTokenizerInfo& pre() const { return pre_; }
  size_t n_merges() const { return n_merges_; }

 private:
  struct Merge {
    uint64_t key;    // left id << 32 | right id; kEmptyKey in an unused slot
    int32_t rank;
    int32_t result;  // id of the merged token
  };
  Model() = default;
  const Merge* find_merge(int32_t left, int32_t right) const;
  void encode_piece(std::string_view bytes, std::string* spelled, std::vector<int32_t>* out) const;

  PreTokenizerInfo pre_{};
  const TextToId* vocab_ = nullptr;
  int32_t byte_id_[256] = {};  // token of each single byte, -1 when the vocab lacks it
  std::vector<Merge> table_;   // open addressing, linear probing, power-of-two size
  size_t n_merges_ = 0;
};

}  // namespace flea::bpe
