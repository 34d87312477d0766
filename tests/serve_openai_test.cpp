// flea serve's OpenAI schema: request parsing (types, ranges, refusals), response / chunk / error
// formatting, and the Prometheus text of /metrics.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "serve/metrics.h"
#include "serve/openai.h"

namespace flea::serve {
namespace {

using nlohmann::json;

ApiError parse_error(const std::string& body, Endpoint e = Endpoint::kChat, int64_t limit = 100) {
  CompletionRequest r;
  ApiError err;
  ParseLimits limits;
  limits.max_tokens_limit = limit;
  EXPECT_FALSE(parse_completion_request(body, e, limits, &r, &err)) << body;
  return err;
}

CompletionRequest parse_ok(const std::string& body, Endpoint e = Endpoint::kChat) {
  CompletionRequest r;
  ApiError err;
  EXPECT_TRUE(parse_completion_request(body, e, ParseLimits{}, &r, &err)) << body << ": " << err.message;
  return r;
}

TEST(ServeOpenai, ParsesEveryChatField) {
  auto r = parse_ok(R"({"model":"m","messages":[{"role":"system","content":"be brief"},
      {"role":"user","content":[{"type":"text","text":"hi "},{"type":"text","text":"there"}]}],
      "max_tokens":7,"temperature":0,"top_p":0.5,"seed":-3,"stop":["a","b"],"stream":true,
      "stream_options":{"include_usage":true},"n":1,"user":"u","presence_penalty":0})");
  EXPECT_EQ(r.model, "m");
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(r.messages[1].content, "hi there");
  EXPECT_EQ(r.max_tokens, 7);
  EXPECT_EQ(r.temperature, 0.0);
  EXPECT_EQ(r.top_p, 0.5);
  EXPECT_EQ(r.seed, static_cast<uint64_t>(-3));
  EXPECT_EQ(r.stop, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
}

TEST(ServeOpenai, DefaultsAndCompletionPrompt) {
  auto r = parse_ok(R"({"prompt":"once upon","stop":"x","max_tokens":null})", Endpoint::kCompletion);
  EXPECT_EQ(r.prompt, "once upon");
  EXPECT_FALSE(r.max_tokens.has_value());
  EXPECT_EQ(r.temperature, 1.0);
  EXPECT_EQ(r.stop, std::vector<std::string>{"x"});
  EXPECT_FALSE(r.stream);
  EXPECT_EQ(parse_ok(R"({"prompt":["one"]})", Endpoint::kCompletion).prompt, "one");
  EXPECT_EQ(parse_ok(R"({"messages":[{"role":"developer","content":"d"}]})").messages[0].role, "system");
  EXPECT_EQ(parse_ok(R"({"messages":[{"role":"user","content":"q"}],"max_completion_tokens":3})").max_tokens, 3);
}

TEST(ServeOpenai, BadJsonIsInvalidJson) {
  for (const char* body : {"", "{", "{\"messages\": [}", "nul", "{\"a\":1,}"}) {
    auto e = parse_error(body);
    EXPECT_EQ(e.http_status, 400);
    EXPECT_EQ(e.code, "invalid_json") << body;
  }
  EXPECT_EQ(parse_error("[1,2]").code, "invalid_json");
  EXPECT_NE(parse_error("[1,2]").message.find("object"), std::string::npos);
}

TEST(ServeOpenai, WrongTypesNameTheField) {
  const std::string msgs = R"("messages":[{"role":"user","content":"q"}])";
  struct Case { std::string body, field; };
  for (const Case& c : std::vector<Case>{
           {"{" + msgs + R"(,"temperature":"hot"})", "temperature"},
           {"{" + msgs + R"(,"max_tokens":1.5})", "max_tokens"},
           {"{" + msgs + R"(,"stream":"yes"})", "stream"},
           {"{" + msgs + R"(,"seed":"1"})", "seed"},
           {"{" + msgs + R"(,"stop":3})", "stop"},
           {"{" + msgs + R"(,"stop":["a",1]})", "stop"},
           {"{" + msgs + R"(,"model":5})", "model"},
           {R"({"messages":"hello"})", "messages"},
           {R"({"messages":[{"role":"user","content":5}]})", "messages[0].content"},
           {R"({"messages":[{"role":5,"content":"x"}]})", "messages[0].role"}}) {
    auto e = parse_error(c.body);
    EXPECT_EQ(e.http_status, 400) << c.body;
    EXPECT_EQ(e.type, "invalid_request_error");
    EXPECT_NE(e.message.find(c.field), std::string::npos) << c.body << " -> " << e.message;
  }
}

TEST(ServeOpenai, RangesAndRefusals) {
  const std::string m = R"("messages":[{"role":"user","content":"q"}])";
  EXPECT_EQ(parse_error("{" + m + R"(,"temperature":2.5})").code, "invalid_value");
  EXPECT_EQ(parse_error("{" + m + R"(,"top_p":0})").code, "invalid_value");
  EXPECT_EQ(parse_error("{" + m + R"(,"max_tokens":0})").code, "invalid_value");
  auto over = parse_error("{" + m + R"(,"max_tokens":101})");
  EXPECT_NE(over.message.find("at most 100"), std::string::npos) << over.message;
  EXPECT_EQ(parse_error("{" + m + R"(,"max_tokens":18446744073709551615})").code, "invalid_value");
  auto n2 = parse_error("{" + m + R"(,"n":2})");
  EXPECT_EQ(n2.code, "unsupported_value");
  EXPECT_NE(n2.message.find("n = 1"), std::string::npos);
  EXPECT_EQ(parse_error("{" + m + R"(,"stop":["a","b","c","d","e"]})").code, "invalid_value");
  EXPECT_EQ(parse_error("{" + m + R"(,"stop":""})").code, "invalid_value");
  EXPECT_EQ(parse_error("{" + m + R"(,"stream_options":{"include_usage":true}})").code, "invalid_value");
  EXPECT_EQ(parse_error("{" + m + R"(,"logprobs":true})").code, "unsupported_value");
  EXPECT_EQ(parse_error("{" + m + R"(,"tools":[{"type":"function"}]})").code, "unsupported_value");
  EXPECT_EQ(parse_error("{" + m + R"(,"frequency_penalty":0.5})").code, "unsupported_value");
  EXPECT_EQ(parse_error(R"({"messages":[]})").code, "invalid_value");
  EXPECT_EQ(parse_error(R"({"messages":[{"role":"tool","content":"x"}]})").code, "invalid_value");
  EXPECT_EQ(parse_error(R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})").code,
            "unsupported_value");
  EXPECT_EQ(parse_error(R"({})").code, "missing_field");
  EXPECT_EQ(parse_error(R"({"prompt":["a","b"]})", Endpoint::kCompletion).code, "unsupported_value");
  EXPECT_EQ(parse_error(R"({"prompt":[1,2,3]})", Endpoint::kCompletion).code, "unsupported_value");
  EXPECT_EQ(parse_error(R"({"prompt":"x","echo":true})", Endpoint::kCompletion).code, "unsupported_value");
}

