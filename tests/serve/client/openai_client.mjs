// The official openai npm client against flea serve: a chat completion, then the same request
// streamed. Prints one JSON line {"text", "finish_reason", "usage", "stream_text", "stream_chunks",
// "stream_finish_reason", "stream_usage", "error_status"} for tests/serve/test_serve_e2e.py to check.
import OpenAI from "openai";

const [baseURL, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60000 });
const request = {
  model: "tiny",
  messages: [{ role: "system", content: "You are terse." }, { role: "user", content: "Say hello." }],
  max_tokens: 12,
  temperature: 0,
};

const out = {};
const r = await client.chat.completions.create(request);
out.text = r.choices[0].message.content;
out.finish_reason = r.choices[0].finish_reason;
out.usage = r.usage;
out.object = r.object;

const stream = await client.chat.completions.create({ ...request, stream: true, stream_options: { include_usage: true } });
out.stream_text = "";
out.stream_chunks = 0;
for await (const chunk of stream) {
  out.stream_chunks += 1;
  if (chunk.usage) out.stream_usage = chunk.usage;
  if (chunk.choices.length === 0) continue;
  out.stream_text += chunk.choices[0].delta.content ?? "";
  if (chunk.choices[0].finish_reason) out.stream_finish_reason = chunk.choices[0].finish_reason;
}

try {
  await client.chat.completions.create({ ...request, n: 2 });
} catch (e) {
  out.error_status = e.status;
  out.error_code = e.code;
}
console.log(JSON.stringify(out));
