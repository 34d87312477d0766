// Byte-level BPE tokenizer: llama.cpp's own test vectors for the Llama 3 and GPT-2 vocabularies, the
// reference cases with the Llama 3 vocab, round trips, the pre-tokenizer regexes piece by piece
// (llama3, gpt-2, qwen2, llama4, and llama.cpp's \s), the heap merge against a naive one,
// parse_special, unknown pre-tokenizers, the vocabularies of the arch/ models and the CLI.
#include <gtest/gtest.h>

#include <unicode/uchar.h>

#include <chrono>
#include <functional>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <unicode/uchar.h>

#include "gguf/gguf.h"
#include "gguf_bytes.h"
#include "test_util.h"
#include "tokenizer/bpe.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/tokenizer.h"

namespace flea {
namespace {

std::string tok_dir() { return test::reference_dir() + "/tokenizer"; }
std::string llama_bpe_path() { return tok_dir() + "/ggml-vocab-llama-bpe.gguf"; }
std::string gpt2_path() { return tok_dir() + "/ggml-vocab-gpt-2.gguf"; }

std::string ids_str(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s + "]";
}

struct Vector {
  std::string text;
  std::vector<int32_t> ids;
};

// llama.cpp's .inp/.out pair: texts each followed by "\n__ggml_vocab_test__\n"; one line of
// space-preceded ids per text.
std::vector<Vector> load_vectors(const std::string& vocab_path) {
  const std::string inp = test::read_text(vocab_path + ".inp");
  const std::string out = test::read_text(vocab_path + ".out");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<Vector> v;
  for (size_t pos = 0;;) {
    const size_t hit = inp.find(sep, pos);
    if (hit == std::string::npos) break;
    v.push_back(Vector{inp.substr(pos, hit - pos), {}});
    pos = hit + sep.size();
  }
  std::istringstream lines(out);
  std::string line;
  for (size_t i = 0; std::getline(lines, line); ++i) {
    if (i >= v.size()) {
      v.push_back(Vector{"<extra line in .out>", {-1}});
      continue;
    }
    std::istringstream ids(line);
    for (int32_t id; ids >> id;) v[i].ids.push_back(id);
  }
  return v;
}

std::vector<Vector> load_cases(const std::string& path) {
  std::vector<Vector> cases;
  for (const auto& c : nlohmann::json::parse(test::read_text(path))) {
    cases.push_back(Vector{c.at("text").get<std::string>(), c.at("ids").get<std::vector<int32_t>>()});
  }
  return cases;
}

StatusOr<Tokenizer> load_tokenizer(const std::string& path) {
  auto file = gguf::read_file(path);
  if (!file.ok()) return file.status();
  return Tokenizer::from_gguf(*file);
}

// One tokenizer per vocabulary file, loaded once for the whole binary.
const Tokenizer* shared_tokenizer(const std::string& path) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto it = cache.find(path);
  if (it != cache.end()) return it->second.get();
  std::unique_ptr<Tokenizer> tok;
  if (std::filesystem::exists(path)) {
    auto t = load_tokenizer(path);
    EXPECT_TRUE(t.ok()) << path << ": " << t.status().to_string();
    if (t.ok()) tok = std::make_unique<Tokenizer>(std::move(*t));
  }
  return cache.emplace(path, std::move(tok)).first->second.get();
}

#define REQUIRE_VOCAB(var, path)                                              \
  const Tokenizer* var = shared_tokenizer(path);                              \
  if (!var) GTEST_SKIP() << "reference vocab not found at " << (path)

// Every vector, counted, with the first failures spelled out.
int count_mismatches(const Tokenizer& tok, const std::vector<Vector>& vectors) {
  int failures = 0;
  for (const Vector& v : vectors) {
    const std::vector<int32_t> got = tok.encode(v.text, /*add_bos=*/false);
    if (got != v.ids) {
      ++failures;
      ADD_FAILURE() << "text '" << v.text << "'\n  want " << ids_str(v.ids) << "\n  got  " << ids_str(got);
    }
  }
  return failures;
}

// ---- Llama 3 (pre llama-bpe) -------------------------------------------------------------------

TEST(LlamaBpe, VocabMetadata) {
  REQUIRE_VOCAB(tok, llama_bpe_path());
  EXPECT_TRUE(tok->is_byte_level());
  EXPECT_EQ(tok->n_vocab(), 128256);
  EXPECT_EQ(tok->bos(), 128000);
  EXPECT_EQ(tok->eos(), 128001);
  EXPECT_EQ(tok->unk(), -1);
  EXPECT_TRUE(tok->add_bos_default());
  EXPECT_EQ(tok->token_type(128009), TokenType::kControl);
  EXPECT_EQ(tok->find("<|eot_id|>"), 128009);
  EXPECT_EQ(tok->token_text(220), "\xC4\xA0");  // "Ġ"
  EXPECT_EQ(tok->piece(220), " ");
  EXPECT_EQ(tok->piece(198), "\n");  // "Ċ"
  EXPECT_EQ(tok->piece(128009), "");
}

// Generation stops at eos and at the end-of-turn control tokens (llama.cpp's end-of-generation set).
TEST(LlamaBpe, EndOfGenerationTokens) {
  REQUIRE_VOCAB(tok, llama_bpe_path());
  for (int32_t id : {128001, 128008, 128009}) EXPECT_TRUE(tok->is_end_of_generation(id)) << id;  // eos, eom, eot
  for (int32_t id : {128000, 128002, 128006, 9906, -1, 128256}) EXPECT_FALSE(tok->is_end_of_generation(id)) << id;
}

TEST(LlamaBpe, ReproducesLlamaCppVectors) {
  REQUIRE_VOCAB(tok, llama_bpe_path());
  const std::vector<Vector> vectors = load_vectors(llama_bpe_path());
  ASSERT_EQ(vectors.size(), 46u);
  EXPECT_EQ(count_mismatches(*tok, vectors), 0) << "of " << vectors.size();
}

TEST(LlamaBpe, ReproducesEveryReferenceCase) {
  REQUIRE_VOCAB(tok, llama_bpe_path());
  const std::vector<Vector> cases = load_cases(tok_dir() + "/cases-llama-bpe.json");
  ASSERT_EQ(cases.size(), 42u);
  EXPECT_EQ(count_mismatches(*tok, cases), 0) << "of " << cases.size();
}

TEST(LlamaBpe, BosOnlyWhenAsked) {
  REQUIRE_VOCAB(tok, llama_bpe_path());
  EXPECT_EQ(tok->encode("Hello", false), (std::vector<int32_t>{9906}));
  EXPECT_EQ(tok->encode("Hello", true), (std::vector<int32_t>{128000, 9906}));
  EXPECT_EQ(tok->encode("", true), (std::vector<int32_t>{128000}));
  EXPECT_EQ(tok->encode(" Hello", false), (std::vector<int32_t>{22691}));  // no space prefix rule
}

TEST(LlamaBpe, RoundTripsEveryText) {
  REQUIRE_VOCAB(tok, llama_bpe_path());
  std::vector<Vector> texts = load_vectors(llama_bpe_path());
  for (const Vector& c : load_cases(tok_dir() + "/cases-llama-bpe.json")) texts.push_back(c);
  for (const Vector& v : texts) {
    EXPECT_EQ(tok->decode(v.ids), v.text) << "reference ids of '" << v.text << "'";
    EXPECT_EQ(tok->decode(tok->encode(v.text, true)), v.text) << "with BOS: '" << v.text << "'";
  }
}

TEST(LlamaBpe, SpecialTokensOnlyWithParseSpecial) {
  REQUIRE_VOCAB(tok, llama_bpe_path());
  const std::vector<int32_t> off = tok->encode("<|eot_id|>", false);
  EXPECT_GT(off.size(), 1u) << ids_str(off);
  for (int32_t id : off) EXPECT_LT(id, 128000) << ids_str(off);
  EXPECT_EQ(tok->decode(off), "<|eot_id|>");
  EXPECT_EQ(tok->encode("<|eot_id|>", false, /*parse_special=*/true), (std::vector<int32_t>{128009}));
  // Around text: the pieces on either side are tokenized on their own.
  const std::vector<int32_t> hello = tok->encode("Hello", false), world = tok->encode(" world", false);
  std::vector<int32_t> want = {128000, 128006};
  want.insert(want.end(), hello.begin(), hello.end());
  want.push_back(128007);
  want.insert(want.end(), world.begin(), world.end());
  want.push_back(128009);
  EXPECT_EQ(tok->encode("<|start_header_id|>Hello<|end_header_id|> world<|eot_id|>", true, true), want);
  // A reserved token is as special as a named one; longer spellings win over shorter ones.
  EXPECT_EQ(tok->encode("<|reserved_special_token_10|><|reserved_special_token_1|>", false, true),
            (std::vector<int32_t>{128000 + 18, 128003}));
  // Control tokens decode to nothing.
  EXPECT_EQ(tok->decode({128000, 9906, 128009}), "Hello");
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

TEST(LlamaBpe, LoadAndEncodeTimings) {
  if (!std::filesystem::exists(llama_bpe_path())) GTEST_SKIP() << "no " << llama_bpe_path();
  auto t0 = std::chrono::steady_clock::now();
  auto file = gguf::read_file(llama_bpe_path());
  ASSERT_TRUE(file.ok());
  const double read_ms = ms_since(t0);
  t0 = std::chrono::steady_clock::now();
  auto tok = Tokenizer::from_gguf(*file);
  ASSERT_TRUE(tok.ok());
  const double build_ms = ms_since(t0);
  std::string text;  // every vector and case, repeated to about 1 MiB
  while (text.size() < (1u << 20)) {
    for (const Vector& v : load_vectors(llama_bpe_path())) text += v.text + "\n";
    for (const Vector& v : load_cases(tok_dir() + "/cases-llama-bpe.json")) text += v.text + "\n";
  }
  t0 = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = tok->encode(text, false);
  const double encode_ms = ms_since(t0);
  EXPECT_EQ(tok->decode(ids), text);
  std::printf("llama-bpe: read_file %.1f ms, from_gguf %.1f ms (128256 tokens, 280147 merges); encode %.2f MiB "
              "-> %zu ids in %.1f ms (%.1f MiB/s)\n", read_ms, build_ms, text.size() / 1048576.0, ids.size(), encode_ms,
              text.size() / 1048576.0 / (encode_ms / 1000.0));
  // No bound on the times: the machine is shared (the project asserts no absolute time); the figures
  // above are printed for the reader, the round trip is what is checked.
}

// The merge rule the slow, obvious way: rescan all adjacent pairs for the lowest rank.
class NaiveBpe {
 public:
  explicit NaiveBpe(const std::string& path) {
    auto file = gguf::read_file(path);
    if (!file.ok()) return;
    const gguf::Value* merges = file->find("tokenizer.ggml.merges");
    for (size_t i = 0; i < merges->arr_str.size(); ++i) {
      const std::string& m = merges->arr_str[i];
      const size_t sp = m.find(' ', 1);
      rank_.emplace(std::make_pair(m.substr(0, sp), m.substr(sp + 1)), static_cast<int>(i));
    }
  }
  // One pre-tokenized piece, already byte-encoded, merged to token spellings.
  std::vector<std::string> merge(const std::string& spelled) const {
    std::vector<std::string> sym;
    for (size_t pos = 0; pos < spelled.size();) {
      const auto c = static_cast<uint8_t>(spelled[pos]);
      const size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
      sym.push_back(spelled.substr(pos, len));
      pos += len;
    }
    while (true) {
      int best = -1, best_rank = 0;
      for (size_t i = 0; i + 1 < sym.size(); ++i) {
        auto it = rank_.find({sym[i], sym[i + 1]});
        if (it != rank_.end() && (best < 0 || it->second < best_rank)) {
          best = static_cast<int>(i);
          best_rank = it->second;
        }
      }
      if (best < 0) return sym;
      sym[best] += sym[best + 1];
      sym.erase(sym.begin() + best + 1);
    }
  }
  bool loaded() const { return !rank_.empty(); }

 private:
  std::map<std::pair<std::string, std::string>, int> rank_;
};

TEST(Gpt2Bpe, HeapMergeEqualsNaiveMerge) {
  REQUIRE_VOCAB(tok, gpt2_path());  // no ignore_merges: every piece goes through the merges
  const NaiveBpe naive(gpt2_path());
  ASSERT_TRUE(naive.loaded());
  std::mt19937_64 rng(7);
  const std::vector<std::string> alphabet = {"a", "b", "e", "er", "in", "th", "o", "s", "t", "\xC3\xA9",
                                             "\xE6\x97\xA5", "1", "."};
  for (int iter = 0; iter < 300; ++iter) {
    std::string word;  // one piece: letters only, so the pre-tokenizer keeps it whole
    const int n = 1 + static_cast<int>(rng() % 24);
    for (int i = 0; i < n; ++i) word += alphabet[rng() % 10];
    std::vector<int32_t> want;
    for (const std::string& s : naive.merge(bpe::bytes_to_spelling(word))) want.push_back(tok->find(s));
    ASSERT_EQ(tok->encode(word, false), want) << "'" << word << "'";
  }
}

// ---- GPT-2 (pre gpt-2) ------------------------------------------------------------------------

TEST(Gpt2Bpe, ReproducesLlamaCppVectors) {
  REQUIRE_VOCAB(tok, gpt2_path());
  EXPECT_EQ(tok->n_vocab(), 50257);
  EXPECT_EQ(tok->bos(), 50256);
  EXPECT_EQ(tok->eos(), 50256);
  EXPECT_FALSE(tok->add_bos_default());  // no add_bos_token key: BPE default
  const std::vector<Vector> vectors = load_vectors(gpt2_path());
  ASSERT_EQ(vectors.size(), 46u);
  EXPECT_EQ(count_mismatches(*tok, vectors), 0) << "of " << vectors.size();
}

TEST(Gpt2Bpe, RoundTripsAndSpecialToken) {
  REQUIRE_VOCAB(tok, gpt2_path());
  for (const Vector& v : load_vectors(gpt2_path())) {
    EXPECT_EQ(tok->decode(tok->encode(v.text, false)), v.text) << "'" << v.text << "'";
  }
  EXPECT_EQ(tok->encode("a<|endoftext|>", false, true).back(), 50256);
  EXPECT_NE(tok->encode("a<|endoftext|>", false, false).back(), 50256);
}

// ---- pre-tokenizers, piece by piece -----------------------------------------------------------

std::vector<std::string> split(bpe::PreTokenizer kind, const std::string& text) {
  const std::vector<uint32_t> cps = bpe::decode_utf8_lenient(text);
  std::vector<std::string> pieces;
  size_t at = 0;
  for (size_t len : bpe::pre_tokenize(kind, cps)) {
    std::string s;
    for (size_t k = at; k < at + len; ++k) bpe::append_utf8(cps[k], &s);
    pieces.push_back(s);
    at += len;
  }
  return pieces;
}

using Pieces = std::vector<std::string>;
using bpe::PreTokenizer;

TEST(PreTokenizer, Llama3) {
  EXPECT_EQ(split(PreTokenizer::kLlama3, "I'm HERE'S don'T"), (Pieces{"I", "'m", " HERE", "'S", " don", "'T"}));
  EXPECT_EQ(split(PreTokenizer::kLlama3, "1234567 x"), (Pieces{"123", "456", "7", " x"}));
  EXPECT_EQ(split(PreTokenizer::kLlama3, "a  b   \n\n c"), (Pieces{"a", " ", " b", "   \n\n", " c"}));
  EXPECT_EQ(split(PreTokenizer::kLlama3, "x   "), (Pieces{"x", "   "}));
  EXPECT_EQ(split(PreTokenizer::kLlama3, "(hi) ...\n\nok"), (Pieces{"(hi", ")", " ...\n\n", "ok"}));
  EXPECT_EQ(split(PreTokenizer::kLlama3, "\n\ta"), (Pieces{"\n", "\ta"}));  // [^\r\n\p{L}\p{N}]? takes the tab
  EXPECT_EQ(split(PreTokenizer::kLlama3, "\xC3\xA9t\xC3\xA9 42"), (Pieces{"\xC3\xA9t\xC3\xA9", " ", "42"}));
}

TEST(PreTokenizer, Gpt2) {
  EXPECT_EQ(split(PreTokenizer::kGpt2, "I'm HERE'S"), (Pieces{"I", "'m", " HERE", "'", "S"}));
  EXPECT_EQ(split(PreTokenizer::kGpt2, "1234567 x"), (Pieces{"1234567", " x"}));
  EXPECT_EQ(split(PreTokenizer::kGpt2, "a  b\n\n c"), (Pieces{"a", " ", " b", "\n\n", " c"}));
  EXPECT_EQ(split(PreTokenizer::kGpt2, "(hi) ...\nok"), (Pieces{"(", "hi", ")", " ...", "\n", "ok"}));
}

TEST(PreTokenizer, Qwen2DigitsOneByOne) {
  EXPECT_EQ(split(PreTokenizer::kQwen2, "x 2024!"), (Pieces{"x", " ", "2", "0", "2", "4", "!"}));
  EXPECT_EQ(split(PreTokenizer::kQwen2, "I'LL go"), (Pieces{"I", "'LL", " go"}));
}

TEST(PreTokenizer, Llama4IsGpt4oRegex) {
  // Case runs: an upper-case run followed by lower case stays one piece, a lower-to-upper change cuts.
  EXPECT_EQ(split(PreTokenizer::kLlama4, "HelloWorld"), (Pieces{"Hello", "World"}));
  EXPECT_EQ(split(PreTokenizer::kLlama4, "HTTPServer"), (Pieces{"HTTPServer"}));
  EXPECT_EQ(split(PreTokenizer::kLlama4, "ABC def"), (Pieces{"ABC", " def"}));
  // Contractions attach to the word before them, case-insensitively.
  EXPECT_EQ(split(PreTokenizer::kLlama4, "don't I'M"), (Pieces{"don't", " I'M"}));
  EXPECT_EQ(split(PreTokenizer::kLlama4, "12345"), (Pieces{"123", "45"}));
  EXPECT_EQ(split(PreTokenizer::kLlama4, "a/b //\n"), (Pieces{"a", "/b", " //\n"}));
  EXPECT_EQ(split(PreTokenizer::kLlama4, "x \n\n y"), (Pieces{"x", " \n\n", " y"}));
}

TEST(PreTokenizer, WhitespaceIsTheUnicodeWhiteSpaceProperty) {
  // llama.cpp's \s: U+0009..U+000D, U+0020, U+0085, U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029,
  // U+202F, U+205F, U+3000. Not U+001C..U+001F (Python's str.isspace has them) and not U+200B.
  for (const char* ws : {"\xC2\x85", "\xC2\xA0", "\xE1\x9A\x80", "\xE2\x80\x80", "\xE2\x80\x8A", "\xE2\x80\xA8",
                         "\xE2\x80\xAF", "\xE2\x81\x9F", "\xE3\x80\x80", "\x0B", "\x0C"}) {
    // "x" + two of them + "y": \s+(?!\S) leaves the last one to [^\r\n\p{L}\p{N}]?\p{L}+.
    const std::string w(ws);
    EXPECT_EQ(split(PreTokenizer::kLlama3, "x" + w + w + "y"), (Pieces{"x", w, w + "y"})) << w;
  }
  for (const char* not_ws : {"\x1C", "\x1F", "\xE2\x80\x8B"}) {
    const std::string w(not_ws);
    EXPECT_EQ(split(PreTokenizer::kLlama3, "x" + w + w + "y"), (Pieces{"x", w + w, "y"})) << w;
  }
}

TEST(PreTokenizer, InvalidUtf8ReadsAsReplacementCharacters) {
  // One U+FFFD per bad byte, as llama.cpp's unicode_cpts_from_utf8 does.
  EXPECT_EQ(bpe::decode_utf8_lenient("a\xFF\xC3"), (std::vector<uint32_t>{'a', 0xFFFD, 0xFFFD}));
  EXPECT_EQ(bpe::decode_utf8_lenient("\xE2\x82"), (std::vector<uint32_t>{0xFFFD, 0xFFFD}));
  EXPECT_EQ(bpe::decode_utf8_lenient("\xF4\x90\x80\x80").front(), 0xFFFDu);  // above U+10FFFF
  EXPECT_EQ(bpe::decode_utf8_lenient("\xF0\x9F\x99\x82"), (std::vector<uint32_t>{0x1F642}));
}

TEST(PreTokenizer, PiecesCoverEveryCodePoint) {
  std::mt19937_64 rng(5);
  const std::vector<std::string> alphabet = {"a", "Z", " ", "  ", "\n", "\r", "\t", "'", "s", "1", ".", "/",
                                             "\xC3\xA9", "\xCC\x81", "\xE6\x97\xA5", "\xC2\xA0", "\xF0\x9F\x99\x82"};
  for (PreTokenizer kind : {PreTokenizer::kGpt2, PreTokenizer::kLlama3, PreTokenizer::kQwen2, PreTokenizer::kLlama4}) {
    for (int iter = 0; iter < 500; ++iter) {
      std::string text;
      const int n = static_cast<int>(rng() % 30);
      for (int i = 0; i < n; ++i) text += alphabet[rng() % alphabet.size()];
      std::string joined;
      for (const std::string& p : split(kind, text)) {
        ASSERT_FALSE(p.empty());
        joined += p;
      }
      ASSERT_EQ(joined, text);
    }
  }
}

// The regexes written as regexes: a tiny backtracking matcher (greedy quantifiers, ordered
// alternation, negative lookahead) over code points, with the same ICU classes. Splitting with it
// must give exactly the hand-written matchers' pieces.
struct Re {
  enum Kind { kClass, kSeq, kAlt, kRep, kNotAhead } kind;
  std::function<bool(uint32_t)> cls;
  std::vector<std::shared_ptr<Re>> kids;
  int min = 0, max = 0;
};
using ReP = std::shared_ptr<Re>;
ReP cls(std::function<bool(uint32_t)> f) { return std::make_shared<Re>(Re{Re::kClass, std::move(f), {}, 0, 0}); }
ReP seq(std::vector<ReP> k) { return std::make_shared<Re>(Re{Re::kSeq, {}, std::move(k), 0, 0}); }
ReP alt(std::vector<ReP> k) { return std::make_shared<Re>(Re{Re::kAlt, {}, std::move(k), 0, 0}); }
ReP rep(ReP k, int min, int max) { return std::make_shared<Re>(Re{Re::kRep, {}, {std::move(k)}, min, max}); }
ReP not_ahead(ReP k) { return std::make_shared<Re>(Re{Re::kNotAhead, {}, {std::move(k)}, 0, 0}); }
ReP opt(ReP k) { return rep(std::move(k), 0, 1); }
ReP star(ReP k) { return rep(std::move(k), 0, 1 << 30); }
ReP plus(ReP k) { return rep(std::move(k), 1, 1 << 30); }
ReP lit(uint32_t c) { return cls([c](uint32_t x) { return x == c; }); }
ReP ci(char c) { return cls([c](uint32_t x) { return x == static_cast<uint32_t>(c) || x == static_cast<uint32_t>(c - 32); }); }

class Backtracker {
 public:
  explicit Backtracker(const std::vector<uint32_t>& cps) : cps_(cps) {}
  // Calls k with every end of a match of r at pos, in the order a backtracking engine tries them,
  // until k accepts.
  bool match(const Re& r, size_t pos, const std::function<bool(size_t)>& k) const {
    switch (r.kind) {
      case Re::kClass:
        return pos < cps_.size() && r.cls(cps_[pos]) && k(pos + 1);
      case Re::kSeq:
        return match_seq(r, 0, pos, k);
      case Re::kAlt:
        for (const ReP& kid : r.kids) {
          if (match(*kid, pos, k)) return true;
        }
        return false;
      case Re::kRep:
        return match_rep(r, 0, pos, k);
      case Re::kNotAhead:
        if (match(*r.kids[0], pos, [](size_t) { return true; })) return false;
        return k(pos);
    }
    return false;
  }

 private:
  bool match_seq(const Re& r, size_t i, size_t pos, const std::function<bool(size_t)>& k) const {
    if (i == r.kids.size()) return k(pos);
    return match(*r.kids[i], pos, [&](size_t e) { return match_seq(r, i + 1, e, k); });
  }
  bool match_rep(const Re& r, int count, size_t pos, const std::function<bool(size_t)>& k) const {
    if (count < r.max &&
        match(*r.kids[0], pos, [&](size_t e) { return e != pos && match_rep(r, count + 1, e, k); })) {
      return true;
    }
    return count >= r.min && k(pos);
  }
  const std::vector<uint32_t>& cps_;
};

bool is_letter(uint32_t c) { return (U_GET_GC_MASK(c) & U_GC_L_MASK) != 0; }
bool is_number(uint32_t c) { return (U_GET_GC_MASK(c) & U_GC_N_MASK) != 0; }
bool is_space(uint32_t c) { return u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_WHITE_SPACE); }
bool is_crlf(uint32_t c) { return c == '\r' || c == '\n'; }

ReP regex_of(PreTokenizer kind) {
  const ReP L = cls(is_letter), N = cls(is_number), S = cls(is_space), crlf = cls(is_crlf);
  const ReP non_space = cls([](uint32_t c) { return !is_space(c); });
  const ReP other = cls([](uint32_t c) { return !is_space(c) && !is_letter(c) && !is_number(c); });
  const ReP prefix = cls([](uint32_t c) { return !is_crlf(c) && !is_letter(c) && !is_number(c); });
  const ReP space_runs = alt({seq({plus(S), not_ahead(non_space)}), plus(S)});
  auto contractions = [](bool fold) {
    auto ch = [fold](char c) { return fold ? ci(c) : lit(static_cast<uint32_t>(c)); };
    return seq({lit('\''), alt({ch('s'), ch('t'), seq({ch('r'), ch('e')}), seq({ch('v'), ch('e')}), ch('m'),
                                seq({ch('l'), ch('l')}), ch('d')})});
  };
  switch (kind) {
    case PreTokenizer::kGpt2:
      return alt({contractions(false), seq({opt(lit(' ')), plus(L)}), seq({opt(lit(' ')), plus(N)}),
                  seq({opt(lit(' ')), plus(other)}), space_runs});
    case PreTokenizer::kLlama3:
    case PreTokenizer::kQwen2:
      return alt({contractions(true), seq({opt(prefix), plus(L)}), rep(N, 1, kind == PreTokenizer::kQwen2 ? 1 : 3),
                  seq({opt(lit(' ')), plus(other), star(crlf)}), seq({star(S), plus(crlf)}), space_runs});
    case PreTokenizer::kLlama4: {
      const ReP U = cls([](uint32_t c) {
        const uint32_t m = U_GET_GC_MASK(c);
        return (m & (U_GC_LU_MASK | U_GC_LT_MASK | U_GC_LM_MASK | U_GC_LO_MASK | U_GC_M_MASK)) != 0;
      });
      const ReP W = cls([](uint32_t c) {
        const uint32_t m = U_GET_GC_MASK(c);
        return (m & (U_GC_LL_MASK | U_GC_LM_MASK | U_GC_LO_MASK | U_GC_M_MASK)) != 0;
      });
      const ReP crlf_slash = cls([](uint32_t c) { return is_crlf(c) || c == '/'; });
      return alt({seq({opt(prefix), star(U), plus(W), opt(contractions(true))}),
                  seq({opt(prefix), plus(U), star(W), opt(contractions(true))}), rep(N, 1, 3),
                  seq({opt(lit(' ')), plus(other), star(crlf_slash)}), seq({star(S), plus(crlf)}), space_runs});
    }
  }
  return nullptr;
}

std::vector<size_t> split_by_backtracking(const Re& re, const std::vector<uint32_t>& cps) {
  const Backtracker bt(cps);
  std::vector<size_t> pieces;
  for (size_t pos = 0; pos < cps.size();) {
    size_t end = pos + 1;  // no match: one code point on its own (llama.cpp's rule)
    bt.match(re, pos, [&](size_t e) {
      if (e == pos) return false;
      end = e;
      return true;
    });
    pieces.push_back(end - pos);
    pos = end;
  }
  return pieces;
}

TEST(PreTokenizer, HandWrittenMatchersEqualTheRegexes) {
  // Every class the regexes tell apart: Lu, Ll, Lt, Lm, Lo, Mn, Nd, Nl, No, the contraction
  // letters, White_Space (ASCII, NBSP, ideographic space), \r \n, '/', punctuation, a symbol, a
  // format character (U+200B), an unassigned code point and U+001C.
  const std::vector<uint32_t> alphabet = {'A', 'z', 0x01C5, 0x02B0, 0x65E5, 0x0301, '1', 0x0663, 0x216B, 0x00B2,
                                          '\'', 's', 'S', 't', 'r', 'E', 'v', 'm', 'l', 'L', 'd', ' ', ' ', ' ',
                                          '\t', 0x00A0, 0x3000, '\r', '\n', '/', '.', '!', 0x1F642, 0x200B,
                                          0x0378, 0x1C};
  std::mt19937_64 rng(11);
  for (PreTokenizer kind : {PreTokenizer::kGpt2, PreTokenizer::kLlama3, PreTokenizer::kQwen2, PreTokenizer::kLlama4}) {
    const ReP re = regex_of(kind);
    for (int iter = 0; iter < 4000; ++iter) {
      std::vector<uint32_t> cps(rng() % 16);
      for (uint32_t& c : cps) c = alphabet[rng() % alphabet.size()];
      const std::vector<size_t> want = split_by_backtracking(*re, cps);
      const std::vector<size_t> got = bpe::pre_tokenize(kind, cps);
      if (got != want) {
        std::string text;
        for (uint32_t c : cps) {
          char buf[16];
          std::snprintf(buf, sizeof buf, "U+%04X ", c);
          text += buf;
        }
        FAIL() << "pre-tokenizer " << static_cast<int>(kind) << ", text " << text << "\n  regex pieces "
               << ids_str(std::vector<int32_t>(want.begin(), want.end())) << "\n  matcher pieces "
               << ids_str(std::vector<int32_t>(got.begin(), got.end()));
      }
    }
  }
}

// ---- byte tables, vocabularies built in memory ------------------------------------------------

TEST(ByteLevel, ByteToUnicodeTable) {
  EXPECT_EQ(bpe::byte_to_codepoint('!'), 0x21u);
  EXPECT_EQ(bpe::byte_to_codepoint(0x00), 0x100u);
  EXPECT_EQ(bpe::byte_to_codepoint(' '), 0x120u);   // "Ġ"
  EXPECT_EQ(bpe::byte_to_codepoint('\n'), 0x10Au);  // "Ċ"
  EXPECT_EQ(bpe::byte_to_codepoint(0xAD), 0x143u);  // the last of the 68 shifted bytes
  for (int b = 0; b < 256; ++b) {
    const std::string byte(1, static_cast<char>(b));
    EXPECT_EQ(bpe::spelling_to_bytes(bpe::bytes_to_spelling(byte)), byte) << b;
  }
}

// 256 byte tokens, merges "a b", "ab c", "Ġ a", specials.
Tokenizer::Vocab tiny_byte_vocab(const std::string& pre = "gpt-2") {
  Tokenizer::Vocab v;
  v.model = "gpt2";
  v.pre = pre;
  for (int b = 0; b < 256; ++b) {
    v.tokens.push_back(bpe::bytes_to_spelling(std::string(1, static_cast<char>(b))));
    v.types.push_back(1);
  }
  auto add = [&](const std::string& t, int type = 1) {
    v.tokens.push_back(t);
    v.types.push_back(type);
  };
  add("ab");              // 256
  add("abc");             // 257
  add("\xC4\xA0" "a");   // 258 "Ġa"
  add("<|x|>", 3);        // 259 control
  add("<|x|>y", 3);       // 260 control, longer
  add("<tool>", 4);       // 261 user-defined
  v.merges = {"a b", "ab c", "\xC4\xA0 a"};
  v.bos_id = v.eos_id = 259;
  v.add_bos = false;
  return v;
}

TEST(ByteLevel, TinyVocabMergesAndSpecials) {
  auto tok = Tokenizer::from_vocab(tiny_byte_vocab());
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  EXPECT_EQ(tok->encode("abc", false), (std::vector<int32_t>{257}));
  EXPECT_EQ(tok->encode("abd a", false), (std::vector<int32_t>{256, 'd', 258}));
  // Longest special spelling wins; user-defined tokens match even without parse_special.
  EXPECT_EQ(tok->encode("<|x|>y<|x|>", false, true), (std::vector<int32_t>{260, 259}));
  EXPECT_EQ(tok->encode("a<tool>", false), (std::vector<int32_t>{'a', 261}));
  EXPECT_EQ(tok->decode({259, 'a', 261, 258}), "a<tool> a");
}

TEST(ByteLevel, UnknownPreTokenizerIsOneClearError) {
  auto tok = Tokenizer::from_vocab(tiny_byte_vocab("bogus-pre"));
  ASSERT_FALSE(tok.ok());
  const std::string msg = tok.status().message();
  EXPECT_NE(msg.find("tokenizer.ggml.pre = 'bogus-pre'"), std::string::npos) << msg;
  for (const char* name : {"gpt-2", "llama-bpe", "qwen2", "llama4"}) EXPECT_NE(msg.find(name), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  auto none = Tokenizer::from_vocab(tiny_byte_vocab(""));
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("tokenizer.ggml.pre is missing"), std::string::npos);
}

TEST(ByteLevel, BadMergesNameTheMerge) {
  Tokenizer::Vocab v = tiny_byte_vocab();
  v.merges.push_back("b c");  // "bc" is no token
  auto tok = Tokenizer::from_vocab(v);
  ASSERT_FALSE(tok.ok());
  EXPECT_NE(tok.status().message().find("tokenizer.ggml.merges[3] = 'b c'"), std::string::npos)
      << tok.status().to_string();
  v = tiny_byte_vocab();
  v.merges.push_back("abc");
  tok = Tokenizer::from_vocab(v);
  ASSERT_FALSE(tok.ok());
  EXPECT_NE(tok.status().message().find("tokenizer.ggml.merges[3]"), std::string::npos);
}

// ---- arch/ models: Llama 3 (l3), Qwen2, Llama 4 (l4) vocabularies ------------------------------

TEST(ArchVocabs, QwenSplitsDigitsOneByOne) {
  const std::string path = test::reference_dir() + "/arch/qwen2-Q8_0.gguf";
  REQUIRE_VOCAB(tok, path);
  EXPECT_TRUE(tok->is_byte_level());
  EXPECT_EQ(tok->n_vocab(), 768);
  EXPECT_EQ(tok->bos(), 742);
  EXPECT_FALSE(tok->add_bos_default());
  const std::vector<int32_t> ids = tok->encode("2024", false);
  ASSERT_EQ(ids.size(), 4u) << ids_str(ids);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(ids[i], tok->find(std::string(1, "2024"[i])));
  EXPECT_EQ(tok->encode("<|im_end|>", false, true), (std::vector<int32_t>{744}));
  EXPECT_EQ(tok->token_type(tok->find("<tool_call>")), TokenType::kUserDefined);
  EXPECT_EQ(tok->encode("<tool_call>", false), (std::vector<int32_t>{tok->find("<tool_call>")}));
  const std::string text = "def f(x):\n    return x * 2024  # caf\xC3\xA9 \xF0\x9F\x99\x82";
  EXPECT_EQ(tok->decode(tok->encode(text, false)), text);
}

TEST(ArchVocabs, Llama3AndLlama4VocabsLoadAndRoundTrip) {
  struct Case {
    const char* name;
    const char* eot;  // end-of-turn token spelling
    int32_t eot_id;
  };
  for (const Case& c : {Case{"l3-Q8_0.gguf", "<|eot_id|>", 768 + 9}, Case{"l4-Q8_0.gguf", "<|eot|>", 309}}) {
    const char* name = c.name;
    const std::string path = test::reference_dir() + "/arch/" + name;
    if (!std::filesystem::exists(path)) continue;
    const Tokenizer* tok = shared_tokenizer(path);
    ASSERT_NE(tok, nullptr) << path;
    EXPECT_TRUE(tok->is_byte_level()) << name;
    const std::string text = "Hello World, HTTPServer's 12345 rows\n\n\ttabs \xC3\xA9t\xC3\xA9 \xF0\x9F\x99\x82";
    EXPECT_EQ(tok->decode(tok->encode(text, true)), text) << name;
    EXPECT_EQ(tok->find(c.eot), c.eot_id) << name;
    EXPECT_EQ(tok->encode(c.eot, false, true), (std::vector<int32_t>{c.eot_id})) << name;
    EXPECT_GT(tok->encode(c.eot, false, false).size(), 1u) << name;
    EXPECT_TRUE(tok->add_bos_default()) << name;  // add_bos_token = true
  }
}

// ---- CLI --------------------------------------------------------------------------------------

// A metadata-only GGUF with a byte-level vocab whose pre-tokenizer is `pre`.
std::vector<uint8_t> byte_vocab_gguf(const std::string& pre) {
  const Tokenizer::Vocab v = tiny_byte_vocab();
  test::Bytes kv;
  auto str_kv = [&](const std::string& key, const std::string& value) { kv.str(key).put<uint32_t>(8).str(value); };
  auto str_array = [&](const std::string& key, const std::vector<std::string>& values) {
    kv.str(key).put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(values.size());
    for (const auto& s : values) kv.str(s);
  };
  str_kv("tokenizer.ggml.model", "gpt2");
  str_kv("tokenizer.ggml.pre", pre);
  str_array("tokenizer.ggml.tokens", v.tokens);
  kv.str("tokenizer.ggml.token_type").put<uint32_t>(9).put<uint32_t>(5).put<uint64_t>(v.types.size());
  for (int32_t t : v.types) kv.put<int32_t>(t);
  str_array("tokenizer.ggml.merges", v.merges);
  test::Bytes file;
  file.header(0, 5).raw(kv);
  while (file.b.size() % 32) file.b.push_back(0);
  return file.b;
}

TEST(TokenizeCommandBpe, SpecialFlagAndErrors) {
  const std::string flea = test::bin_dir() + "/flea";
  if (!std::filesystem::exists(flea)) GTEST_SKIP() << "flea not built";
  std::string out;
  if (std::filesystem::exists(llama_bpe_path())) {
    EXPECT_EQ(test::run_command(flea + " tokenize --model " + llama_bpe_path() + " --text '<|eot_id|>' --special", &out), 0);
    EXPECT_EQ(out, "[128009]\n");
    EXPECT_EQ(test::run_command(flea + " tokenize --model " + llama_bpe_path() + " --text '<|eot_id|>'", &out), 0);
    EXPECT_NE(out, "[128009]\n");
    EXPECT_EQ(test::run_command(flea + " tokenize --model " + llama_bpe_path() + " --text 'Hello world' --bos", &out), 0);
    EXPECT_EQ(out, "[128000, 9906, 1917]\n");
  }
  test::TempDir dir;
  test::write_bytes(dir.file("ok.gguf"), byte_vocab_gguf("gpt-2"));
  EXPECT_EQ(test::run_command(flea + " tokenize --model " + dir.file("ok.gguf") + " --text 'abc a' 2>&1", &out), 0);
  EXPECT_EQ(out, "[257, 258]\n");
  test::write_bytes(dir.file("bad.gguf"), byte_vocab_gguf("mystery-pre"));
  EXPECT_EQ(test::run_command(flea + " tokenize --model " + dir.file("bad.gguf") + " --text x 2>&1", &out), 2);
  EXPECT_NE(out.find("tokenizer.ggml.pre = 'mystery-pre'"), std::string::npos) << out;
  EXPECT_NE(out.find("llama-bpe"), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
}

// `flea generate --prompt` on a Llama 3 style model: the prompt goes through the byte-level BPE (BOS
// first, as add_bos_token says), and the printed text is the decoding of exactly the generated ids.
TEST(GenerateCommandBpe, PromptOnALlama3FileUsesTheBpeVocab) {
  const std::string flea = test::bin_dir() + "/flea";
  const std::string model = test::reference_dir() + "/arch/l3-Q8_0.gguf";
  if (!std::filesystem::exists(flea) || !std::filesystem::exists(model)) GTEST_SKIP() << "flea or arch/l3 missing";
  std::string ids, json, text;
  ASSERT_EQ(test::run_command(flea + " tokenize --model " + model + " --text 'The quick brown fox' --bos", &ids), 0);
  ASSERT_EQ(test::run_command(flea + " generate --model " + model + " --prompt 'The quick brown fox' --n 8 --json", &json), 0);
  const nlohmann::json j = nlohmann::json::parse(json);
  const auto prompt = nlohmann::json::parse(ids).get<std::vector<int32_t>>();
  EXPECT_EQ(prompt.front(), 768);  // <|begin_of_text|> of the l3 vocab
  EXPECT_EQ(j["n_prompt"].get<size_t>(), prompt.size());
  // Greedy from the same ids gives the same tokens.
  std::string csv;
  for (size_t i = 0; i < prompt.size(); ++i) csv += (i ? "," : "") + std::to_string(prompt[i]);
  std::string by_ids;
  ASSERT_EQ(test::run_command(flea + " generate --model " + model + " --tokens " + csv + " --n 8", &by_ids), 0);
  // (--prompt stops at an end-of-generation token; --tokens has no vocabulary to stop on.)
  const auto want_ids = nlohmann::json::parse(by_ids)["tokens"].get<std::vector<int32_t>>();
  const auto got_ids = j["tokens"].get<std::vector<int32_t>>();
  ASSERT_FALSE(got_ids.empty());
  ASSERT_LE(got_ids.size(), want_ids.size());
  EXPECT_TRUE(std::equal(got_ids.begin(), got_ids.end(), want_ids.begin()));
  // The streamed text is the vocabulary's decoding of those tokens.
  ASSERT_EQ(test::run_command(flea + " generate --model " + model + " --prompt 'The quick brown fox' --n 8", &text), 0);
  auto f = gguf::read_file(model);
  ASSERT_TRUE(f.ok());
  auto tok = Tokenizer::from_gguf(*f);
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  std::vector<int32_t> generated = j["tokens"].get<std::vector<int32_t>>();
  std::vector<int32_t> out;
  for (int32_t id : generated) {
    if (tok->is_end_of_generation(id)) break;
    out.push_back(id);
  }
  const std::string want = tok->decode(out);
  EXPECT_NE(text.find(want), std::string::npos) << "printed: '" << text << "' decoded: '" << want << "'";
  EXPECT_FALSE(want.empty());
}

}  // namespace
}  // namespace flea
