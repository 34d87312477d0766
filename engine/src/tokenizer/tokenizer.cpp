#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <array>
#include <climits>
#include <cstdio>
#include <cmath>
#include <cstring>
#include <unordered_map>
#include <utility>

#include "gguf/gguf.h"
#include "tokenizer/bpe.h"

namespace flea {

namespace {

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581 "▁", SentencePiece's space
constexpr std::string_view kUnknownPiece = "\xE2\x96\x85";  // U+2585 "▅", what llama.cpp shows for <unk>
constexpr int32_t kMaxTokenType = static_cast<int32_t>(TokenType::kByte);

constexpr const char* kKeyModel = "tokenizer.ggml.model";
constexpr const char* kKeyTokens = "tokenizer.ggml.tokens";
constexpr const char* kKeyScores = "tokenizer.ggml.scores";
constexpr const char* kKeyTypes = "tokenizer.ggml.token_type";
constexpr const char* kKeyBos = "tokenizer.ggml.bos_token_id";
constexpr const char* kKeyEos = "tokenizer.ggml.eos_token_id";
constexpr const char* kKeyUnk = "tokenizer.ggml.unknown_token_id";
constexpr const char* kKeyAddSpacePrefix = "tokenizer.ggml.add_space_prefix";
constexpr const char* kKeyAddBos = "tokenizer.ggml.add_bos_token";
constexpr const char* kKeyPre = "tokenizer.ggml.pre";
constexpr const char* kKeyMerges = "tokenizer.ggml.merges";

// Byte length of the UTF-8 sequence a lead byte announces, from its high nibble. Continuation and
// invalid lead bytes count as 1; 0xF8..0xFF count as 4. This is deliberately the same crude rule
// llama.cpp uses, so invalid UTF-8 is grouped (and then byte-encoded) exactly as it does.
size_t utf8_len(uint8_t lead) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[lead >> 4];
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (true) {
    size_t hit = s.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(pos, hit - pos));
    out.append(to);
    pos = hit + from.size();
  }
  out.append(s.substr(pos));
  return out;
}

// "<0xAB>" -> 0xAB; -1 when the text is not of that form.
int parse_byte_token(const std::string& text) {
  if (text.size() != 6 || text[0] != '<' || text[1] != '0' || text[2] != 'x' || text[5] != '>') return -1;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  int hi = hex(text[3]), lo = hex(text[4]);
  if (hi < 0 || lo < 0) return -1;
  return hi * 16 + lo;
}

using bpe::printable;

Status missing_pre_tokenizer() {
  return not_found(std::string(kKeyPre) + " is missing: a byte-level BPE vocabulary needs its pre-tokenizer "
                   "(supported: " + bpe::supported_pre_tokenizers() + ")");
}

// A candidate merge of two adjacent symbols. `size` is the byte length the pair had when the
// candidate was made; a candidate whose symbols have since changed is stale and skipped.
struct Bigram {
  float score;
  int32_t left;
  int32_t right;
  size_t size;
};

// Max-heap order: higher score first, then the leftmost pair.
struct BigramLess {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

// A run of bytes of the text being merged; prev/next link the live symbols, len 0 = absorbed.
struct Symbol {
  int32_t prev;
  int32_t next;
  size_t start;
  size_t len;
};

}  // namespace

struct Tokenizer::Data {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<TokenType> types;
  std::vector<std::string> pieces;  // decoded bytes per token (see piece())
  // Views into `tokens`, which never change after construction. Later duplicates win, as in llama.cpp.
  std::unordered_map<std::string_view, int32_t> text_to_id;
  std::array<int32_t, 256> byte_to_id{};
  std::vector<int32_t> user_defined;  // matched literally in the text, longest first
  std::vector<int32_t> specials;      // user-defined, control and unknown: what parse_special matches
  std::unique_ptr<bpe::Model> bpe;    // byte-level BPE vocabularies only
  std::vector<int32_t> end_of_generation;  // eos and the end-of-turn control tokens (sorted)
  int32_t bos = 1;
  int32_t eos = 2;
  int32_t unk = 0;
  bool add_space_prefix = true;
  bool add_bos = true;
};

