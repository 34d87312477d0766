// flea generate: decode N tokens after a prompt (token ids or text), greedy with --temp 0.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "engine_cli.h"
#include "sampling/sampler.h"
#include "tokenizer/tokenizer.h"

namespace flea::cli {
namespace {

int cmd_generate(int argc, char** argv) {
  CLI::App app("Generate tokens after a prompt. With --tokens prints JSON {\"tokens\": [...], "
               "\"ms_per_token\": ...}; with --prompt streams the text (add --json for the JSON).",
               "flea generate");
  EngineOptions opts;
  std::string tokens_text, prompt_text, kv = "resident";
  int n_gen = 16;
  bool json_out = false;
  SamplerConfig sc;
  sc.temperature = 0.0f;
  add_engine_flags(app, &opts);
  auto* tok_opt = app.add_option("--tokens", tokens_text, "prompt as comma-separated token ids");
  app.add_option("--prompt,-p", prompt_text, "prompt as text (tokenized with the model's vocabulary, BOS added)")
      ->excludes(tok_opt);
  app.add_option("--n,-n", n_gen, "tokens to generate")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  app.add_option("--kv", kv, "KV cache: resident (incremental), none (recompute the whole context every "
                             "token: quadratic), host (cache in host memory; on the CPU backend the same as resident)")
      ->check(CLI::IsMember({"resident", "none", "host"}))->capture_default_str();
  app.add_option("--temp", sc.temperature, "temperature; 0 = greedy")->capture_default_str();
  app.add_option("--top-k", sc.top_k, "top-k (0 = off)")->capture_default_str();
  app.add_option("--top-p", sc.top_p, "top-p nucleus (1 = off)")->capture_default_str();
  app.add_option("--min-p", sc.min_p, "min-p (0 = off)")->capture_default_str();
  app.add_option("--repeat-penalty", sc.repeat_penalty, "repetition penalty (1 = off)")->capture_default_str();
  app.add_option("--seed", sc.seed, "sampling seed")->capture_default_str();
  app.add_flag("--json", json_out, "with --prompt: print the JSON summary instead of the text");
  if (int rc = parse_or_exit(app, argc, argv); rc >= 0) return rc;
  if (tokens_text.empty() && prompt_text.empty()) {
    std::fprintf(stderr, "flea generate: give the prompt with --tokens or --prompt\n");
    return kExitUsage;
  }
  auto sampler = Sampler::create(sc);
  if (!sampler.ok()) {
    std::fprintf(stderr, "flea generate: %s\n", sampler.status().message().c_str());
    return kExitUsage;
  }
  auto engine = open_engine(opts);
  if (!engine.ok()) {
    std::fprintf(stderr, "flea generate: %s\n", engine.status().message().c_str());
    return kExitUsage;
  }
  std::vector<int32_t> prompt;
  std::unique_ptr<Tokenizer> tokenizer;
  if (!prompt_text.empty()) {
    auto t = Tokenizer::from_gguf(engine->model->file);
    if (!t.ok()) {
      std::fprintf(stderr, "flea generate: %s\n", t.status().message().c_str());
      return kExitUsage;
    }
    tokenizer = std::make_unique<Tokenizer>(std::move(*t));
    prompt = tokenizer->encode(prompt_text, tokenizer->add_bos_default());
  } else {
    auto t = parse_token_list(tokens_text);
    if (!t.ok()) {
      std::fprintf(stderr, "flea generate: %s\n", t.status().message().c_str());
      return kExitUsage;
    }
    prompt = std::move(*t);
  }
  for (int32_t t : prompt) sampler->accept(t);  // the repetition penalty sees the prompt too
  const bool stream_text = tokenizer && !json_out;
  const int64_t V = engine->model->hp.n_vocab;
  auto session_or = make_session(*engine, static_cast<int64_t>(prompt.size()) + n_gen);
  if (!session_or.ok()) {
    std::fprintf(stderr, "%s\n", session_or.status().message().c_str());
    return kExitUsage;
  }
  Evaluator& session = **session_or;
  std::vector<int32_t> context = prompt, generated;
  std::vector<float> logits;
  const int64_t t0 = now_ns();
  Status st = session.eval(prompt, &logits, false);
  const int64_t t_prompt = now_ns();
  for (int k = 0; st.ok() && k < n_gen; ++k) {
    const int32_t next = sampler->sample(logits.data(), static_cast<int32_t>(V));
    sampler->accept(next);
    generated.push_back(next);
    context.push_back(next);
    if (stream_text) {
      std::fputs(tokenizer->piece(next).c_str(), stdout);
      std::fflush(stdout);
    }
    if (tokenizer && next == tokenizer->eos()) break;
    if (k + 1 == n_gen) break;
    if (kv == "none") {
      session.reset();  // no cache: the whole context again, every token
      st = session.eval(context, &logits, false);
    } else {
      st = session.eval({next}, &logits, false);
    }
  }
  const int64_t t_end = now_ns();
  if (!st.ok()) {
    std::fprintf(stderr, "flea generate: %s\n", st.message().c_str());
    return kExitFailure;
  }
  if (stream_text) {
    std::fputc('\n', stdout);
    return kExitOk;
  }
  nlohmann::json j;
  j["tokens"] = generated;
  j["n_prompt"] = prompt.size();
  j["kv"] = kv;
  j["kv_cost"] = kv == "none" ? "quadratic: the whole context is recomputed for every token" : "linear";
  j["prompt_ms"] = (t_prompt - t0) / 1e6;
  j["ms_per_token"] = generated.size() > 1 ? (t_end - t_prompt) / 1e6 / static_cast<double>(generated.size() - 1) : 0.0;
  j["peak_rss_bytes"] = peak_rss_bytes();
  j["weights"] = engine->weights->name();
  if (tokenizer) j["text"] = tokenizer->decode(generated);
  std::printf("%s\n", j.dump().c_str());
  return kExitOk;
}

}  // namespace
}  // namespace flea::cli

FLEA_REGISTER_COMMAND(generate, "generate tokens after a prompt (greedy with --temp 0)", flea::cli::cmd_generate);
