// flea bench: prompt processing and token generation throughput, like llama-bench, with raw
// samples. --compute none performs exactly the plan's reads per token without computing. --depth D
// measures both after D tokens of context are already in the KV cache (filled once, untimed; every
// repetition is cut back to those D positions before it runs).
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>

#include "flea/clock.h"
#include "compute/cpu/amx.h"
#include "commands.h"
#include "engine_cli.h"
#include "io/aligned_buffer.h"
#include "model/decode.h"
#include "quant/quant.h"
#ifdef FLEA_HAVE_CUDA
#include "compute/cuda/cuda_session.h"
#endif

namespace flea::cli {
namespace {

double median(std::vector<int64_t> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? static_cast<double>(v[n / 2]) : 0.5 * static_cast<double>(v[n / 2 - 1] + v[n / 2]);
}

// What --huge-pages asked for and what the kernel did: the THP mode in force, the provider's host
// buffers and how much of them was advised, and the process's AnonHugePages at the end of the run
// while the provider was alive (the bytes actually backed by huge pages; 0 with THP "never").
nlohmann::json huge_pages_json(const ResidencyOptions& opts, const ProviderBuffers& b) {
  return {{"setting", opts.huge_pages},
          {"thp_mode", io::thp_mode()},
          {"buffer_bytes", b.bytes},
          {"advised_bytes", b.huge_advised_bytes},
          {"anon_huge_bytes", b.anon_huge_bytes}};
}

// Whether a MoE model's routing is its own or flea synth's (random weights; with --expert-skew S a
// Zipf-like expert popularity, recorded in the file as flea.synth.expert_skew).
nlohmann::json routing_json(const gguf::File& f) {
  const StatusOr<std::string> name = f.get_string("general.name");
  const bool synthetic = name.ok() && name->rfind("flea-synth", 0) == 0;
  const StatusOr<double> skew = f.get_float("flea.synth.expert_skew");
  return {{"synthetic", synthetic || skew.ok()}, {"expert_skew", skew.ok() ? *skew : 0.0}};
}

// Expert-granular residency over the timed tokens: the plan's expert figures next to what the
// streamer saw (hits, misses, experts and bytes read per token), per layer and in total.
nlohmann::json experts_json(const Plan& plan, const nlohmann::json& tel, int64_t tokens) {
  nlohmann::json x = {{"residency", plan.expert_residency}, {"policy", plan.expert_policy},
                      {"layers", plan.n_expert_layers}, {"cache_slots", plan.expert_cache_slots},
                      {"cache_per_layer", plan.n_expert_layers > 0 ? static_cast<double>(plan.expert_cache_slots) / plan.n_expert_layers : 0.0},
                      {"predicted_hit_rate", plan.predicted_expert_hit_rate}};
  const int64_t hits = tel.value("expert_hits", int64_t{0}), misses = tel.value("expert_misses", int64_t{0});
  uint64_t bytes = 0;
  nlohmann::json per_layer = nlohmann::json::array();
  for (const auto& l : tel.value("layers", nlohmann::json::array())) {
    const int64_t h = l.value("expert_hits", int64_t{0}), m = l.value("expert_misses", int64_t{0});
    if (h + m == 0) continue;
    bytes += l.value("expert_bytes", uint64_t{0});
    per_layer.push_back({{"layer", l.value("layer", 0)}, {"hits", h}, {"misses", m}, {"bytes", l.value("expert_bytes", uint64_t{0})}});
  }
  x["hits"] = hits;
  x["misses"] = misses;
  x["hit_rate"] = hits + misses > 0 ? nlohmann::json(static_cast<double>(hits) / static_cast<double>(hits + misses)) : nlohmann::json(nullptr);
  x["expert_read_bytes"] = bytes;
  x["experts_read_per_token"] = tokens > 0 ? static_cast<double>(misses) / static_cast<double>(tokens) : 0.0;
  x["expert_bytes_per_token"] = tokens > 0 ? bytes / static_cast<uint64_t>(tokens) : 0;
  x["per_layer"] = per_layer;
  return x;
}

// Weight bytes one generated token reads in a dense model: every layer tensor and every global but
// token_embd, of which a token reads one row (unless the output is tied to it: then all of it is the
// output matrix). The DRAM read roof divides a read bandwidth by this. Null for mixture-of-experts
// models, whose token reads only the experts it is routed to.
nlohmann::json weight_bytes_per_token_json(const Model& model) {
  if (model.hp.n_expert > 0) return nullptr;
  const ModelLayout& l = model.layout;
  uint64_t bytes = 0;
  for (int il = 0; il < static_cast<int>(model.hp.n_layer); ++il) bytes += l.layer_bytes(il);
  for (int g = 0; g < kGlobalTensorCount; ++g) {
    const gguf::TensorInfo* t = l.globals[static_cast<size_t>(g)];
    if (t == nullptr) continue;
    const bool embd = g == static_cast<int>(GlobalTensor::kTokenEmbd);
    const bool tied = l.globals[static_cast<size_t>(GlobalTensor::kOutput)] == nullptr;
    bytes += embd && !tied ? t->row_bytes() : t->n_bytes;
  }
  return bytes;
}

int cmd_bench(int argc, char** argv) {
  CLI::App app("Measure prompt processing (pp) and token generation (tg) throughput with repetitions "
               "and raw samples; prints one JSON object.", "flea bench");
  EngineOptions opts;
  int n_prompt = 64, n_gen = 32, reps = 5, warmup = 1;
  uint64_t seed = 1;
  std::string compute = "full", kv = "resident", trace_path;
  int batch = 1, draft_k = 4;
  int64_t depth = 0, ctx_limit = 0;
  std::string draft_path;
  add_engine_flags(app, &opts);
  app.add_option("--prompt", n_prompt, "prompt tokens per pp sample (0 = skip pp)")->check(CLI::Range(0, 1 << 16))->capture_default_str();
  app.add_option("--gen", n_gen, "generated tokens per tg sample (0 = skip tg)")->check(CLI::Range(0, 1 << 16))->capture_default_str();
  app.add_option("--reps,-r", reps, "timed repetitions")->check(CLI::Range(1, 10000))->capture_default_str();
  app.add_option("--warmup", warmup, "untimed repetitions first")->check(CLI::Range(0, 100))->capture_default_str();
  app.add_option("--depth", depth, "tokens of context already in the KV cache when each pp and tg sample starts "
                                   "(filled once, untimed, with random ids; each rep is cut back to them)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 24))->capture_default_str();
  app.add_option("--ctx", ctx_limit, "positions the session may hold (0 = as many as --depth plus the longest "
                                     "sample need); a --ctx too small for them is an error")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 24))->capture_default_str();
  app.add_option("--seed", seed, "seed of the random prompt token ids")->capture_default_str();
  std::string tg_tokens = "auto";
  app.add_option("--tg-tokens", tg_tokens,
                 "tokens fed during tg: greedy = each step's argmax; random = uniformly random ids (seeded, new "
                 "every rep, as llama-bench does); auto = random for mixture-of-experts models (their routing "
                 "follows the token, and a synthetic model's greedy output repeats tokens, which would fake "
                 "expert-cache hits), greedy otherwise")
      ->check(CLI::IsMember({"auto", "greedy", "random"}))
      ->capture_default_str();
  app.add_option("--kv", kv, "KV cache mode: resident, none (recompute the context every token), host (cache in "
                             "host memory, copied to the GPU per layer; on the CPU the same as resident)")->check(CLI::IsMember({"resident", "none", "host"}))->capture_default_str();
  app.add_option("--compute", compute, "full, or none: only the plan's reads per token (the I/O path alone)")
      ->check(CLI::IsMember({"full", "none"}))->capture_default_str();
  app.add_option("--batch", batch, "sequences decoded together in tg (each layer fetched once per step for all); "
                                   "tg_tok_s counts every sequence's tokens")->check(CLI::Range(1, 256))->capture_default_str();
  app.add_option("--draft", draft_path, "tg by greedy speculative decoding: this small model, kept resident, proposes "
                                        "--draft-k tokens the (streamed) model verifies in one pass")
      ->check(CLI::ExistingFile);
  app.add_option("--draft-k", draft_k, "tokens the draft proposes per step")->check(CLI::Range(1, 64))->capture_default_str();
  app.add_option("--trace", trace_path, "write a Chrome trace (open in Perfetto) of the timed reps");
  if (int rc = parse_or_exit(app, argc, argv); rc >= 0) return rc;
  if (batch > 1 && kv != "resident") {
    std::fprintf(stderr, "flea bench: --batch needs --kv resident\n");
    return kExitUsage;
  }
  if (!draft_path.empty() && (batch > 1 || kv != "resident" || compute == "none")) {
    std::fprintf(stderr, "flea bench: --draft needs --batch 1, --kv resident and --compute full\n");
    return kExitUsage;
  }
  if (depth > 0 && (compute == "none" || kv == "none" || batch > 1 || !draft_path.empty())) {
    std::fprintf(stderr, "flea bench: --depth needs --compute full, --kv resident or host, --batch 1 and no --draft\n");
    return kExitUsage;
  }
  // Positions one sequence holds: the depth, then the longest sample (a speculative tg step may run
  // draft_k past --gen), +2 as before (the tg seed token and one spare).
  const int64_t n_ctx = depth + std::max(n_prompt, n_gen + (draft_path.empty() ? 0 : draft_k)) + 2;
  // The depth fill is evaluated in slices of this many rows (llama.cpp's default ubatch), so its
  // scratch is no larger than a --prompt 512 sample's.
  constexpr int64_t kDepthSlice = 512;
  if (compute != "none" && ctx_limit > 0 && n_ctx > ctx_limit) {
    std::fprintf(stderr, "flea bench: --depth %lld + max(--prompt %d, --gen %d%s) + 2 needs %lld positions, more than --ctx %lld\n",
                 static_cast<long long>(depth), n_prompt, n_gen, draft_path.empty() ? "" : " + --draft-k",
                 static_cast<long long>(n_ctx), static_cast<long long>(ctx_limit));
    return kExitUsage;
  }