StatusOr<Tokenizer> Tokenizer::from_vocab(Vocab vocab) {
  const bool byte_level = vocab.model == "gpt2";
  if (!byte_level && vocab.model != "llama") {
    return unimplemented(std::string(kKeyModel) + " = '" + printable(vocab.model) +
                         "' is not supported (only 'llama' SentencePiece and 'gpt2' byte-level BPE vocabularies)");
  }
  const size_t n = vocab.tokens.size();
  if (byte_level && vocab.scores.empty()) vocab.scores.assign(n, 0.0f);
  if (n == 0) return invalid_argument(std::string(kKeyTokens) + " is empty: a vocabulary needs at least one token");
  if (n > static_cast<size_t>(INT32_MAX)) {
    return out_of_range(std::string(kKeyTokens) + " has " + std::to_string(n) + " entries, more than int32 ids allow");
  }
  if (vocab.scores.size() != n) {
    return invalid_argument(std::string(kKeyScores) + " has " + std::to_string(vocab.scores.size()) +
                            " entries but " + kKeyTokens + " has " + std::to_string(n));
  }
  if (vocab.types.size() != n) {
    return invalid_argument(std::string(kKeyTypes) + " has " + std::to_string(vocab.types.size()) +
                            " entries but " + kKeyTokens + " has " + std::to_string(n));
  }
  auto data = std::make_shared<Data>();
  data->types.resize(n);
  data->pieces.resize(n);
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(vocab.scores[i])) {
      return invalid_argument(std::string(kKeyScores) + "[" + std::to_string(i) + "] is not finite");
    }
    int32_t t = vocab.types[i];
    if (t < 0 || t > kMaxTokenType) {
      return out_of_range(std::string(kKeyTypes) + "[" + std::to_string(i) + "] = " + std::to_string(t) +
                          ", allowed 0..6 (undefined, normal, unknown, control, user-defined, unused, byte)");
    }
    data->types[i] = static_cast<TokenType>(t);
    const std::string& text = vocab.tokens[i];
    switch (data->types[i]) {
      case TokenType::kNormal:
        data->pieces[i] = byte_level ? bpe::spelling_to_bytes(text) : replace_all(text, kSpaceMarker, " ");
        break;
      case TokenType::kByte: {
        if (byte_level) break;  // llama.cpp gives byte tokens of a BPE vocab no text
        int b = parse_byte_token(text);
        if (b < 0) {
          return invalid_argument(std::string(kKeyTypes) + "[" + std::to_string(i) + "] is byte (6) but " +
                                  kKeyTokens + "[" + std::to_string(i) + "] = '" + printable(text) +
                                  "' is not of the form <0xNN>");
        }
        data->pieces[i] = std::string(1, static_cast<char>(b));
        break;
      }
      case TokenType::kUnknown:
        data->pieces[i] = std::string(kUnknownPiece);
        break;
      case TokenType::kUserDefined:
        data->pieces[i] = text;
        if (!text.empty()) data->user_defined.push_back(static_cast<int32_t>(i));
        break;
      case TokenType::kUndefined:
      case TokenType::kControl:
      case TokenType::kUnused:
        break;  // contribute no text
    }
  }
  const int32_t n_vocab = static_cast<int32_t>(n);
  struct Special {
    const char* key;
    int32_t id;
    int32_t* dst;
  };
  for (const Special& s : {Special{kKeyBos, vocab.bos_id, &data->bos}, Special{kKeyEos, vocab.eos_id, &data->eos},
                           Special{kKeyUnk, vocab.unk_id, &data->unk}}) {
    if (byte_level && s.id == -1) {
      *s.dst = -1;  // none
      continue;
    }
    if (s.id < 0 || s.id >= n_vocab) {
      return out_of_range(std::string(s.key) + " = " + std::to_string(s.id) + " is outside the vocabulary [0, " +
                          std::to_string(n_vocab) + ")");
    }
    *s.dst = s.id;
  }
  data->add_space_prefix = vocab.add_space_prefix && !byte_level;
  data->add_bos = vocab.add_bos;
  data->tokens = std::move(vocab.tokens);
  data->scores = std::move(vocab.scores);
  data->text_to_id.reserve(n * 2);
  for (int32_t i = 0; i < n_vocab; ++i) data->text_to_id[std::string_view(data->tokens[i])] = i;

  // Byte fallback: <0xNN>, else the single byte as text, else <unk>.
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
    auto it = data->text_to_id.find(std::string_view(buf));
    if (it == data->text_to_id.end()) {
      char c = static_cast<char>(b);
      it = data->text_to_id.find(std::string_view(&c, 1));
    }
    data->byte_to_id[b] = it != data->text_to_id.end() ? it->second : data->unk;
  }
  // Generation ends at eos and at the end-of-turn tokens chat models emit instead (llama.cpp treats
  // these spellings of control tokens as end of generation too: a Llama 3 instruct turn ends with
  // <|eot_id|> while eos is <|end_of_text|>).
  static const char* const kEndOfTurn[] = {"<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|im_end|>", "<|endoftext|>",
                                           "<|eot|>",    "<|eom|>",    "<|end|>",         "<end_of_turn>"};
  if (data->eos >= 0) data->end_of_generation.push_back(data->eos);
  for (int32_t i = 0; i < n_vocab; ++i) {
    const TokenType t = data->types[i];
    const bool special = t == TokenType::kControl || t == TokenType::kUserDefined || t == TokenType::kUnknown;
    if (special && !data->tokens[i].empty()) data->specials.push_back(i);
    if (t == TokenType::kControl || t == TokenType::kUserDefined)
      for (const char* eot : kEndOfTurn)
        if (data->tokens[i] == eot && i != data->eos) data->end_of_generation.push_back(i);
  }
  std::sort(data->end_of_generation.begin(), data->end_of_generation.end());
  // Longest first so that a special token wins over its own prefixes (llama.cpp's order).
  auto longest_first = [&](int32_t a, int32_t b) { return data->tokens[a].size() > data->tokens[b].size(); };
  std::stable_sort(data->user_defined.begin(), data->user_defined.end(), longest_first);
  std::stable_sort(data->specials.begin(), data->specials.end(), longest_first);
  if (byte_level) {
    if (vocab.pre.empty()) return missing_pre_tokenizer();
    auto pre = bpe::pre_tokenizer_from_name(vocab.pre);
    if (!pre.ok()) return pre.status();
    auto model = bpe::Model::build(vocab.merges, *pre, &data->text_to_id);
    if (!model.ok()) return model.status();
    data->bpe = std::move(*model);
  }
  return Tokenizer(std::move(data));
}

