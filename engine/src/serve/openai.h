// The OpenAI-compatible request/response schema of `flea serve`: parsing a /v1/chat/completions or
// /v1/completions body into a CompletionRequest (every field type-checked; anything the engine
// cannot honour refused with the OpenAI error shape rather than silently ignored), and formatting
// responses, stream chunks and error bodies. No HTTP and no model here, so all of it is unit-tested.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "chat/chat_template.h"

namespace flea::serve {

// {"error": {"message", "type", "code"}} with the HTTP status it goes out with.
struct ApiError {
  int http_status = 400;
  std::string type;     // "invalid_request_error", "authentication_error", "server_error", ...
  std::string code;     // machine-readable: "invalid_json", "unknown_field", "queue_full", ...
  std::string message;  // one line for a person: names the field, the value and what is allowed
};
std::string error_body(const ApiError& e);
ApiError invalid_request(const std::string& code, const std::string& message);

enum class Endpoint { kChat, kCompletion };
const char* endpoint_path(Endpoint e);  // "/v1/chat/completions", "/v1/completions"

struct CompletionRequest {
  Endpoint endpoint = Endpoint::kChat;
  std::string model;                      // echoed back; any value is accepted (one model is served)
  std::vector<chat::Message> messages;    // kChat
  std::string prompt;                     // kCompletion
  std::optional<int64_t> max_tokens;      // absent: until the context is full (or the server's limit)
  double temperature = 1.0;               // [0, 2]; 0 = greedy
  double top_p = 1.0;                     // (0, 1]
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;          // at most 4, non-empty
  bool stream = false;
  bool include_usage = false;             // stream_options.include_usage
};

struct ParseLimits {
  int64_t max_tokens_limit = 1 << 20;  // max_tokens above this is refused
};

// JSON text of `j` with invalid UTF-8 replaced by U+FFFD (generated text can split a character).
std::string dump_json(const nlohmann::json& j);

// Parses and validates a request body. On failure returns false with *err set (400 and the field).
bool parse_completion_request(const std::string& body, Endpoint endpoint, const ParseLimits& limits,
                              CompletionRequest* out, ApiError* err);

enum class FinishReason { kNone, kStop, kLength };
const char* finish_reason_name(FinishReason r);  // "stop", "length", null for kNone

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

// What every response of one request shares.
struct ResponseIds {
  std::string id;       // "chatcmpl-..." / "cmpl-..."
  int64_t created = 0;  // unix seconds
  std::string model;
};

// The non-streaming response: chat.completion (choices[0].message) or text_completion (choices[0].text).
std::string completion_body(Endpoint endpoint, const ResponseIds& ids, const std::string& text,
                            FinishReason finish, const Usage& usage);

// One server-sent event "data: {...}\n\n". Chat: the first chunk carries delta.role, later ones
// delta.content; the last one an empty delta and finish_reason. With include_usage every chunk has
// "usage": null and a final chunk with empty choices carries the usage (usage_chunk).
std::string stream_chunk(Endpoint endpoint, const ResponseIds& ids, const std::string* role,
                         const std::string& text, FinishReason finish, bool include_usage);
std::string usage_chunk(Endpoint endpoint, const ResponseIds& ids, const Usage& usage);
std::string stream_error(const ApiError& e);  // "data: {"error": ...}\n\n" for failures mid-stream
inline const char* stream_done() { return "data: [DONE]\n\n"; }

// GET /v1/models
std::string models_body(const std::string& model_id, int64_t created);

// Bytes at the end of `s` that start a UTF-8 sequence not yet complete (0..3): held back when streaming.
size_t incomplete_utf8_tail(const std::string& s);

}  // namespace flea::serve