  if (compute == "none") {  // no session
    opts.n_ctx = opts.n_rows = opts.n_logit_rows = 0;
  } else {
    opts.n_ctx = n_ctx;
    opts.n_seq = batch;
    opts.n_rows = std::max<int64_t>({n_prompt, batch, std::min(depth, kDepthSlice)});
    opts.n_logit_rows = batch;
  }
  auto engine = open_engine(opts, /*with_weights=*/compute != "none");
  if (!engine.ok()) return report_error("bench", engine.status(), kExitUsage);
  const Model& model = *engine->model;
  nlohmann::json j;
  j["model"] = opts.model;
  j["file_bytes"] = model.file.file_size;
  if (const auto* ft = model.file.find("general.file_type")) j["file_type_id"] = ft->i;
  j["n_layer"] = model.hp.n_layer;
  j["n_params_bytes"] = model.file.file_size - model.file.data_offset;
  j["backend"] = opts.backend;
  j["residency"] = opts.residency.residency;
  j["io"] = opts.residency.io;
  j["prefetch"] = opts.residency.prefetch;
  j["threads"] = engine->pool->size();
  j["simd"] = quant::simd_level();
  // The batched matmul path: AMX tiles for batches of >= min_tokens rows (8, or 12 for Q4_K/Q6_K)
  // where available and not switched off (FLEA_AMX=0); "why" says why not.
  j["amx"] = {{"enabled", cpu::amx::enabled()}, {"available", cpu::amx::available()},
              {"why", cpu::amx::availability()}, {"min_tokens", cpu::amx::kMinTokens}};
  j["kv_type"] = engine->backend == "cpu" ? cpu::kv_type_name(engine->kv_type) : "f32";
  j["build"] = {{"git_rev", FLEA_GIT_REV}, {"build_type", FLEA_BUILD_TYPE}};  // git_rev: as of the cmake configure
  j["kv"] = kv;
  j["n_prompt"] = n_prompt;
  j["n_gen"] = n_gen;
  j["depth"] = depth;
  j["ctx_requested"] = ctx_limit;  // 0: sized to need
  j["n_ctx"] = compute == "none" ? nlohmann::json(nullptr) : nlohmann::json(n_ctx);
  j["n_ctx_train"] = model.hp.n_ctx_train;
  j["weight_bytes_per_token"] = weight_bytes_per_token_json(model);
  j["reps"] = reps;
  j["warmup"] = warmup;
  j["weights"] = engine->weights ? engine->weights->name() : "io-only";
  j["plan"] = nlohmann::json::parse(engine->plan->to_json());
  nlohmann::json warnings = nlohmann::json::array();
#ifndef NDEBUG
  warnings.push_back("debug build: timings are not representative");
#endif
  if (compute != "none" && n_ctx > model.hp.n_ctx_train) {
    warnings.push_back("the session holds " + std::to_string(n_ctx) + " positions, more than the model's context_length " +
                       std::to_string(model.hp.n_ctx_train) + " (throughput is still measured; the text would not be)");
  }