StatusOr<Tokenizer> Tokenizer::from_gguf(const gguf::File& file) {
  const gguf::Value* model = file.find(kKeyModel);
  if (!model) return not_found(std::string(kKeyModel) + " is missing: the file has no tokenizer");
  if (model->type != gguf::ValueType::STRING) {
    return invalid_argument(std::string(kKeyModel) + " has type " + gguf::value_type_name(model->type) +
                            ", expected STRING");
  }
  const bool byte_level = model->s == "gpt2";
  if (!byte_level && model->s != "llama") {
    return unimplemented(std::string(kKeyModel) + " = '" + printable(model->s) +
                         "' is not supported (only 'llama' SentencePiece and 'gpt2' byte-level BPE vocabularies)");
  }
  auto array_of = [&](const char* key, std::initializer_list<gguf::ValueType> allowed,
                      const gguf::Value** out) -> Status {
    const gguf::Value* v = file.find(key);
    if (!v) return not_found(std::string(key) + " is missing");
    if (v->type != gguf::ValueType::ARRAY) {
      return invalid_argument(std::string(key) + " has type " + gguf::value_type_name(v->type) + ", expected ARRAY");
    }
    if (std::find(allowed.begin(), allowed.end(), v->array_type) == allowed.end()) {
      return invalid_argument(std::string(key) + " is an array of " + gguf::value_type_name(v->array_type) +
                              ", expected " + gguf::value_type_name(*allowed.begin()));
    }
    *out = v;
    return ok_status();
  };
  using VT = gguf::ValueType;
  const gguf::Value* tokens = nullptr;
  const gguf::Value* scores = nullptr;
  const gguf::Value* types = nullptr;
  FLEA_RETURN_IF_ERROR(array_of(kKeyTokens, {VT::STRING}, &tokens));
  if (!byte_level || file.find(kKeyScores)) {
    FLEA_RETURN_IF_ERROR(array_of(kKeyScores, {VT::FLOAT32, VT::FLOAT64}, &scores));
  }
  FLEA_RETURN_IF_ERROR(array_of(kKeyTypes, {VT::INT32, VT::UINT32, VT::INT8, VT::UINT8, VT::INT16, VT::UINT16,
                                            VT::INT64, VT::UINT64}, &types));

  Vocab vocab;
  vocab.model = model->s;
  vocab.tokens = tokens->arr_str;
  if (scores) {
    vocab.scores.reserve(scores->arr_float.size());
    for (double s : scores->arr_float) vocab.scores.push_back(static_cast<float>(s));
  }
  if (byte_level) {
    // llama.cpp's BPE defaults: no space prefix, no unknown token; BOS only where the
    // pre-tokenizer asks for it (Llama 3), unless tokenizer.ggml.add_bos_token says otherwise.
    vocab.bos_id = vocab.eos_id = vocab.unk_id = -1;
    vocab.add_space_prefix = false;
    // The pre-tokenizer before the merges: an unsupported one is the clearer error.
    const gguf::Value* pre = file.find(kKeyPre);
    if (!pre) return missing_pre_tokenizer();
    if (pre->type != VT::STRING) {
      return invalid_argument(std::string(kKeyPre) + " has type " + gguf::value_type_name(pre->type) +
                              ", expected STRING");
    }
    auto info = bpe::pre_tokenizer_from_name(pre->s);
    if (!info.ok()) return info.status();
    vocab.pre = pre->s;
    vocab.add_bos = info->add_bos;
    const gguf::Value* merges = nullptr;
    FLEA_RETURN_IF_ERROR(array_of(kKeyMerges, {VT::STRING}, &merges));
    vocab.merges = merges->arr_str;
  }
  vocab.types.reserve(types->arr_int.size());
  for (size_t i = 0; i < types->arr_int.size(); ++i) {
    int64_t t = types->arr_int[i];
    if (t < 0 || t > kMaxTokenType) {
      return out_of_range(std::string(kKeyTypes) + "[" + std::to_string(i) + "] = " + std::to_string(t) +
                          ", allowed 0..6");
    }
    vocab.types.push_back(static_cast<int32_t>(t));
  }

  auto special = [&](const char* key, int32_t* dst) -> Status {
    const gguf::Value* v = file.find(key);
    if (!v) return ok_status();  // keep the model's default
    int64_t id = 0;
    if (!v->as_int(&id)) {
      return invalid_argument(std::string(key) + " has type " + gguf::value_type_name(v->type) +
                              ", expected an integer");
    }
    if (id < 0 || id >= static_cast<int64_t>(vocab.tokens.size())) {
      return out_of_range(std::string(key) + " = " + std::to_string(id) + " is outside the vocabulary [0, " +
                          std::to_string(vocab.tokens.size()) + ")");
    }
    *dst = static_cast<int32_t>(id);
    return ok_status();
  };
  FLEA_RETURN_IF_ERROR(special(kKeyBos, &vocab.bos_id));
  FLEA_RETURN_IF_ERROR(special(kKeyEos, &vocab.eos_id));
  FLEA_RETURN_IF_ERROR(special(kKeyUnk, &vocab.unk_id));

  auto flag = [&](const char* key, bool* dst) -> Status {
    const gguf::Value* v = file.find(key);
    if (!v) return ok_status();
    int64_t x = 0;
    if (v->type == VT::BOOL) {
      *dst = v->i != 0;
    } else if (v->as_int(&x)) {
      *dst = x != 0;
    } else {
      return invalid_argument(std::string(key) + " has type " + gguf::value_type_name(v->type) + ", expected BOOL");
    }
    return ok_status();
  };
  if (!byte_level) FLEA_RETURN_IF_ERROR(flag(kKeyAddSpacePrefix, &vocab.add_space_prefix));
  FLEA_RETURN_IF_ERROR(flag(kKeyAddBos, &vocab.add_bos));
  return from_vocab(std::move(vocab));
}

