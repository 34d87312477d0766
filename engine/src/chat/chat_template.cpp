#include "chat/chat_template.h"

#include <array>

namespace flea::chat {
namespace {

// One row per name template_by_name() accepts. The Mistral variants share Family::kMistral and
// differ only in whitespace and in how the system prompt is written (see render_mistral).
struct Spec {
  const char* name;
  Family family;
  const char* bos_text;
  const char* eos_text;
  std::array<const char*, 3> stops;  // besides eos_text; nullptr-terminated
};

constexpr Spec kSpecs[] = {
    {"chatml", Family::kChatml, "", "<|im_end|>", {"<|endoftext|>", nullptr, nullptr}},
    {"llama2", Family::kLlama2, "<s>", "</s>", {nullptr, nullptr, nullptr}},
    {"llama3", Family::kLlama3, "<|begin_of_text|>", "<|eot_id|>", {"<|eom_id|>", "<|end_of_text|>", nullptr}},
    {"llama4", Family::kLlama4, "<|begin_of_text|>", "<|eot|>", {"<|eom|>", "<|end_of_text|>", nullptr}},
    {"mistral", Family::kMistral, "<s>", "</s>", {nullptr, nullptr, nullptr}},
    {"mistral-v0", Family::kMistral, "<s>", "</s>", {nullptr, nullptr, nullptr}},
    {"mistral-v1", Family::kMistral, "<s>", "</s>", {nullptr, nullptr, nullptr}},
    {"mistral-v3-tekken", Family::kMistral, "<s>", "</s>", {nullptr, nullptr, nullptr}},
    {"mistral-v7", Family::kMistral, "<s>", "</s>", {nullptr, nullptr, nullptr}},
    {"zephyr", Family::kZephyr, "", "</s>", {"<|endoftext|>", nullptr, nullptr}},
    {"gemma", Family::kGemma, "<bos>", "<end_of_turn>", {"<eos>", nullptr, nullptr}},
    {"phi3", Family::kPhi3, "", "<|end|>", {"<|endoftext|>", nullptr, nullptr}},
    {"none", Family::kNone, "", "", {nullptr, nullptr, nullptr}},
};

ChatTemplate from_spec(const Spec& s) {
  ChatTemplate t;
  t.family = s.family;
  t.name = s.name;
  t.bos_text = s.bos_text;
  t.eos_text = s.eos_text;
  if (!t.eos_text.empty()) t.stop_texts.push_back(t.eos_text);
  for (const char* stop : s.stops) {
    if (stop) t.stop_texts.emplace_back(stop);
  }
  return t;
}

ChatTemplate named(const std::string& name) {
  for (const Spec& s : kSpecs) {
    if (name == s.name) return from_spec(s);
  }
  FLEA_CHECK(false, "no chat template spec named " + name);
  return {};
}

bool contains(const std::string& haystack, const char* needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string trim(const std::string& s) {
  const char* kSpace = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(kSpace);
  if (b == std::string::npos) return "";
  const size_t e = s.find_last_not_of(kSpace);
  return s.substr(b, e - b + 1);
}

Status check_roles(const std::vector<Message>& messages) {
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& r = messages[i].role;
    if (r != "system" && r != "user" && r != "assistant") {
      return invalid_argument("message " + std::to_string(i) + ": unknown role '" + r +
                              "' (expected system, user or assistant)");
    }
  }
  return ok_status();
}

// Roles written as headers: "<prefix>role<suffix>content<end>" per message, then the assistant
// header as generation prompt. chatml, zephyr, phi3, llama3 and llama4 differ only in these texts
// and in whether the content is trimmed.
std::string render_headers(const std::vector<Message>& messages, bool add_generation_prompt, const char* prefix,
                           const char* suffix, const char* end, bool trim_content) {
  std::string out;
  for (const Message& m : messages) {
    out += prefix + m.role + suffix + (trim_content ? trim(m.content) : m.content) + end;
  }
  if (add_generation_prompt) out += std::string(prefix) + "assistant" + suffix;
  return out;
}

// Meta's Llama 2 chat format (the tokenizer adds the first <s>):
//   [INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] {user} [/INST]
// Contents are stripped, as in Meta's template. A system message is held and written into the next
// user turn.
std::string render_llama2(const std::vector<Message>& messages) {
  std::string out, system;
  bool after_reply = false;
  for (const Message& m : messages) {
    if (m.role == "system") {
      system += trim(m.content);
    } else if (m.role == "user") {
      if (after_reply) out += "<s>";
      out += "[INST] ";
      if (!system.empty()) out += "<<SYS>>\n" + system + "\n<</SYS>>\n\n";
      system.clear();
      out += trim(m.content) + " [/INST]";
      after_reply = false;
    } else {
      out += " " + trim(m.content) + " </s>";
      after_reply = true;
    }
  }
  return out;
}

// Mistral's [INST] formats. The system prompt goes into the first [INST] block after it (v0: a
// line, v1/v3: a paragraph), except v7, which has its own [SYSTEM_PROMPT] block.
//   v0 (pre-v1 templates): [INST] {user} [/INST]{assistant}</s>
//   v1:                     [INST] {user} [/INST] {assistant}</s>
//   v3 ("mistral"):        [INST] {user}[/INST] {assistant, trimmed}</s>
//   v3-tekken:             [INST]{user}[/INST]{assistant}</s>
//   v7:                    [SYSTEM_PROMPT] {system}[/SYSTEM_PROMPT][INST] {user}[/INST] {assistant}</s>
std::string render_mistral(const std::string& variant, const std::vector<Message>& messages) {
  std::string out;
  if (variant == "mistral-v7") {
    for (const Message& m : messages) {
      if (m.role == "system") out += "[SYSTEM_PROMPT] " + m.content + "[/SYSTEM_PROMPT]";
      else if (m.role == "user") out += "[INST] " + m.content + "[/INST]";
      else out += " " + m.content + "</s>";
    }
    return out;
  }
  const bool v0 = variant == "mistral-v0", v1 = variant == "mistral-v1", tekken = variant == "mistral-v3-tekken";
  const std::string open = v1 ? " [INST] " : tekken ? "[INST]" : "[INST] ";
  const std::string close = v0 || v1 ? " [/INST]" : "[/INST]";
  const std::string reply_prefix = v0 || tekken ? "" : " ";
  const std::string system_sep = v0 ? "\n" : "\n\n";
  bool in_turn = false;
  for (const Message& m : messages) {
    if (!in_turn && m.role != "assistant") {
      out += open;
      in_turn = true;
    }
    if (m.role == "system") {
      out += m.content + system_sep;
    } else if (m.role == "user") {
      out += m.content + close;
    } else {
      const bool trim_reply = variant == "mistral";
      out += reply_prefix + (trim_reply ? trim(m.content) : m.content) + "</s>";
      in_turn = false;
    }
  }
  return out;
}

// Gemma has no system role: the system text (trimmed) opens the next user turn as a paragraph.
std::string render_gemma(const std::vector<Message>& messages, bool add_generation_prompt) {
  std::string out, system;
  for (const Message& m : messages) {
    if (m.role == "system") {
      system += trim(m.content);
      continue;
    }
    const bool user = m.role == "user";
    out += std::string("<start_of_turn>") + (user ? "user" : "model") + "\n";
    if (user && !system.empty()) {
      out += system + "\n\n";
      system.clear();
    }
    out += trim(m.content) + "<end_of_turn>\n";
  }
  if (add_generation_prompt) out += "<start_of_turn>model\n";
  return out;
}

}  // namespace

std::string family_names() {
  std::string out;
  for (const Spec& s : kSpecs) {
    if (!out.empty()) out += ", ";
    out += s.name;
  }
  return out;
}

StatusOr<ChatTemplate> template_by_name(const std::string& name) {
  for (const Spec& s : kSpecs) {
    if (name == s.name) return from_spec(s);
  }
  return invalid_argument("unknown chat template '" + name + "' (known: " + family_names() + ")");
}

ChatTemplate detect_template(const std::string& src, std::string* warning) {
  if (warning) warning->clear();
  auto fallback = [&](const std::string& why) {
    if (warning) *warning = why + ": using the chatml template";
    return named("chatml");
  };
  if (src.empty()) return fallback("the model has no chat template (tokenizer.chat_template)");
  // Most specific markers first: Llama 4 and Llama 3 headers, then the turn markers of the others.
  if (contains(src, "<|im_start|>")) return named("chatml");
  if (contains(src, "<|header_start|>")) return named("llama4");
  if (contains(src, "<|start_header_id|>")) return named("llama3");
  if (contains(src, "<start_of_turn>")) return named("gemma");
  if (contains(src, "[INST]")) {
    if (contains(src, "<<SYS>>")) return named("llama2");
    // Mistral's official templates, told apart by their distinctive pieces (mistralai/cookbook
    // concept-deep-dive/tokenization): v7 has [SYSTEM_PROMPT]; v1 opens turns with " [INST]";
    // v3-tekken writes "[INST]" with no space after; v3 has tools; anything else is a pre-v1 template.
    if (contains(src, "[SYSTEM_PROMPT]")) return named("mistral-v7");
    if (contains(src, "' [INST] '") || contains(src, "\" [INST] \"")) return named("mistral-v1");
    if (contains(src, "\"[INST]\"")) return named("mistral-v3-tekken");
    if (contains(src, "[AVAILABLE_TOOLS]")) return named("mistral");
    return named("mistral-v0");
  }
  if (contains(src, "<|user|>") || contains(src, "<|assistant|>")) {
    if (contains(src, "<|end|>")) return named("phi3");
    ChatTemplate t = named("zephyr");
    // StableLM-Zephyr spells the end of a turn <|endoftext|> in the source; HF's zephyr uses eos_token (</s>).
    if (contains(src, "<|endoftext|>")) {
      t.eos_text = "<|endoftext|>";
      t.stop_texts = {"<|endoftext|>", "</s>"};
    }
    return t;
  }
  return fallback("unrecognised chat template (no llama2/llama3/llama4/chatml/mistral/zephyr/gemma/phi3 markers)");
}

StatusOr<std::string> render(const ChatTemplate& tmpl, const std::vector<Message>& messages,
                             bool add_generation_prompt) {
  FLEA_RETURN_IF_ERROR(check_roles(messages));
  switch (tmpl.family) {
    case Family::kChatml:
      return render_headers(messages, add_generation_prompt, "<|im_start|>", "\n", "<|im_end|>\n", false);
    case Family::kLlama3:
      return render_headers(messages, add_generation_prompt, "<|start_header_id|>", "<|end_header_id|>\n\n",
                            "<|eot_id|>", true);
    case Family::kLlama4:
      return render_headers(messages, add_generation_prompt, "<|header_start|>", "<|header_end|>\n\n", "<|eot|>",
                            true);
    case Family::kPhi3:
      return render_headers(messages, add_generation_prompt, "<|", "|>\n", "<|end|>\n", false);
    case Family::kZephyr: {
      const std::string end = (tmpl.eos_text.empty() ? std::string("</s>") : tmpl.eos_text) + "\n";
      return render_headers(messages, add_generation_prompt, "<|", "|>\n", end.c_str(), false);
    }
    case Family::kLlama2:
      return render_llama2(messages);
    case Family::kMistral:
      return render_mistral(tmpl.name, messages);
    case Family::kGemma:
      return render_gemma(messages, add_generation_prompt);
    case Family::kNone: {
      std::string out;
      for (const Message& m : messages) out += m.content + "\n";
      return out;
    }
  }
  return internal_error("render: unhandled chat template family");
}

}  // namespace flea::chat
