#include "tokenizer/bpe.h"

#include <algorithm>
#include <array>
#include <cstdio>

namespace flea::bpe {

namespace {

constexpr uint64_t kEmptyKey = ~uint64_t{0};
constexpr uint32_t kFirstShifted = 0x100;  // where the 68 unprintable bytes start
constexpr uint32_t kTableEnd = kFirstShifted + 68;

struct ByteTables {
  std::array<uint32_t, 256> cp{};
  std::array<int16_t, kTableEnd> byte{};  // code point -> byte, -1 outside the table
  std::array<std::string, 256> spelling;
};

const ByteTables& tables() {
  static const ByteTables t = [] {
    ByteTables t;
    t.byte.fill(-1);
    uint32_t next = kFirstShifted;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      t.cp[b] = printable ? b : next++;
      t.byte[t.cp[b]] = static_cast<int16_t>(b);
      append_utf8(t.cp[b], &t.spelling[b]);
    }
    return t;
  }();
  return t;
}

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

size_t hash_key(uint64_t key) {
  key ^= key >> 33;
  key *= 0xff51afd7ed558ccdULL;
  key ^= key >> 33;
  return static_cast<size_t>(key);
}


// A run of bytes of the piece being merged; prev/next link the live symbols; id -1 = absorbed
// into its left neighbour (or a byte the vocab lacks, which never merges).
struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
};

struct Candidate {
  int32_t rank;
  int32_t left;      // symbol indices
  int32_t right;
  int32_t left_id;   // the symbols' ids when the candidate was made; a change makes it stale
  int32_t right_id;
  int32_t result;
};

// Heap order: lowest rank on top, then the leftmost pair.
struct CandidateAfter {
  bool operator()(const Candidate& a, const Candidate& b) const {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  }
};

}  // namespace

std::string printable(std::string_view s, size_t max_len) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < max_len; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02X", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > max_len) out += "...";
  return out;
}

uint32_t byte_to_codepoint(uint8_t byte) { return tables().cp[byte]; }

std::string spelling_to_bytes(std::string_view spelling) {
  const ByteTables& t = tables();
  std::string out;
  out.reserve(spelling.size());
  for (uint32_t cp : decode_utf8_lenient(spelling)) {
    if (cp < kTableEnd && t.byte[cp] >= 0) {
      out.push_back(static_cast<char>(t.byte[cp]));
    } else {
      append_utf8(cp, &out);
    }
  }
  return out;
}

std::string bytes_to_spelling(std::string_view bytes) {
  const ByteTables& t = tables();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += t.spelling[static_cast<uint8_t>(c)];
  return out;
}

StatusOr<std::unique_ptr<Model>> Model::build(const std::vector<std::string>& merges, PreTokenizerInfo pre,
                                              const TextToId* vocab) {
  std::unique_ptr<Model> m(new Model());
  m->pre_ = pre;
  m->vocab_ = vocab;
  auto find = [&](std::string_view text) -> int32_t {
    auto it = vocab->find(text);
    return it == vocab->end() ? -1 : it->second;
  };
  const ByteTables& t = tables();
  for (int b = 0; b < 256; ++b) m->byte_id_[b] = find(t.spelling[b]);

  size_t capacity = 16;  // load factor at most 3/4
  while (capacity * 3 < merges.size() * 4) capacity *= 2;
  m->table_.assign(capacity, Merge{kEmptyKey, 0, 0});
  const size_t mask = capacity - 1;
  std::string joined;
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string& line = merges[i];
    auto where = [&] { return "tokenizer.ggml.merges[" + std::to_string(i) + "] = '" + printable(line) + "'"; };
    // The first space after the first byte separates the halves (a token may start with a space).
    const size_t space = line.size() > 1 ? line.find(' ', 1) : std::string::npos;
    if (space == std::string::npos || space + 1 >= line.size()) {
      return invalid_argument(where() + " is not two tokens separated by a space");
    }
    const std::string_view left(line.data(), space);
    const std::string_view right(line.data() + space + 1, line.size() - space - 1);
    joined.assign(left);
    joined.append(right);
    const int32_t left_id = find(left), right_id = find(right), result = find(joined);
    if (left_id < 0 || right_id < 0 || result < 0) {
      const std::string_view missing = left_id < 0 ? left : right_id < 0 ? right : std::string_view(joined);
      return invalid_argument(where() + ": '" + printable(missing) + "' is not a token of tokenizer.ggml.tokens");
    }
    const uint64_t key = pair_key(left_id, right_id);
    size_t slot = hash_key(key) & mask;
    while (m->table_[slot].key != kEmptyKey && m->table_[slot].key != key) slot = (slot + 1) & mask;
    if (m->table_[slot].key == key) continue;  // a repeated pair keeps its first (lowest) rank
    m->table_[slot] = Merge{key, static_cast<int32_t>(i), result};
  }
  m->n_merges_ = merges.size();
  return m;
}

