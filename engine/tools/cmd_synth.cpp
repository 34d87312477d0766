// flea synth --shape 7b --type Q4_K_M --out M.gguf: write a deterministic synthetic LLaMA model.
#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <map>

#include "commands.h"
#include "model/synth.h"

namespace {

std::atomic<bool> g_cancel{false};

void on_signal(int) { g_cancel.store(true); }

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : "|") + x;
  return s;
}

int cmd_synth(int argc, char** argv) {
  using flea::cli::kExitFailure;
  using flea::cli::kExitOk;
  using flea::cli::kExitUsage;
  namespace fs = flea::synth;

  CLI::App app("Write a deterministic synthetic LLaMA-family (llama, qwen2) GGUF model of a real shape, with "
               "llama.cpp's per-tensor type mix for the file type. Streams: memory stays small at "
               "any size.",
               "flea synth");
  std::string shape_name, type_name = "Q4_K_M", out, model_name, vocab_path;
  uint64_t seed = 0;
  double expert_skew = 0.0;
  int threads = 2;
  bool quiet = false, dry_run = false, list_tensors = false;
  int64_t n_embd = 0, n_ff = 0, n_layer = 0, n_head = 0, n_head_kv = 0, n_vocab = 0, n_ctx = 0;
  double rope_base = 0.0;
  bool tied = false;
  app.add_option("--shape", shape_name,
                 "preset (" + join(fs::synth_preset_names()) + ") or a NAME for a custom shape given "
                 "entirely by the shape flags below");
  app.add_option("--type", type_name, "file type: " + join(fs::file_type_names()))->capture_default_str();
  app.add_option("--out", out, "output GGUF path (written via a temporary name, then renamed)");
  app.add_option("--seed", seed, "weight seed")->capture_default_str();
  app.add_option("--expert-skew", expert_skew,
                 "MoE shapes only: skewed, Zipf-like expert popularity. Token embeddings get a small shared "
                 "direction and each MoE layer's router a bias along it of ~S * -ln(rank) logits (rank order "
                 "shuffled per layer by the seed), so a few experts per layer take most tokens (README.md has "
                 "measured figures for 0.5..4). 0 = noise router, bytes as without the flag; > 0 is recorded "
                 "as flea.synth.expert_skew")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--name", model_name, "general.name (default flea-synth-<shape>)");
  app.add_option("--threads", threads, "generator threads (0: generate on the writing thread)")
      ->capture_default_str()->check(CLI::Range(0, 64));
  app.add_flag("--dry-run", dry_run, "print the planned file size and type mix, write nothing");
  app.add_flag("--list-tensors", list_tensors, "also print the planned tensor table");
  app.add_flag("-q,--quiet", quiet, "no progress on stderr");
  app.add_option("--n-embd", n_embd, "embedding width (overrides the preset)");
  app.add_option("--n-ff", n_ff, "feed-forward width");
  app.add_option("--n-layer", n_layer, "number of blocks");
  app.add_option("--n-head", n_head, "attention heads");
  app.add_option("--n-head-kv", n_head_kv, "key/value heads (GQA when < n-head)");
  app.add_option("--n-vocab", n_vocab, "vocabulary size (>= 260)");
  app.add_option("--ctx", n_ctx, "llama.context_length");
  app.add_option("--rope-base", rope_base, "rope.freq_base");
  app.add_flag("--tied", tied, "no output.weight: token_embd is the output matrix");
  app.add_option("--vocab", vocab_path,
                 "copy every tokenizer.* key of this GGUF file (e.g. a real Llama 3 vocabulary) instead of the "
                 "synthetic SentencePiece vocab, so --prompt text round-trips through the real tokenizer; "
                 "n_vocab becomes its token count");
  if (int rc = flea::cli::parse_or_exit(app, argc, argv); rc >= 0) return rc;
  auto fail = [](const std::string& msg, int code) {
    std::fprintf(stderr, "flea synth: %s\n", msg.c_str());
    return code;
  };

  if (shape_name.empty()) return fail("--shape is required (a preset or a custom NAME)", kExitUsage);
  fs::SynthShape shape;
  auto preset = fs::synth_preset(shape_name);
  const bool custom = !preset.ok();
  if (!custom) {
    shape = *preset;
  } else {
    if (n_embd == 0 || n_ff == 0 || n_layer == 0 || n_head == 0 || n_vocab == 0) {
      return fail(preset.status().message() + "; a custom shape needs --n-embd --n-ff --n-layer "
                  "--n-head --n-vocab", kExitUsage);
    }
    shape.name = shape_name;
  }
  if (n_embd) shape.n_embd = n_embd;
  if (n_ff) {
    shape.n_ff = n_ff;
    if (shape.n_expert > 0 && shape.arch == "llama") shape.n_ff_exp = n_ff;  // a llama MoE has one FFN width
  }
  if (n_layer) shape.n_layer = n_layer;
  if (n_head) shape.n_head = n_head;
  if (n_head_kv) shape.n_head_kv = n_head_kv;
  else if (custom) shape.n_head_kv = shape.n_head;  // no GQA unless asked for
  if (n_vocab) shape.n_vocab = n_vocab;
  if (n_ctx) shape.n_ctx = n_ctx;
  if (rope_base != 0.0) shape.rope_freq_base = rope_base;
  if (tied) shape.tied = true;
  fs::VocabSource vocab;
  if (!vocab_path.empty()) {
    auto v = fs::read_vocab_source(vocab_path);
    if (!v.ok()) return fail(v.status().message(), kExitUsage);
    vocab = std::move(*v);
    if (n_vocab && n_vocab != vocab.n_tokens) {
      return fail("--n-vocab " + std::to_string(n_vocab) + " disagrees with --vocab " + vocab_path + " (" +
                  std::to_string(vocab.n_tokens) + " tokens)", kExitUsage);
    }
    shape.n_vocab = vocab.n_tokens;
  }
  if (auto st = fs::validate_shape(shape); !st.ok()) return fail(st.message(), kExitUsage);

  auto ft = fs::parse_file_type(type_name);
  if (!ft.ok()) return fail(ft.status().message(), kExitUsage);

  fs::SynthOptions opt;
  opt.shape = shape;
  opt.file_type = *ft;
  opt.out_path = out;
  opt.seed = seed;
  opt.expert_skew = expert_skew;
  opt.model_name = model_name;
  opt.threads = threads;
  opt.cancel = &g_cancel;
  if (!vocab_path.empty()) opt.vocab = &vocab;

  auto plan = fs::synth_tensor_plan(shape, *ft);
  if (!plan.ok()) return fail(plan.status().message(), kExitUsage);
  auto planned = fs::synth_planned_bytes(opt);
  if (!planned.ok()) return fail(planned.status().message(), kExitUsage);

  if (dry_run || list_tensors) {
    std::map<std::string, int> counts;
    for (const auto& t : *plan) counts[flea::type_info(t.type).name]++;
    std::printf("shape %s: n_embd %lld n_ff %lld n_layer %lld n_head %lld n_head_kv %lld n_vocab %lld "
                "ctx %lld rope_base %g arch %s%s%s%s\n",
                shape.name.c_str(), (long long)shape.n_embd, (long long)shape.n_ff,
                (long long)shape.n_layer, (long long)shape.n_head, (long long)shape.n_head_kv,
                (long long)shape.n_vocab, (long long)shape.n_ctx, shape.rope_freq_base, shape.arch.c_str(),
                shape.qkv_bias ? " qkv_bias" : "", shape.rope_scaling_factor > 0 ? " rope_freqs" : "",
                shape.tied ? " tied" : "");
    std::printf("type %s: %zu tensors", fs::file_type_name(*ft), plan->size());
    for (const auto& [name, n] : counts) std::printf(" %s=%d", name.c_str(), n);
    std::printf("\n");
    if (list_tensors) {
      for (const auto& t : *plan) {
        std::string dims;
        for (int64_t d : t.ne) dims += (dims.empty() ? "" : ",") + std::to_string(d);
        std::printf("  %-28s %-5s [%s]\n", t.name.c_str(), flea::type_info(t.type).name, dims.c_str());
      }
    }
    std::printf("planned_bytes %llu\n", static_cast<unsigned long long>(*planned));
    if (dry_run) return kExitOk;
  }
  if (out.empty()) return fail("--out is required (or use --dry-run)", kExitUsage);

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  auto last = std::chrono::steady_clock::now();
  const bool show = !quiet && *planned >= (uint64_t{64} << 20);
  auto progress = [&](const fs::SynthProgress& p) {
    if (!show) return;
    const auto now = std::chrono::steady_clock::now();
    if (p.bytes_done < p.bytes_total && now - last < std::chrono::milliseconds(500)) return;
    last = now;
    const double mb = static_cast<double>(p.bytes_done) / 1e6;
    std::fprintf(stderr, "\rflea synth: %5.1f%%  %8.0f / %.0f MB  %6.0f MB/s", 100.0 * p.bytes_done / p.bytes_total,
                 mb, static_cast<double>(p.bytes_total) / 1e6, p.elapsed_s > 0 ? mb / p.elapsed_s : 0.0);
    if (p.bytes_done == p.bytes_total) std::fprintf(stderr, "\n");
  };
  const auto t0 = std::chrono::steady_clock::now();
  flea::Status st = fs::synth_model(opt, progress);
  if (!st.ok()) {
    if (show) std::fprintf(stderr, "\n");
    return fail(st.message(), st.code() == flea::StatusCode::kCancelled ? 130 : kExitFailure);
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!quiet) {
    std::fprintf(stderr, "flea synth: wrote %s (%llu bytes, %s %s) in %.1f s, %.0f MB/s incl. fsync\n",
                 out.c_str(), static_cast<unsigned long long>(*planned), shape.name.c_str(),
                 fs::file_type_name(*ft), s, static_cast<double>(*planned) / 1e6 / std::max(s, 1e-9));
  }
  return kExitOk;
}

}  // namespace

FLEA_REGISTER_COMMAND(synth, "write a deterministic synthetic LLaMA GGUF model (streams, any size)",
                      cmd_synth);
