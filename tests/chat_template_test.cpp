// Chat templates: family detection from real GGUF/HF template sources, rendering against published
// expected strings, the chatml fallback, role errors, stop texts, and the prefix property flea chat
// relies on to reuse its KV cache across turns.
//
// Expected strings: tests/fixtures/chat_templates/llama_cpp_vectors.json holds template sources of
// real models and the expected outputs from llama.cpp's tests/test-chat-template.cpp (its "source"
// field names the commit). Llama 4 and Zephyr have no vector there; their expected strings are
// written out below from the formats their model cards and reference templates give.
#include "chat/chat_template.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "test_util.h"
#include "tokenizer/tokenizer.h"
#include "gguf/gguf.h"

namespace flea::chat {
namespace {

// The conversation of llama.cpp's test-chat-template.cpp (note the padded assistant reply).
std::vector<Message> conversation() {
  return {
      {"system", "You are a helpful assistant"},
      {"user", "Hello"},
      {"assistant", "Hi there"},
      {"user", "Who are you"},
      {"assistant", "   I am an assistant   "},
      {"user", "Another question"},
  };
}

nlohmann::json load_vectors() {
  std::ifstream in(test::source_dir() + "/tests/fixtures/chat_templates/llama_cpp_vectors.json");
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

std::string render_or_die(const ChatTemplate& t, const std::vector<Message>& m, bool gen) {
  auto r = render(t, m, gen);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() ? *r : std::string();
}

TEST(ChatTemplate, DetectsTheFamilyOfRealTemplates) {
  const nlohmann::json v = load_vectors();
  ASSERT_GE(v.at("cases").size(), 14u);
  for (const auto& c : v.at("cases")) {
    std::string warning = "stale";
    const ChatTemplate t = detect_template(c.at("template").get<std::string>(), &warning);
    EXPECT_EQ(t.name, c.at("family").get<std::string>()) << c.at("model");
    EXPECT_EQ(warning, "") << c.at("model");
  }
}

TEST(ChatTemplate, RendersLikeTheReferenceVectors) {
  const nlohmann::json v = load_vectors();
  int checked = 0;
  for (const auto& c : v.at("cases")) {
    const std::string family = c.at("family").get<std::string>();
    if (family == "llama2") continue;  // see RendersMetasLlama2Format
    auto t = template_by_name(family);
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(render_or_die(*t, conversation(), true), c.at("expected").get<std::string>()) << c.at("model");
    ++checked;
  }
  EXPECT_EQ(checked, 12);
}

// Meta's Llama 2 template: bos_token + '[INST] ' + content.strip() + ' [/INST]' per user turn,
// ' ' + content.strip() + ' ' + eos_token per reply, the system prompt in <<SYS>> inside the first
// turn. llama.cpp's Jinja-rendered vector for FusionNet's template is that format without the strip;
// the tokenizer adds the leading <s>.
TEST(ChatTemplate, RendersMetasLlama2Format) {
  const nlohmann::json v = load_vectors();
  std::string fusionnet_jinja;
  for (const auto& c : v.at("cases")) {
    if (c.at("model") == "TheBloke/FusionNet_34Bx2_MoE-AWQ") fusionnet_jinja = c.at("expected_jinja");
  }
  ASSERT_FALSE(fusionnet_jinja.empty());
  const std::string unstripped = " [/INST]    I am an assistant    </s>";
  const size_t at = fusionnet_jinja.find(unstripped);
  ASSERT_NE(at, std::string::npos);
  const std::string expected = fusionnet_jinja.replace(at, unstripped.size(), " [/INST] I am an assistant </s>");
  EXPECT_EQ(render_or_die(*template_by_name("llama2"), conversation(), true), expected);
}

TEST(ChatTemplate, Llama4) {
  // Llama 4's headers (<|header_start|>role<|header_end|>\n\n), contents trimmed, <|eot|> after
  // each turn; as in llama.cpp's llama4 renderer and Meta's Llama 4 prompt-format documentation.
  const std::string src =
      "{{- bos_token }}{%- for message in messages %}{{- '<|header_start|>' + message['role'] + "
      "'<|header_end|>\\n\\n' }}{{- message['content'] | trim }}{{- '<|eot|>' }}{%- endfor %}"
      "{%- if add_generation_prompt %}{{- '<|header_start|>assistant<|header_end|>\\n\\n' }}{%- endif %}";
  std::string warning;
  const ChatTemplate t = detect_template(src, &warning);
  EXPECT_EQ(t.family, Family::kLlama4);
  EXPECT_EQ(render_or_die(t, conversation(), true),
            "<|header_start|>system<|header_end|>\n\nYou are a helpful assistant<|eot|>"
            "<|header_start|>user<|header_end|>\n\nHello<|eot|>"
            "<|header_start|>assistant<|header_end|>\n\nHi there<|eot|>"
            "<|header_start|>user<|header_end|>\n\nWho are you<|eot|>"
            "<|header_start|>assistant<|header_end|>\n\nI am an assistant<|eot|>"
            "<|header_start|>user<|header_end|>\n\nAnother question<|eot|>"
            "<|header_start|>assistant<|header_end|>\n\n");
  EXPECT_EQ(t.eos_text, "<|eot|>");
}

TEST(ChatTemplate, Zephyr) {
  // HuggingFaceH4/zephyr-7b-beta's tokenizer_config.json template (Jinja's trim_blocks keeps the
  // newline after each '}}').
  const std::string src =
      "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
      "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
      "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
      "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";
  const ChatTemplate t = detect_template(src, nullptr);
  EXPECT_EQ(t.family, Family::kZephyr);
  EXPECT_EQ(render_or_die(t, conversation(), true),
            "<|system|>\nYou are a helpful assistant</s>\n<|user|>\nHello</s>\n<|assistant|>\nHi there</s>\n"
            "<|user|>\nWho are you</s>\n<|assistant|>\n   I am an assistant   </s>\n"
            "<|user|>\nAnother question</s>\n<|assistant|>\n");
  // StableLM-Zephyr writes <|endoftext|> literally; the turns end with it (llama.cpp's zephyr vector form).
  const ChatTemplate s = detect_template(
      "{% for message in messages %}{{'<|' + message['role'] + '|>\\n' + message['content'] + '<|endoftext|>\\n'}}"
      "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}", nullptr);
  EXPECT_EQ(s.family, Family::kZephyr);
  EXPECT_EQ(render_or_die(s, {{"user", "Hello"}}, true), "<|user|>\nHello<|endoftext|>\n<|assistant|>\n");
}

TEST(ChatTemplate, EmptyOrUnknownFallsBackToChatmlWithAWarning) {
  std::string warning;
  ChatTemplate t = detect_template("", &warning);
  EXPECT_EQ(t.family, Family::kChatml);
  EXPECT_NE(warning.find("chatml"), std::string::npos) << warning;
  EXPECT_NE(warning.find("no chat template"), std::string::npos) << warning;
  EXPECT_EQ(warning.find('\n'), std::string::npos);

  t = detect_template("{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}{% endfor %}", &warning);
  EXPECT_EQ(t.family, Family::kChatml);
  EXPECT_NE(warning.find("unrecognised"), std::string::npos) << warning;

  t = detect_template("{{ '<start_of_turn>' }}", &warning);  // a recognised one clears the warning
  EXPECT_EQ(t.family, Family::kGemma);
  EXPECT_EQ(warning, "");
}

TEST(ChatTemplate, UnknownRoleIsAnError) {
  for (const char* name : {"chatml", "llama2", "llama3", "mistral", "gemma", "phi3", "none"}) {
    auto r = render(*template_by_name(name), {{"user", "hi"}, {"tool", "42"}}, true);
    ASSERT_FALSE(r.ok()) << name;
    EXPECT_NE(r.status().message().find("'tool'"), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find("message 1"), std::string::npos) << r.status().message();
  }
}

TEST(ChatTemplate, ByNameKnowsEveryListedNameAndNamesThemOnError) {
  std::stringstream names(family_names());
  std::string name;
  int n = 0;
  while (std::getline(names, name, ',')) {
    name.erase(0, name.find_first_not_of(' '));
    auto t = template_by_name(name);
    ASSERT_TRUE(t.ok()) << name;
    EXPECT_EQ(t->name, name);
    ++n;
  }
  EXPECT_GE(n, 9);
  auto bad = template_by_name("chatm");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'chatm'"), std::string::npos);
  EXPECT_NE(bad.status().message().find("llama3"), std::string::npos);
}

// A rendered reply ends with one of the template's stop texts, so generation stops where the
// template would end the turn.
TEST(ChatTemplate, RepliesEndWithAStopText) {
  for (const char* name : {"chatml", "llama2", "llama3", "llama4", "mistral", "mistral-v0", "mistral-v1",
                           "mistral-v3-tekken", "mistral-v7", "zephyr", "gemma", "phi3"}) {
    const ChatTemplate t = *template_by_name(name);
    ASSERT_FALSE(t.stop_texts.empty()) << name;
    const std::string text = render_or_die(t, {{"user", "Hello"}, {"assistant", "REPLY"}}, false);
    const size_t at = text.rfind("REPLY");
    ASSERT_NE(at, std::string::npos) << name;
    std::string after = text.substr(at + 5);
    after.erase(0, after.find_first_not_of(' '));
    bool found = false;
    for (const std::string& s : t.stop_texts) found = found || after.rfind(s, 0) == 0;
    EXPECT_TRUE(found) << name << ": '" << after << "'";
  }
  EXPECT_EQ(template_by_name("llama3")->stop_texts.front(), "<|eot_id|>");
  EXPECT_EQ(template_by_name("chatml")->stop_texts.front(), "<|im_end|>");
  EXPECT_EQ(template_by_name("gemma")->stop_texts.front(), "<end_of_turn>");
  EXPECT_EQ(template_by_name("phi3")->stop_texts.front(), "<|end|>");
  EXPECT_EQ(template_by_name("llama4")->stop_texts.front(), "<|eot|>");
  EXPECT_EQ(template_by_name("mistral")->stop_texts.front(), "</s>");
}

// The prompt for a turn is a prefix of the next turn's prompt once the reply is in the history:
// what lets flea chat evaluate only the new suffix.
TEST(ChatTemplate, PromptIsAPrefixOfTheNextTurn) {
  std::stringstream names(family_names());
  std::string name;
  while (std::getline(names, name, ',')) {
    name.erase(0, name.find_first_not_of(' '));
    const ChatTemplate t = *template_by_name(name);
    std::vector<Message> m = {{"system", "Be brief."}, {"user", "Hello"}};
    const std::string first = render_or_die(t, m, true);
    m.push_back({"assistant", "Hi there"});
    m.push_back({"user", "Again"});
    const std::string second = render_or_die(t, m, true);
    EXPECT_EQ(second.compare(0, first.size(), first), 0) << name << "\n" << first << "\n---\n" << second;
    EXPECT_NE(second.find("Be brief."), std::string::npos) << name;  // the system prompt is kept (or folded)
  }
}

TEST(ChatTemplate, SystemPromptFoldedWhereTheFamilyHasNone) {
  EXPECT_EQ(render_or_die(*template_by_name("gemma"), {{"system", " Sys "}, {"user", "Hi"}}, true),
            "<start_of_turn>user\nSys\n\nHi<end_of_turn>\n<start_of_turn>model\n");
  EXPECT_EQ(render_or_die(*template_by_name("mistral"), {{"system", "Sys"}, {"user", "Hi"}}, true),
            "[INST] Sys\n\nHi[/INST]");
  EXPECT_EQ(render_or_die(*template_by_name("llama2"), {{"system", "Sys"}, {"user", "Hi"}}, true),
            "[INST] <<SYS>>\nSys\n<</SYS>>\n\nHi [/INST]");
}

TEST(ChatTemplate, GenerationPromptOnlyWhenAsked) {
  const std::vector<Message> m = {{"user", "Hello"}};
  EXPECT_EQ(render_or_die(*template_by_name("chatml"), m, false), "<|im_start|>user\nHello<|im_end|>\n");
  EXPECT_EQ(render_or_die(*template_by_name("chatml"), m, true),
            "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(render_or_die(*template_by_name("llama3"), m, true),
            "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
}

// With the Llama 3 vocabulary the rendered markers are single control tokens when the text is
// tokenized with special-token parsing, as flea chat does.
TEST(ChatTemplate, Llama3MarkersAreSingleTokensInTheReferenceVocab) {
  const std::string path = test::reference_dir() + "/tokenizer/ggml-vocab-llama-bpe.gguf";
  auto file = gguf::read_file(path);
  if (!file.ok()) GTEST_SKIP() << "no reference vocab at " << path;
  auto tok = Tokenizer::from_gguf(*file);
  ASSERT_TRUE(tok.ok());
  std::string warning;
  auto src = file->get_string("tokenizer.chat_template");
  // The reference vocab files carry no chat template: detection falls back and says so.
  const ChatTemplate detected = detect_template(src.ok() ? *src : "", &warning);
  if (!src.ok()) {
    EXPECT_FALSE(warning.empty());
  }
  (void)detected;
  const ChatTemplate t = *template_by_name("llama3");
  const std::string text = render_or_die(t, {{"user", "Hello"}}, true);
  const std::vector<int32_t> ids = tok->encode(text, true, true);
  const int32_t eot = tok->find("<|eot_id|>"), header = tok->find("<|start_header_id|>");
  ASSERT_GE(eot, 0);
  ASSERT_GE(header, 0);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), header), 2);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), eot), 1);
  EXPECT_TRUE(tok->is_end_of_generation(eot));
}

}  // namespace
}  // namespace flea::chat
