#include "serve/openai.h"

#include <algorithm>
#include <set>

namespace flea::serve {
namespace {

using nlohmann::json;

// Fields of the OpenAI schemas that change nothing here (accepted, type-checked where cheap).
const std::set<std::string> kIgnoredFields = {"user", "metadata", "store", "service_tier", "parallel_tool_calls"};

// Fields the engine implements, per endpoint, plus those refused with a reason unless neutral.
const std::set<std::string> kChatFields = {
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop",
    "stream", "stream_options", "n", "frequency_penalty", "presence_penalty", "logit_bias", "logprobs",
    "top_logprobs", "response_format", "tools", "tool_choice", "functions", "function_call"};
const std::set<std::string> kCompletionFields = {
    "model", "prompt", "max_tokens", "temperature", "top_p", "seed", "stop", "stream", "stream_options",
    "n", "best_of", "echo", "suffix", "frequency_penalty", "presence_penalty", "logit_bias", "logprobs"};

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string type_name(const json& v) {
  if (v.is_number_integer()) return "integer";
  if (v.is_number()) return "number";
  return v.type_name();
}

// Each check sets *err and returns false; `field` names the key in messages.
struct Parser {
  ApiError* err;

  bool fail(const std::string& code, const std::string& message) {
    *err = invalid_request(code, message);
    return false;
  }
  bool wrong_type(const std::string& field, const json& v, const char* expected) {
    return fail("invalid_type", "'" + field + "' must be " + expected + ", got " + type_name(v));
  }
  bool number(const json& obj, const char* field, double lo, double hi, bool lo_open, double* out) {
    auto it = obj.find(field);
    if (it == obj.end() || it->is_null()) return true;
    if (!it->is_number()) return wrong_type(field, *it, "a number");
    const double v = it->get<double>();
    if (!(lo_open ? v > lo : v >= lo) || !(v <= hi)) {
      return fail("invalid_value", "'" + std::string(field) + "' is " + it->dump() + ", allowed " +
                                       (lo_open ? "(" : "[") + json(lo).dump() + ", " + json(hi).dump() + "]");
    }
    *out = v;
    return true;
  }
  bool boolean(const json& obj, const char* field, bool* out) {
    auto it = obj.find(field);
    if (it == obj.end() || it->is_null()) return true;
    if (!it->is_boolean()) return wrong_type(field, *it, "a boolean");
    *out = it->get<bool>();
    return true;
  }
  // A field that must be absent, null or `neutral` (what the engine does anyway).
  bool only_neutral(const json& obj, const char* field, const json& neutral, const char* why) {
    auto it = obj.find(field);
    if (it == obj.end() || it->is_null() || *it == neutral) return true;
    return fail("unsupported_value", "'" + std::string(field) + "' = " + it->dump() + " is not supported: " + why);
  }

  bool text_content(const json& content, size_t index, std::string* out) {
    const std::string where = "messages[" + std::to_string(index) + "].content";
    if (content.is_null()) return true;
    if (content.is_string()) {
      *out = content.get<std::string>();
      return true;
    }
    if (!content.is_array()) return wrong_type(where, content, "a string or an array of text parts");
    for (size_t k = 0; k < content.size(); ++k) {
      const json& part = content[k];
      const std::string pw = where + "[" + std::to_string(k) + "]";
      if (!part.is_object()) return wrong_type(pw, part, "an object {\"type\": \"text\", \"text\": ...}");
      auto type = part.find("type");
      auto text = part.find("text");
      if (type == part.end() || !type->is_string() || *type != "text") {
        return fail("unsupported_value", pw + ": only parts of type \"text\" are supported");
      }
      if (text == part.end() || !text->is_string()) return fail("invalid_type", pw + ".text must be a string");
      *out += text->get<std::string>();
    }
    return true;
  }