void Tokenizer::encode_spm(std::string_view text, std::vector<int32_t>* out) const {
  const Data& d = *data_;
  if (text.empty()) return;
  std::vector<Symbol> symbols;
  symbols.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    size_t len = std::min(text.size() - pos, utf8_len(static_cast<uint8_t>(text[pos])));
    int32_t idx = static_cast<int32_t>(symbols.size());
    symbols.push_back(Symbol{idx - 1, static_cast<int32_t>(pos + len < text.size() ? idx + 1 : -1), pos, len});
    pos += len;
  }

  std::vector<Bigram> heap;
  heap.reserve(symbols.size());
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const size_t size = symbols[left].len + symbols[right].len;
    auto it = d.text_to_id.find(text.substr(symbols[left].start, size));
    if (it == d.text_to_id.end()) return;
    heap.push_back(Bigram{d.scores[it->second], left, right, size});
    std::push_heap(heap.begin(), heap.end(), BigramLess());
  };
  for (int32_t i = 1; i < static_cast<int32_t>(symbols.size()); ++i) try_add(i - 1, i);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), BigramLess());
    const Bigram bg = heap.back();
    heap.pop_back();
    Symbol& left = symbols[bg.left];
    Symbol& right = symbols[bg.right];
    if (left.len == 0 || right.len == 0 || left.len + right.len != bg.size) continue;  // stale
    left.len += right.len;
    right.len = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = bg.left;
    try_add(left.prev, bg.left);
    try_add(bg.left, left.next);
  }

  for (int32_t i = 0; i >= 0; i = symbols[i].next) {
    const Symbol& s = symbols[i];
    std::string_view piece = text.substr(s.start, s.len);
    auto it = d.text_to_id.find(piece);
    if (it != d.text_to_id.end()) {
      out->push_back(it->second);
      continue;
    }
    for (char c : piece) out->push_back(d.byte_to_id[static_cast<uint8_t>(c)]);
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos, bool parse_special) const {
  const Data& d = *data_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 2 + 2);
  if (add_bos && d.bos >= 0) out.push_back(d.bos);

  // Fragments: raw text runs and special tokens found literally in the text, one token spelling
  // at a time, longest first (llama.cpp's tokenizer_st_partition).
  struct Fragment {
    int32_t token;  // -1 for raw text
    size_t start;
    size_t len;
  };
  std::vector<Fragment> fragments;
  if (!text.empty()) fragments.push_back(Fragment{-1, 0, text.size()});
  for (int32_t id : parse_special ? d.specials : d.user_defined) {
    const std::string& needle = d.tokens[id];
    std::vector<Fragment> next;
    next.reserve(fragments.size());
    for (const Fragment& f : fragments) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      std::string_view raw = text.substr(f.start, f.len);
      size_t pos = 0;
      while (pos < raw.size()) {
        size_t hit = raw.find(needle, pos);
        if (hit == std::string_view::npos) break;
        if (hit > pos) next.push_back(Fragment{-1, f.start + pos, hit - pos});
        next.push_back(Fragment{id, f.start + hit, needle.size()});
        pos = hit + needle.size();
      }
      if (pos < raw.size()) next.push_back(Fragment{-1, f.start + pos, raw.size() - pos});
    }
    fragments.swap(next);
  }

  bool prev_special = true;  // the start of the text counts as "after a special token"
  std::string escaped;
  for (const Fragment& f : fragments) {
    if (f.token >= 0) {
      out.push_back(f.token);
      prev_special = true;
      continue;
    }
    std::string_view raw = text.substr(f.start, f.len);
    if (d.bpe) {
      d.bpe->encode(raw, &out);
      continue;
    }
    escaped.clear();
    if (d.add_space_prefix && prev_special) escaped.append(kSpaceMarker);
    for (char c : raw) {
      if (c == ' ') {
        escaped.append(kSpaceMarker);
      } else {
        escaped.push_back(c);
      }
    }
    encode_spm(escaped, &out);
    prev_special = false;
  }
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  const Data& d = *data_;
  std::string out;
  bool strip_space = d.add_space_prefix;
  for (int32_t id : ids) {
    if (id < 0 || id >= n_vocab()) continue;
    const std::string& p = d.pieces[id];
    if (p.empty()) continue;  // control tokens (BOS) do not count as the first piece
    if (strip_space && p[0] == ' ') {
      out.append(p, 1, std::string::npos);
    } else {
      out.append(p);
    }
    strip_space = false;
  }
  return out;
}