TEST(ServeOpenai, UnknownFieldsAreRefusedWithASuggestion) {
  auto e = parse_error(R"({"messages":[{"role":"user","content":"q"}],"temprature":0})");
  EXPECT_EQ(e.code, "unknown_field");
  EXPECT_NE(e.message.find("did you mean 'temperature'"), std::string::npos) << e.message;
  // A chat field is unknown to /v1/completions.
  EXPECT_EQ(parse_error(R"({"prompt":"x","messages":[]})", Endpoint::kCompletion).code, "unknown_field");
}

TEST(ServeOpenai, DeeplyNestedJsonIsAnErrorNotACrash) {
  std::string deep = std::string(200000, '[') + std::string(200000, ']');
  EXPECT_EQ(parse_error(deep).code, "invalid_json");  // valid JSON, but not an object
  std::string body = R"({"messages":[{"role":"user","content":"q"}],"metadata":)" + deep + "}";
  parse_ok(body);  // accepted and ignored; destroying it must not overflow the stack either
}

TEST(ServeOpenai, ErrorBodyShape) {
  ApiError e{503, "server_error", "queue_full", "full"};
  auto j = json::parse(error_body(e));
  EXPECT_EQ(j["error"]["message"], "full");
  EXPECT_EQ(j["error"]["type"], "server_error");
  EXPECT_EQ(j["error"]["code"], "queue_full");
}