  bool messages(const json& body, std::vector<chat::Message>* out) {
    auto it = body.find("messages");
    if (it == body.end() || it->is_null()) return fail("missing_field", "'messages' is required");
    if (!it->is_array()) return wrong_type("messages", *it, "an array of messages");
    if (it->empty()) return fail("invalid_value", "'messages' is empty");
    for (size_t i = 0; i < it->size(); ++i) {
      const json& m = (*it)[i];
      const std::string where = "messages[" + std::to_string(i) + "]";
      if (!m.is_object()) return wrong_type(where, m, "an object");
      auto role = m.find("role");
      if (role == m.end() || !role->is_string()) return fail("invalid_type", where + ".role must be a string");
      chat::Message msg;
      msg.role = role->get<std::string>();
      if (msg.role == "developer") msg.role = "system";  // the newer name of the system role
      if (msg.role != "system" && msg.role != "user" && msg.role != "assistant") {
        return fail("invalid_value", where + ".role is '" + role->get<std::string>() +
                                         "', allowed: system, developer, user, assistant");
      }
      auto content = m.find("content");
      if (content == m.end() && msg.role != "assistant") return fail("missing_field", where + ".content is required");
      if (content != m.end() && !text_content(*content, i, &msg.content)) return false;
      out->push_back(std::move(msg));
    }
    return true;
  }

  bool prompt(const json& body, std::string* out) {
    auto it = body.find("prompt");
    if (it == body.end() || it->is_null()) return fail("missing_field", "'prompt' is required");
    if (it->is_string()) {
      *out = it->get<std::string>();
      return true;
    }
    if (it->is_array() && it->size() == 1 && (*it)[0].is_string()) {
      *out = (*it)[0].get<std::string>();
      return true;
    }
    if (it->is_array() && it->size() > 1 && (*it)[0].is_string()) {
      return fail("unsupported_value", "'prompt' has " + std::to_string(it->size()) +
                                           " prompts: send one prompt per request");
    }
    if (it->is_array()) return fail("unsupported_value", "'prompt' as token ids is not supported: send text");
    return wrong_type("prompt", *it, "a string");
  }

  bool stop(const json& body, std::vector<std::string>* out) {
    auto it = body.find("stop");
    if (it == body.end() || it->is_null()) return true;
    std::vector<std::string> s;
    if (it->is_string()) {
      s.push_back(it->get<std::string>());
    } else if (it->is_array()) {
      for (const json& v : *it) {
        if (!v.is_string()) return wrong_type("stop[]", v, "a string");
        s.push_back(v.get<std::string>());
      }
    } else {
      return wrong_type("stop", *it, "a string or an array of strings");
    }
    if (s.size() > 4) return fail("invalid_value", "'stop' has " + std::to_string(s.size()) + " strings, at most 4");
    for (const auto& x : s) {
      if (x.empty()) return fail("invalid_value", "'stop' contains an empty string");
    }
    *out = std::move(s);
    return true;
  }

  bool max_tokens(const json& body, const char* field, const ParseLimits& limits, std::optional<int64_t>* out) {
    auto it = body.find(field);
    if (it == body.end() || it->is_null()) return true;
    if (!it->is_number_integer()) return wrong_type(field, *it, "an integer");
    if (it->is_number_unsigned() ? it->get<uint64_t>() > static_cast<uint64_t>(limits.max_tokens_limit)
                                 : it->get<int64_t>() > limits.max_tokens_limit) {
      return fail("invalid_value", "'" + std::string(field) + "' is " + it->dump() + ", this server allows at most " +
                                       std::to_string(limits.max_tokens_limit));
    }
    const int64_t v = it->get<int64_t>();
    if (v < 1) return fail("invalid_value", "'" + std::string(field) + "' is " + it->dump() + ", must be >= 1");
    *out = v;
    return true;
  }
};

}  // namespace

ApiError invalid_request(const std::string& code, const std::string& message) {
  return ApiError{400, "invalid_request_error", code, message};
}

std::string dump_json(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string error_body(const ApiError& e) {
  json j = {{"error", {{"message", e.message}, {"type", e.type}, {"code", e.code}, {"param", nullptr}}}};
  return dump_json(j);
}

const char* endpoint_path(Endpoint e) {
  return e == Endpoint::kChat ? "/v1/chat/completions" : "/v1/completions";
}

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    default: return nullptr;
  }
}