std::string Tokenizer::piece(int32_t id) const {
  if (id < 0 || id >= n_vocab()) return std::string();
  return data_->pieces[id];
}

const std::string& Tokenizer::token_text(int32_t id) const {
  static const std::string kEmpty;
  if (id < 0 || id >= n_vocab()) return kEmpty;
  return data_->tokens[id];
}

TokenType Tokenizer::token_type(int32_t id) const {
  if (id < 0 || id >= n_vocab()) return TokenType::kUndefined;
  return data_->types[id];
}

float Tokenizer::score(int32_t id) const {
  if (id < 0 || id >= n_vocab()) return 0.0f;
  return data_->scores[id];
}

int32_t Tokenizer::find(std::string_view text) const {
  auto it = data_->text_to_id.find(text);
  return it == data_->text_to_id.end() ? -1 : it->second;
}

int32_t Tokenizer::bos() const { return data_->bos; }
int32_t Tokenizer::eos() const { return data_->eos; }
bool Tokenizer::is_end_of_generation(int32_t id) const {
  return std::binary_search(data_->end_of_generation.begin(), data_->end_of_generation.end(), id);
}
int32_t Tokenizer::unk() const { return data_->unk; }
bool Tokenizer::is_byte_level() const { return data_->bpe != nullptr; }
int32_t Tokenizer::n_vocab() const { return static_cast<int32_t>(data_->tokens.size()); }
bool Tokenizer::add_bos_default() const { return data_->add_bos; }

}  // namespace flea