  if (compute == "none") {
    const int tokens = std::max(1, n_gen) * reps;
    auto r = run_io_only(opts.model, model.file, model.layout, *engine->plan, opts.residency, tokens,
                         engine->telemetry.get());
    if (!r.ok()) return report_error("bench", r.status(), kExitFailure);
    j["compute"] = "none";
    j["read_bytes"] = r->read_bytes;
    j["read_ns"] = r->elapsed_ns;
    j["read_gb_s"] = r->read_gb_s;
    j["read_bytes_per_token"] = r->read_bytes / static_cast<uint64_t>(tokens);
    j["tokens"] = tokens;
    if (model.hp.n_expert > 0) {  // routed uniformly at random here (no model to route with)
      j["experts"] = experts_json(*engine->plan, nlohmann::json::parse(engine->telemetry->to_json()), tokens);
      j["routing"] = {{"synthetic", true}, {"expert_skew", 0.0}, {"note", "--compute none routes uniformly at random"}};
    }
    j["huge_pages"] = huge_pages_json(opts.residency, r->buffers);
    j["peak_rss_bytes"] = peak_rss_bytes();
    j["warnings"] = warnings;
    std::printf("%s\n", j.dump().c_str());
    return kExitOk;
  }

  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(model.hp.n_vocab - 1));
  std::vector<int32_t> prompt(static_cast<size_t>(n_prompt));
  for (auto& t : prompt) t = pick(rng);
  if (tg_tokens == "auto") tg_tokens = model.hp.n_expert > 0 && draft_path.empty() ? "random" : "greedy";
  if (tg_tokens == "random" && !draft_path.empty())
    return report_error("bench", invalid_argument("--tg-tokens random cannot drive --draft (speculative decoding verifies the greedy continuation)"), kExitUsage);
  j["tg_tokens"] = tg_tokens;