const Model::Merge* Model::find_merge(int32_t left, int32_t right) const {
  if (left < 0 || right < 0) return nullptr;
  const uint64_t key = pair_key(left, right);
  const size_t mask = table_.size() - 1;
  for (size_t slot = hash_key(key) & mask;; slot = (slot + 1) & mask) {
    const Merge& m = table_[slot];
    if (m.key == key) return &m;
    if (m.key == kEmptyKey) return nullptr;
  }
}

void Model::encode_piece(std::string_view bytes, std::string* spelled, std::vector<int32_t>* out) const {
  if (bytes.empty()) return;
  if (pre_.ignore_merges) {
    spelled->clear();
    const ByteTables& t = tables();
    for (char c : bytes) *spelled += t.spelling[static_cast<uint8_t>(c)];
    auto it = vocab_->find(*spelled);
    if (it != vocab_->end()) {
      out->push_back(it->second);
      return;
    }
  }
  if (bytes.size() == 1) {
    if (byte_id_[static_cast<uint8_t>(bytes[0])] >= 0) out->push_back(byte_id_[static_cast<uint8_t>(bytes[0])]);
    return;
  }
  const int32_t n = static_cast<int32_t>(bytes.size());
  std::vector<Symbol> symbols(n);
  for (int32_t i = 0; i < n; ++i) {
    symbols[i] = Symbol{byte_id_[static_cast<uint8_t>(bytes[i])], i - 1, i + 1 < n ? i + 1 : -1};
  }
  std::vector<Candidate> heap;
  heap.reserve(n);
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const Merge* m = find_merge(symbols[left].id, symbols[right].id);
    if (!m) return;
    heap.push_back(Candidate{m->rank, left, right, symbols[left].id, symbols[right].id, m->result});
    std::push_heap(heap.begin(), heap.end(), CandidateAfter());
  };
  for (int32_t i = 1; i < n; ++i) try_add(i - 1, i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), CandidateAfter());
    const Candidate c = heap.back();
    heap.pop_back();
    Symbol& left = symbols[c.left];
    Symbol& right = symbols[c.right];
    if (left.next != c.right || left.id != c.left_id || right.id != c.right_id) continue;  // stale
    left.id = c.result;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    right.id = -1;
    right.prev = right.next = -1;
    try_add(left.prev, c.left);
    try_add(c.left, left.next);
  }
  // Symbol 0 is never absorbed (merges keep the left index); a byte the vocab lacks is dropped,
  // as llama.cpp drops it.
  for (int32_t i = 0; i >= 0; i = symbols[i].next) {
    if (symbols[i].id >= 0) out->push_back(symbols[i].id);
  }
}

void Model::encode(std::string_view text, std::vector<int32_t>* out) const {
  if (text.empty()) return;
  const std::vector<uint32_t> cps = decode_utf8_lenient(text);
  const std::vector<size_t> pieces = pre_tokenize(pre_.kind, cps);
  std::string bytes, spelled;
  size_t at = 0;
  for (size_t len : pieces) {
    bytes.clear();
    for (size_t k = at; k < at + len; ++k) append_utf8(cps[k], &bytes);
    at += len;
    encode_piece(bytes, &spelled, out);
  }
}

}  // namespace flea::bpe
