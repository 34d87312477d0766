// flea generate: decode N tokens after a prompt (token ids or text), greedy with --temp 0.
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "flea/clock.h"
#include "commands.h"
#include "engine_cli.h"
#include "pipeline_cli.h"
#include "model/decode.h"
#include "sampling/sampler.h"
#include "tokenizer/tokenizer.h"

namespace flea::cli {
namespace {

// --batch N and --draft M: greedy decoding loops from model/decode.h; prints JSON.
int run_multi(Engine& engine, const EngineOptions& opts, const std::vector<int32_t>& prompt, int n_gen,
              int batch, const std::string& draft_path, int draft_k) {
  const int64_t V = engine.model->hp.n_vocab;
  const int64_t n_ctx = static_cast<int64_t>(prompt.size()) + n_gen + draft_k + 1;
  nlohmann::json j;
  if (draft_path.empty()) {
    auto s = make_session(engine, n_ctx, batch);
    if (!s.ok()) return report_error("generate", s.status(), kExitUsage);
    auto r = batched_greedy(**s, std::vector<std::vector<int32_t>>(static_cast<size_t>(batch), prompt), n_gen, V);
    if (!r.ok()) return report_error("generate", r.status(), kExitFailure);
    j["tokens"] = r->tokens[0];
    j["batch"] = batch;
    j["batch_tokens"] = r->tokens;
    j["prompt_ms"] = r->prompt_ns / 1e6;
    j["ms_per_step"] = r->steps ? r->decode_ns / 1e6 / static_cast<double>(r->steps) : 0.0;
    j["ms_per_token"] = r->steps ? r->decode_ns / 1e6 / static_cast<double>(r->steps * batch) : 0.0;
  } else {
    auto draft = open_draft_engine(opts, draft_path, V);
    if (!draft.ok()) return report_error("generate --draft", draft.status(), kExitUsage);
    auto ts = make_session(engine, n_ctx);
    auto ds = make_session(*draft, n_ctx);
    if (!ts.ok() || !ds.ok()) { std::fprintf(stderr, "flea generate: cannot create sessions\n"); return kExitUsage; }
    auto r = speculative_greedy(**ts, **ds, prompt, n_gen, draft_k, V);
    if (!r.ok()) return report_error("generate", r.status(), kExitFailure);
    j["tokens"] = r->tokens;
    j["draft"] = draft_path;
    j["draft_k"] = draft_k;
    j["drafted"] = r->drafted;
    j["accepted"] = r->accepted;
    j["acceptance_rate"] = r->acceptance_rate();
    j["target_passes"] = r->target_passes;
    j["ms_per_token"] = r->tokens.size() > 1 ? r->elapsed_ns / 1e6 / static_cast<double>(r->tokens.size() - 1) : 0.0;
  }
  j["n_prompt"] = prompt.size();
  j["kv"] = "resident";
  j["weights"] = engine.weights->name();
  j["peak_rss_bytes"] = peak_rss_bytes();
  std::printf("%s\n", j.dump().c_str());
  return kExitOk;
}

int cmd_generate(int argc, char** argv) {
  CLI::App app("Generate tokens after a prompt. With --tokens prints JSON {\"tokens\": [...], "
               "\"ms_per_token\": ...}; with --prompt streams the text (add --json for the JSON).",
               "flea generate");
  EngineOptions opts;
  std::string tokens_text, prompt_text, kv = "resident";
  int n_gen = 16;
  bool json_out = false;
  bool pipeline = false;
  SamplerConfig sc;
  sc.temperature = 0.0f;
  add_engine_flags(app, &opts);
  add_pipeline_flag(app, &pipeline);
  auto* tok_opt = app.add_option("--tokens", tokens_text, "prompt as comma-separated token ids");
  app.add_option("--prompt,-p", prompt_text, "prompt as text (tokenized with the model's vocabulary, BOS added)")
      ->excludes(tok_opt);
  app.add_option("--n,-n", n_gen, "tokens to generate")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  app.add_option("--kv", kv, "KV cache: resident (incremental), none (recompute the whole context every "
                             "token: quadratic), host (KV cache in host memory, streamed to the GPU per layer "
                             "with the weights (CUDA); on the CPU backend the same as resident)")
      ->check(CLI::IsMember({"resident", "none", "host"}))->capture_default_str();
  app.add_option("--temp", sc.temperature, "temperature; 0 = greedy")->capture_default_str();
  app.add_option("--top-k", sc.top_k, "top-k (0 = off)")->capture_default_str();
  app.add_option("--top-p", sc.top_p, "top-p nucleus (1 = off)")->capture_default_str();
  app.add_option("--min-p", sc.min_p, "min-p (0 = off)")->capture_default_str();
  app.add_option("--repeat-penalty", sc.repeat_penalty, "repetition penalty (1 = off)")->capture_default_str();
  app.add_option("--seed", sc.seed, "sampling seed")->capture_default_str();
  int batch = 1, draft_k = 4;
  std::string draft_path;
  app.add_option("--batch", batch, "decode this many copies of the prompt together (greedy): each layer is "
                                   "fetched once per step for all of them")->check(CLI::Range(1, 256))->capture_default_str();
  app.add_option("--draft", draft_path, "speculative decoding (greedy): a small draft model, kept resident, "
                                        "proposes --draft-k tokens that this model verifies in one pass");
  app.add_option("--draft-k", draft_k, "tokens the draft proposes per step")->check(CLI::Range(1, 64))->capture_default_str();
  app.add_flag("--json", json_out, "with --prompt: print the JSON summary instead of the text");
  if (int rc = parse_or_exit(app, argc, argv); rc >= 0) return rc;
  if (tokens_text.empty() && prompt_text.empty()) {
    std::fprintf(stderr, "flea generate: give the prompt with --tokens or --prompt\n");
    return kExitUsage;
  }
  auto sampler = Sampler::create(sc);
  if (!sampler.ok()) return report_error("generate", sampler.status(), kExitUsage);
  // The prompt's length before the tokenizer exists: at most one token per byte, plus BOS.
  const int64_t prompt_max = tokens_text.empty() ? static_cast<int64_t>(prompt_text.size()) + 1
                                                 : static_cast<int64_t>(std::count(tokens_text.begin(), tokens_text.end(), ',')) + 1;
  opts.n_ctx = prompt_max + n_gen + draft_k + 1;
  opts.n_seq = batch;
  opts.n_rows = opts.n_ctx * batch;  // --kv none evaluates the whole context every token
  opts.n_logit_rows = batch;
  // One process, or one rank of a pipeline (rank 0 decodes; the others serve their layers).
  if (pipeline && (batch > 1 || !draft_path.empty() || kv != "resident")) {
    std::fprintf(stderr, "flea generate: --pipeline decodes one sequence with the resident KV cache (drop --batch/--draft/--kv)\n");
    return kExitUsage;
  }
  Pipeline pipe;
  StatusOr<Engine> own = Engine{};
  Engine* engine = nullptr;
  if (pipeline) {
    if (int rc = open_pipeline("generate", opts, opts.n_ctx, &pipe); rc >= 0) return rc;
    if (!pipe.driver()) return serve_pipeline("generate", &pipe);
    engine = &pipe.engine;
  } else {
    own = open_engine(opts);
    if (!own.ok()) return report_error("generate", own.status(), kExitUsage);
    engine = &*own;
  }
  std::vector<int32_t> prompt;
  std::unique_ptr<Tokenizer> tokenizer;
  if (!prompt_text.empty()) {
    auto t = Tokenizer::from_gguf(engine->model->file);
    if (!t.ok()) return report_error("generate", t.status(), kExitUsage);
    tokenizer = std::make_unique<Tokenizer>(std::move(*t));
    prompt = tokenizer->encode(prompt_text, tokenizer->add_bos_default());
  } else {
    auto t = parse_token_list(tokens_text);
    if (!t.ok()) return report_error("generate", t.status(), kExitUsage);
    prompt = std::move(*t);
  }
  if ((batch > 1 || !draft_path.empty()) && (sc.temperature != 0.0f || kv != "resident")) {
    std::fprintf(stderr, "flea generate: --batch and --draft decode greedily with the resident KV cache "
                         "(drop --temp/--kv)\n");
    return kExitUsage;
  }
  if (batch > 1 || !draft_path.empty()) return run_multi(*engine, opts, prompt, n_gen, batch, draft_path, draft_k);
  for (int32_t t : prompt) sampler->accept(t);  // the repetition penalty sees the prompt too
  const bool stream_text = tokenizer && !json_out;
  const int64_t V = engine->model->hp.n_vocab;
  StatusOr<std::unique_ptr<Evaluator>> session_or = std::unique_ptr<Evaluator>();
  if (!pipeline) {
    session_or = make_session(*engine, static_cast<int64_t>(prompt.size()) + n_gen, 1, kv);
    if (!session_or.ok()) return report_error("generate", session_or.status(), kExitUsage);
  }
  Evaluator& session = pipeline ? static_cast<Evaluator&>(*pipe.evaluator) : **session_or;
  std::vector<int32_t> context = prompt, generated;
  std::vector<float> logits;
  const int64_t t0 = steady_now_ns();
  Status st = session.eval(prompt, &logits, false);
  const int64_t t_prompt = steady_now_ns();
  for (int k = 0; st.ok() && k < n_gen; ++k) {
    const int32_t next = sampler->sample(logits.data(), static_cast<int32_t>(V));
    sampler->accept(next);
    generated.push_back(next);
    context.push_back(next);
    if (stream_text) {
      std::fputs(tokenizer->piece(next).c_str(), stdout);
      std::fflush(stdout);
    }
    if (tokenizer && tokenizer->is_end_of_generation(next)) break;
    if (k + 1 == n_gen) break;
    if (kv == "none") {
      session.reset();  // no cache: the whole context again, every token
      st = session.eval(context, &logits, false);
    } else {
      st = session.eval({next}, &logits, false);
    }
  }
  const int64_t t_end = steady_now_ns();
  const nlohmann::json rank_figures = stop_pipeline(&pipe);
  if (!st.ok()) return report_error("generate", st, kExitFailure);
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
  if (pipeline) {
    // Per rank (rank 0's wait_ns is for the logits, the others' for their hidden states).
    j["pipeline"] = {{"n_ranks", pipe.comm->size()}, {"transport", pipe.comm->describe()}, {"ranks", rank_figures}};
  }
  std::printf("%s\n", j.dump().c_str());
  return kExitOk;
}

}  // namespace
}  // namespace flea::cli

FLEA_REGISTER_COMMAND(generate, "generate tokens after a prompt (greedy with --temp 0)", flea::cli::cmd_generate);