bool parse_completion_request(const std::string& body_text, Endpoint endpoint, const ParseLimits& limits,
                              CompletionRequest* out, ApiError* err) {
  Parser p{err};
  json body;
  try {
    body = json::parse(body_text);
  } catch (const json::exception& e) {
    return p.fail("invalid_json", std::string("the body is not valid JSON: ") + e.what());
  }
  if (!body.is_object()) return p.fail("invalid_json", "the body must be a JSON object, got " + type_name(body));
  const auto& known = endpoint == Endpoint::kChat ? kChatFields : kCompletionFields;
  for (const auto& [key, value] : body.items()) {
    if (known.count(key) || kIgnoredFields.count(key)) continue;
    std::string hint;
    size_t best = 3;
    for (const auto& k : known) {
      const size_t d = edit_distance(key, k);
      if (d < best) best = d, hint = " (did you mean '" + k + "'?)";
    }
    return p.fail("unknown_field", "unknown field '" + key + "' for " + endpoint_path(endpoint) + hint);
  }
  CompletionRequest r;
  r.endpoint = endpoint;
  if (auto it = body.find("model"); it != body.end() && !it->is_null()) {
    if (!it->is_string()) return p.wrong_type("model", *it, "a string");
    r.model = it->get<std::string>();
  }
  if (endpoint == Endpoint::kChat) {
    if (!p.messages(body, &r.messages)) return false;
    if (!p.max_tokens(body, "max_completion_tokens", limits, &r.max_tokens)) return false;
    if (!r.max_tokens && !p.max_tokens(body, "max_tokens", limits, &r.max_tokens)) return false;
    if (!p.only_neutral(body, "logprobs", false, "log probabilities are not returned")) return false;
    if (!p.only_neutral(body, "top_logprobs", 0, "log probabilities are not returned")) return false;
    if (!p.only_neutral(body, "tools", json::array(), "tool calls are not implemented")) return false;
    if (!p.only_neutral(body, "functions", json::array(), "function calls are not implemented")) return false;
    if (!p.only_neutral(body, "tool_choice", "none", "tool calls are not implemented")) return false;
    if (!p.only_neutral(body, "function_call", "none", "function calls are not implemented")) return false;
    if (!p.only_neutral(body, "response_format", json{{"type", "text"}}, "only {\"type\": \"text\"} output")) return false;
  } else {
    if (!p.prompt(body, &r.prompt)) return false;
    if (!p.max_tokens(body, "max_tokens", limits, &r.max_tokens)) return false;
    if (!p.only_neutral(body, "logprobs", 0, "log probabilities are not returned")) return false;
    if (!p.only_neutral(body, "best_of", 1, "one completion per request")) return false;
    if (!p.only_neutral(body, "echo", false, "the prompt is not echoed")) return false;
    if (!p.only_neutral(body, "suffix", "", "insertion (suffix) is not implemented")) return false;
  }
  if (auto it = body.find("n"); it != body.end() && !it->is_null()) {
    if (!it->is_number_integer()) return p.wrong_type("n", *it, "an integer");
    if (*it != 1) return p.fail("unsupported_value", "'n' is " + it->dump() + ": this server returns one choice per request (n = 1)");
  }
  if (!p.only_neutral(body, "frequency_penalty", 0, "penalties are not implemented")) return false;
  if (!p.only_neutral(body, "presence_penalty", 0, "penalties are not implemented")) return false;
  if (!p.only_neutral(body, "logit_bias", json::object(), "logit bias is not implemented")) return false;
  if (auto it = body.find("user"); it != body.end() && !it->is_null() && !it->is_string()) {
    return p.wrong_type("user", *it, "a string");
  }
  if (!p.number(body, "temperature", 0.0, 2.0, false, &r.temperature)) return false;
  if (!p.number(body, "top_p", 0.0, 1.0, true, &r.top_p)) return false;
  if (auto it = body.find("seed"); it != body.end() && !it->is_null()) {
    if (!it->is_number_integer()) return p.wrong_type("seed", *it, "an integer");
    r.seed = it->is_number_unsigned() ? it->get<uint64_t>() : static_cast<uint64_t>(it->get<int64_t>());
  }
  if (!p.stop(body, &r.stop)) return false;
  if (!p.boolean(body, "stream", &r.stream)) return false;
  if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) return p.wrong_type("stream_options", *it, "an object");
    if (!r.stream) return p.fail("invalid_value", "'stream_options' is only allowed when 'stream' is true");
    for (const auto& [key, value] : it->items()) {
      if (key != "include_usage") return p.fail("unknown_field", "unknown field 'stream_options." + key + "'");
    }
    if (!p.boolean(*it, "include_usage", &r.include_usage)) return false;
  }
  *out = std::move(r);
  return true;
}

