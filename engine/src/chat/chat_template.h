// Chat templates: turning a list of messages into the prompt text a chat model was trained on.
// GGUF files carry the template as Jinja source (tokenizer.chat_template); rather than run Jinja,
// the engine recognises the common families by markers in that source and renders them itself.
#pragma once

#include <string>
#include <vector>

#include "flea/status.h"

namespace flea::chat {

struct Message {
  std::string role;     // "system", "user" or "assistant"
  std::string content;
};

// The families the engine renders. kNone: plain concatenation (the fallback for unknown templates).
enum class Family { kNone, kLlama2, kLlama3, kChatml, kMistral, kZephyr, kGemma, kPhi3, kLlama4 };

struct ChatTemplate {
  Family family = Family::kNone;
  std::string name;       // "llama2", "llama3", "chatml", ... ("none" for the fallback)
  std::string bos_text;   // the BOS token's text when the template writes it ("" otherwise)
                          // render() leaves the leading BOS out: tokenize with add_bos (as
                          // llama.cpp's llama_chat_apply_template does); later BOS (llama2) are written.
  std::string eos_text;   // the EOS/end-of-turn token's text
  // Texts that end an assistant turn (e.g. "<|eot_id|>", "<|im_end|>", "</s>"): generation stops there.
  std::vector<std::string> stop_texts;
};

// "llama2, llama3, chatml, ...": for --help and errors. Mistral has variants told apart by their
// whitespace: "mistral" is v3 ("[INST] u[/INST] a</s>": Mistral 7B v0.3, Mixtral 8x22B, Large 2407),
// and "mistral-v0" (pre-v1 templates), "mistral-v1", "mistral-v3-tekken", "mistral-v7"; "none"
// writes the contents one per line.
std::string family_names();

// The template named `name` (one of family_names()), or an error naming the valid ones.
StatusOr<ChatTemplate> template_by_name(const std::string& name);

// Recognises the family of a GGUF tokenizer.chat_template source by its markers. Empty or unrecognised source
// returns the fallback (chatml) and sets *warning to one line naming the fallback; otherwise
// *warning is cleared.
ChatTemplate detect_template(const std::string& jinja_source, std::string* warning);

// The prompt text for `messages`; with add_generation_prompt the text ends where the assistant's
// reply begins. Errors on a role the family cannot express (e.g. a system message where it has none
// is folded into the first user turn, as the reference templates do; an unknown role is an error).
StatusOr<std::string> render(const ChatTemplate& tmpl, const std::vector<Message>& messages,
                             bool add_generation_prompt);

}  // namespace flea::chat