TEST(ServeOpenai, CompletionBodies) {
  ResponseIds ids{"chatcmpl-1", 1700000000, "tiny"};
  auto chat = json::parse(completion_body(Endpoint::kChat, ids, "hello", FinishReason::kLength, {5, 2}));
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["id"], "chatcmpl-1");
  EXPECT_EQ(chat["created"], 1700000000);
  EXPECT_EQ(chat["model"], "tiny");
  EXPECT_EQ(chat["choices"][0]["index"], 0);
  EXPECT_EQ(chat["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(chat["choices"][0]["message"]["content"], "hello");
  EXPECT_EQ(chat["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(chat["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(chat["usage"]["completion_tokens"], 2);
  EXPECT_EQ(chat["usage"]["total_tokens"], 7);
  auto text = json::parse(completion_body(Endpoint::kCompletion, ids, "x", FinishReason::kStop, {1, 1}));
  EXPECT_EQ(text["object"], "text_completion");
  EXPECT_EQ(text["choices"][0]["text"], "x");
  EXPECT_EQ(text["choices"][0]["finish_reason"], "stop");
}

json sse_json(const std::string& event) {
  EXPECT_EQ(event.rfind("data: ", 0), 0u);
  EXPECT_EQ(event.substr(event.size() - 2), "\n\n");
  return json::parse(event.substr(6, event.size() - 8));
}

TEST(ServeOpenai, StreamChunks) {
  ResponseIds ids{"chatcmpl-2", 1, "tiny"};
  const std::string role = "assistant";
  auto first = sse_json(stream_chunk(Endpoint::kChat, ids, &role, "He", FinishReason::kNone, false));
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(first["choices"][0]["delta"]["content"], "He");
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  EXPECT_FALSE(first.contains("usage"));
  auto last = sse_json(stream_chunk(Endpoint::kChat, ids, nullptr, "", FinishReason::kStop, true));
  EXPECT_TRUE(last["choices"][0]["delta"].empty());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(last["usage"].is_null());
  auto usage = sse_json(usage_chunk(Endpoint::kChat, ids, {3, 4}));
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 7);
  auto text = sse_json(stream_chunk(Endpoint::kCompletion, ids, nullptr, "t", FinishReason::kNone, false));
  EXPECT_EQ(text["object"], "text_completion");
  EXPECT_EQ(text["choices"][0]["text"], "t");
  EXPECT_EQ(std::string(stream_done()), "data: [DONE]\n\n");
}

TEST(ServeOpenai, InvalidUtf8IsReplacedNotThrown) {
  ResponseIds ids{"c", 1, "m"};
  auto j = json::parse(completion_body(Endpoint::kChat, ids, "a\xE2\x82", FinishReason::kStop, {}));
  EXPECT_EQ(j["choices"][0]["message"]["content"], "a\xEF\xBF\xBD");
}

TEST(ServeOpenai, IncompleteUtf8Tail) {
  EXPECT_EQ(incomplete_utf8_tail(""), 0u);
  EXPECT_EQ(incomplete_utf8_tail("abc"), 0u);
  EXPECT_EQ(incomplete_utf8_tail("a\xE2\x82\xAC"), 0u);  // complete €
  EXPECT_EQ(incomplete_utf8_tail("a\xE2\x82"), 2u);
  EXPECT_EQ(incomplete_utf8_tail("a\xE2"), 1u);
  EXPECT_EQ(incomplete_utf8_tail("\xF0\x9F\x98"), 3u);
  EXPECT_EQ(incomplete_utf8_tail("\xF0\x9F\x98\x80"), 0u);
}

TEST(ServeMetrics, PrometheusText) {
  Metrics m;
  m.count_request("/v1/chat/completions", 200);
  m.count_request("/v1/chat/completions", 200);
  m.count_request("/health", 503);
  m.add_prompt_tokens(12);
  m.add_generated_tokens(5);
  m.observe_ttft(0.03);
  m.observe_ttft(7.0);
  m.observe_time_per_output_token(0.002);
  m.set_queue_depth(3);
  m.set_active_sequences(2);
  Metrics::EngineTotals t;
  t.bytes_read = 4096;
  t.stall_seconds = 0.5;
  t.loaded = true;
  const std::string s = m.render(t);
  EXPECT_NE(s.find("flea_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"} 2\n"), std::string::npos) << s;
  EXPECT_NE(s.find("flea_requests_total{endpoint=\"/health\",status=\"503\"} 1\n"), std::string::npos);
  EXPECT_NE(s.find("flea_prompt_tokens_total 12\n"), std::string::npos);
  EXPECT_NE(s.find("flea_generated_tokens_total 5\n"), std::string::npos);
  EXPECT_NE(s.find("flea_time_to_first_token_seconds_bucket{le=\"0.05\"} 1\n"), std::string::npos);
  EXPECT_NE(s.find("flea_time_to_first_token_seconds_bucket{le=\"10\"} 2\n"), std::string::npos);
  EXPECT_NE(s.find("flea_time_to_first_token_seconds_bucket{le=\"+Inf\"} 2\n"), std::string::npos);
  EXPECT_NE(s.find("flea_time_to_first_token_seconds_count 2\n"), std::string::npos);
  EXPECT_NE(s.find("flea_time_per_output_token_seconds_count 1\n"), std::string::npos);
  EXPECT_NE(s.find("flea_queue_depth 3\n"), std::string::npos);
  EXPECT_NE(s.find("flea_active_sequences 2\n"), std::string::npos);
  EXPECT_NE(s.find("flea_weight_bytes_read_total 4096\n"), std::string::npos);
  EXPECT_NE(s.find("flea_weight_stall_seconds_total 0.5\n"), std::string::npos);
  EXPECT_NE(s.find("# TYPE flea_time_to_first_token_seconds histogram"), std::string::npos);
  EXPECT_EQ(m.requests("/v1/chat/completions", 200), 2);
}

}  // namespace
}  // namespace flea::serve