std::string completion_body(Endpoint endpoint, const ResponseIds& ids, const std::string& text,
                            FinishReason finish, const Usage& usage) {
  json choice = {{"index", 0}, {"logprobs", nullptr}};
  const char* fr = finish_reason_name(finish);
  choice["finish_reason"] = fr ? json(fr) : json(nullptr);
  if (endpoint == Endpoint::kChat) {
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  } else {
    choice["text"] = text;
  }
  json j = {{"id", ids.id},
            {"object", endpoint == Endpoint::kChat ? "chat.completion" : "text_completion"},
            {"created", ids.created},
            {"model", ids.model},
            {"choices", json::array({choice})},
            {"usage",
             {{"prompt_tokens", usage.prompt_tokens},
              {"completion_tokens", usage.completion_tokens},
              {"total_tokens", usage.prompt_tokens + usage.completion_tokens}}}};
  return dump_json(j);
}

std::string stream_chunk(Endpoint endpoint, const ResponseIds& ids, const std::string* role,
                         const std::string& text, FinishReason finish, bool include_usage) {
  json choice = {{"index", 0}, {"logprobs", nullptr}};
  const char* fr = finish_reason_name(finish);
  choice["finish_reason"] = fr ? json(fr) : json(nullptr);
  if (endpoint == Endpoint::kChat) {
    json delta = json::object();
    if (role) delta["role"] = *role;
    if (!text.empty() || (role && finish == FinishReason::kNone)) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  json j = {{"id", ids.id},
            {"object", endpoint == Endpoint::kChat ? "chat.completion.chunk" : "text_completion"},
            {"created", ids.created},
            {"model", ids.model},
            {"choices", json::array({choice})}};
  if (include_usage) j["usage"] = nullptr;
  return "data: " + dump_json(j) + "\n\n";
}

std::string usage_chunk(Endpoint endpoint, const ResponseIds& ids, const Usage& usage) {
  json j = {{"id", ids.id},
            {"object", endpoint == Endpoint::kChat ? "chat.completion.chunk" : "text_completion"},
            {"created", ids.created},
            {"model", ids.model},
            {"choices", json::array()},
            {"usage",
             {{"prompt_tokens", usage.prompt_tokens},
              {"completion_tokens", usage.completion_tokens},
              {"total_tokens", usage.prompt_tokens + usage.completion_tokens}}}};
  return "data: " + dump_json(j) + "\n\n";
}

std::string stream_error(const ApiError& e) { return "data: " + error_body(e) + "\n\n"; }

std::string models_body(const std::string& model_id, int64_t created) {
  json j = {{"object", "list"},
            {"data", json::array({{{"id", model_id}, {"object", "model"}, {"created", created}, {"owned_by", "flea"}}})}};
  return dump_json(j);
}

size_t incomplete_utf8_tail(const std::string& s) {
  // Walk back over at most 3 continuation bytes to the lead byte; the tail is incomplete when the
  // lead byte announces more bytes than follow it.
  const size_t n = s.size();
  for (size_t back = 1; back <= std::min<size_t>(4, n); ++back) {
    const auto c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte
    size_t need = 1;
    if ((c & 0xE0) == 0xC0) need = 2;
    else if ((c & 0xF0) == 0xE0) need = 3;
    else if ((c & 0xF8) == 0xF0) need = 4;
    return need > back ? back : 0;
  }
  return 0;
}

}  // namespace flea::serve