  auto session_or = make_session(*engine, n_ctx, batch, kv);
  if (!session_or.ok()) {
    std::fprintf(stderr, "%s\n", session_or.status().message().c_str());
    return kExitUsage;
  }
  Evaluator& session = **session_or;
  // Speculative tg: the draft is opened resident (no residency flags), on the same threads.
  std::optional<Engine> draft_engine;
  std::unique_ptr<Evaluator> draft;
  SpeculativeResult spec_total;
  if (!draft_path.empty()) {
    StatusOr<Engine> de = open_draft_engine(opts, draft_path, model.hp.n_vocab);
    if (!de.ok()) return report_error("bench --draft", de.status(), kExitUsage);
    draft_engine.emplace(std::move(*de));
    auto ds = make_session(*draft_engine, n_gen + draft_k + 2);
    if (!ds.ok()) return report_error("bench --draft", ds.status(), kExitUsage);
    draft = std::move(*ds);
  }
  std::vector<float> logits;
  std::vector<int64_t> pp_ns, tg_ns;
  Status st;
  // The depth context: random ids like the prompt's, evaluated once in slices. Each sample then
  // starts from exactly these positions: truncated back to them where the backend can, else
  // refilled (untimed either way).
  std::vector<int32_t> depth_tokens(static_cast<size_t>(depth));
  for (auto& t : depth_tokens) t = pick(rng);
  int64_t depth_fill_ns = 0, depth_fills = 0;
  std::string depth_restore = "truncate";
  auto fill_depth = [&]() {
    session.reset();
    const int64_t t0 = steady_now_ns();
    for (int64_t i = 0; i < depth && st.ok(); i += kDepthSlice) {
      const auto first = depth_tokens.begin() + i;
      st = session.eval(std::vector<int32_t>(first, first + std::min(kDepthSlice, depth - i)), nullptr, false);
    }
    depth_fill_ns += steady_now_ns() - t0;
    ++depth_fills;
  };
  // Leaves the session holding the depth context and nothing after it.
  auto start_sample = [&]() {
    if (depth == 0) {
      session.reset();
      return;
    }
    if (depth_fills > 0 && depth_restore == "truncate") {
      const Status ts = session.truncate(0, depth);
      if (ts.ok()) return;
      if (ts.code() != StatusCode::kUnimplemented) {
        st = ts;
        return;
      }
      depth_restore = "refill";  // e.g. the CUDA session cannot truncate
    }
    fill_depth();
  };
  auto run_pp = [&]() -> int64_t {
    start_sample();
    if (!st.ok()) return 0;
    const int64_t t0 = steady_now_ns();
    st = session.eval(prompt, &logits, false);
    return steady_now_ns() - t0;
  };
  auto run_tg = [&]() -> int64_t {
    start_sample();
    if (!st.ok()) return 0;
    int32_t tok = prompt.empty() ? 1 : prompt[0];
    if (draft) {
      draft->reset();
      const int64_t t0 = steady_now_ns();
      StatusOr<SpeculativeResult> r = speculative_greedy(session, *draft, {tok}, n_gen, draft_k, model.hp.n_vocab);
      const int64_t dt = steady_now_ns() - t0;
      if (!r.ok()) {
        st = r.status();
      } else {
        spec_total.drafted += r->drafted;
        spec_total.accepted += r->accepted;
        spec_total.target_passes += r->target_passes;
        spec_total.draft_passes += r->draft_passes;
      }
      return dt;
    }
    std::vector<int32_t> context;
    const int64_t t0 = steady_now_ns();
    for (int k = 0; k < n_gen && st.ok(); ++k) {
      context.push_back(tok);
      if (batch > 1) {
        std::vector<BatchRow> rows;
        for (int q = 0; q < batch; ++q) rows.push_back({q, tok});
        st = session.eval_batch(rows, &logits, false);
      } else if (kv == "none") {
        session.reset();
        st = session.eval(context, &logits, false);
      } else {
        st = session.eval({tok}, &logits, false);
      }
      if (st.ok()) tok = tg_tokens == "random" ? pick(rng) : argmax(logits.data(), model.hp.n_vocab);
    }
    return steady_now_ns() - t0;
  };
  if (depth > 0) fill_depth();  // before the warmup and the telemetry reset: its reads count nowhere
  for (int w = 0; w < warmup && st.ok(); ++w) {
    if (n_prompt > 0) run_pp();
    if (n_gen > 0 && st.ok()) run_tg();
  }
  // The timed reps only; reads still in flight from the warmup land before the count starts, and
  // the read-ahead the last timed rep starts is counted before it stops (so bytes are exact).
  if (engine->weights) engine->weights->wait_idle();
  engine->telemetry->reset();
  const uint64_t bytes_before = engine->telemetry->read_bytes();
  session.stats().reset(model.hp.n_layer);
  spec_total = SpeculativeResult{};
  for (int r = 0; r < reps && st.ok(); ++r) {
    if (n_prompt > 0) pp_ns.push_back(run_pp());
    if (n_gen > 0 && st.ok()) tg_ns.push_back(run_tg());
  }
  if (!st.ok()) return report_error("bench", st, kExitFailure);
  if (engine->weights) engine->weights->wait_idle();
  const uint64_t read_bytes = engine->telemetry->read_bytes() - bytes_before;
  // Tokens the timed reps produced: each pp rep yields one, each tg rep n_gen per sequence.
  const int64_t timed_tokens = static_cast<int64_t>(reps) * (static_cast<int64_t>(n_gen) * batch + (n_prompt > 0 ? 1 : 0));
  int64_t total_ns = 0;
  for (int64_t v : pp_ns) total_ns += v;
  for (int64_t v : tg_ns) total_ns += v;
  j["compute"] = "full";
  if (depth > 0) {
    // restore "refill": every sample refilled the context, and read_bytes counts those fills' reads.
    j["depth_fill"] = {{"fills", depth_fills}, {"restore", depth_restore}, {"fill_ns", depth_fill_ns}};
  }
  j["pp_samples_ns"] = pp_ns;
  j["tg_samples_ns"] = tg_ns;
  j["pp_tok_s"] = pp_ns.empty() ? nlohmann::json(nullptr) : nlohmann::json(n_prompt / (median(pp_ns) / 1e9));
  j["batch"] = batch;
  j["tg_tok_s"] = tg_ns.empty() ? nlohmann::json(nullptr) : nlohmann::json(batch * n_gen / (median(tg_ns) / 1e9));
  j["tg_ms_per_token"] = tg_ns.empty() ? nlohmann::json(nullptr) : nlohmann::json(median(tg_ns) / 1e6 / n_gen / batch);
  if (draft) {
    j["speculative"] = {{"draft", draft_path},
                        {"draft_k", draft_k},
                        {"drafted", spec_total.drafted},
                        {"accepted", spec_total.accepted},
                        {"acceptance_rate", spec_total.acceptance_rate()},
                        {"target_passes", spec_total.target_passes},
                        {"draft_passes", spec_total.draft_passes},
                        {"tokens_per_target_pass", spec_total.target_passes > 0
                                                       ? static_cast<double>(reps) * n_gen / static_cast<double>(spec_total.target_passes)
                                                       : 0.0}};
  }
  j["read_bytes"] = read_bytes;
  j["read_bytes_per_token"] = timed_tokens > 0 ? read_bytes / static_cast<uint64_t>(timed_tokens) : 0;
  j["read_gb_s"] = total_ns > 0 ? static_cast<double>(read_bytes) / static_cast<double>(total_ns) : 0.0;
  int64_t stall = 0;
  nlohmann::json layers = nlohmann::json::array();
  for (int64_t il = 0; il < model.hp.n_layer; ++il) {
    const auto& s = session.stats();
    stall += s.acquire_ns[static_cast<size_t>(il)];
    layers.push_back({{"layer", il},
                      {"stall_ns", s.acquire_ns[static_cast<size_t>(il)]},
                      {"compute_ns", s.compute_ns[static_cast<size_t>(il)]},
                      {"bytes", model.layout.layer_bytes(static_cast<int>(il))}});
  }
  nlohmann::json tel = nlohmann::json::parse(engine->telemetry->to_json());
  for (auto& l : layers) {
    const int64_t il = l["layer"];
    if (tel.contains("layers") && il < static_cast<int64_t>(tel["layers"].size())) {
      l["load_ns"] = tel["layers"][static_cast<size_t>(il)].value("load_ns", 0);
    }
  }
  j["stall_ns"] = stall;
  j["stall_fraction"] = total_ns > 0 ? static_cast<double>(stall) / static_cast<double>(total_ns) : 0.0;
  j["prefetch_hits"] = tel.value("prefetch_hits", 0);
  j["prefetch_misses"] = tel.value("prefetch_misses", 0);
  j["layers"] = layers;
  if (model.hp.n_expert > 0) {  // rows routed to each expert, per MoE layer, over the timed reps
    nlohmann::json routed = nlohmann::json::array();
    for (int64_t il = 0; il < model.hp.n_layer; ++il)
      if (model.hp.is_moe_layer(il)) routed.push_back({{"layer", il}, {"rows", session.stats().expert_rows[static_cast<size_t>(il)]}});
    j["expert_routing"] = routed;
    j["experts"] = experts_json(*engine->plan, tel, timed_tokens);
    j["routing"] = routing_json(model.file);
  }
  j["huge_pages"] = huge_pages_json(opts.residency, provider_buffers(engine->weights.get()));
  j["peak_rss_bytes"] = peak_rss_bytes();
  // The KV cache's host memory (Llama 4's chunked layers hold one chunk, not the context).
  if (const auto* cpu_session = dynamic_cast<const Session*>(&session)) j["kv_cache_bytes"] = cpu_session->kv_cache_bytes();
#ifdef FLEA_HAVE_CUDA
  if (const CudaStats* cs = cuda_stats(session)) j["cuda"] = nlohmann::json::parse(cs->to_json());
#endif
  j["warnings"] = warnings;
  if (!trace_path.empty()) {
    if (Status ts = engine->telemetry->write_chrome_trace(trace_path); !ts.ok()) {
      std::fprintf(stderr, "flea bench: %s\n", ts.message().c_str());
      return kExitFailure;
    }
  }
  std::printf("%s\n", j.dump().c_str());
  return kExitOk;
}

}  // namespace
}  // namespace flea::cli

FLEA_REGISTER_COMMAND(bench, "pp/tg throughput with raw samples (JSON); --compute none for the I/O path alone", flea::cli::cmd_bench);
