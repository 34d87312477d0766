// flea chat: an interactive terminal chat. Reads user lines from stdin, renders the history with
// the model's chat template, streams the reply to stdout and a status line to stderr. The KV cache
// is kept across turns: each turn evaluates only what its rendered prompt adds to the tokens
// already in the cache.
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include "chat/chat_template.h"
#include "chat/prompt_cache.h"
#include "chat/reply_stream.h"
#include "commands.h"
#include "engine_cli.h"
#include "flea/clock.h"
#include "sampling/sampler.h"
#include "tokenizer/tokenizer.h"

namespace flea::cli {
namespace {

volatile std::sig_atomic_t g_interrupted = 0;
extern "C" void on_sigint(int) { g_interrupted = 1; }

// SIGINT sets a flag instead of ending the process. No SA_RESTART: a Ctrl-C at the prompt
// interrupts the blocking read, which is how the prompt notices it.
void install_sigint_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  sigaction(SIGINT, &sa, nullptr);
}

enum class LineStatus { kLine, kEof, kInterrupted };

// One line from fd 0 without its '\n' (read(2) rather than stdio, so that EINTR is seen).
// `pending` keeps bytes read past the line for the next call.
LineStatus read_line(std::string* pending, std::string* line) {
  for (;;) {
    const size_t nl = pending->find('\n');
    if (nl != std::string::npos) {
      *line = pending->substr(0, nl);
      pending->erase(0, nl + 1);
      if (!line->empty() && line->back() == '\r') line->pop_back();
      return LineStatus::kLine;
    }
    // Wait in short polls: a Ctrl-C landing between the flag check and a blocking read would
    // otherwise go unnoticed until the next line.
    if (g_interrupted) return LineStatus::kInterrupted;
    pollfd pfd{0, POLLIN, 0};
    const int ready = ::poll(&pfd, 1, 200);
    if (ready < 0 && errno == EINTR) return LineStatus::kInterrupted;
    if (ready == 0) continue;
    char buf[4096];
    const ssize_t n = ::read(0, buf, sizeof buf);
    if (n < 0 && errno == EINTR) return LineStatus::kInterrupted;
    if (n <= 0) {
      if (pending->empty()) return LineStatus::kEof;
      *line = std::move(*pending);  // a last line without '\n'
      pending->clear();
      return LineStatus::kLine;
    }
    pending->append(buf, static_cast<size_t>(n));
  }
}

void write_out(const std::string& s) {
  if (s.empty()) return;
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

std::string human_bytes(double b) {
  char buf[32];
  if (b >= 1024.0 * 1024 * 1024) std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1024.0 * 1024 * 1024));
  else if (b >= 1024.0 * 1024) std::snprintf(buf, sizeof buf, "%.1f MiB", b / (1024.0 * 1024));
  else if (b >= 1024.0) std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024.0);
  else std::snprintf(buf, sizeof buf, "%.0f B", b);
  return buf;
}

struct ChatConfig {
  int max_tokens = 512;
  bool ignore_eos = false;
};

class Chat {
 public:
  Chat(Engine& engine, Evaluator& session, const Tokenizer& tok, chat::ChatTemplate tmpl, Sampler sampler,
       ChatConfig cfg, std::string system_prompt)
      : engine_(engine), session_(session), tok_(tok), tmpl_(std::move(tmpl)), sampler_(std::move(sampler)),
        cfg_(cfg), system_(std::move(system_prompt)) {
    reset();
  }

  void reset() {
    history_.clear();
    if (!system_.empty()) history_.push_back({"system", system_});
    session_.reset();
    cached_.clear();
    sampler_.reset();
  }

  // One user turn: prompt, streamed reply, status line. An error leaves the history as it was.
  Status turn(const std::string& user_text) {
    history_.push_back({"user", user_text});
    Status st = reply();
    if (!st.ok()) history_.pop_back();
    return st;
  }

 private:
  Status reply() {
    FLEA_ASSIGN_OR_RETURN(const std::string prompt_text, chat::render(tmpl_, history_, true));
    const std::vector<int32_t> prompt = tok_.encode(prompt_text, tok_.add_bos_default(), /*parse_special=*/true);
    if (prompt.empty()) return invalid_argument("the chat template rendered an empty prompt");
    const int64_t n_ctx = session_.n_ctx();
    if (static_cast<int64_t>(prompt.size()) + 1 > n_ctx) {
      return out_of_range("the conversation is " + std::to_string(prompt.size()) + " tokens, --ctx is " +
                          std::to_string(n_ctx) + ": /reset to start over, or a larger --ctx");
    }
    size_t keep = chat::reusable_prefix(cached_, prompt);
    if (keep < cached_.size()) {
      if (!session_.truncate(0, static_cast<int64_t>(keep)).ok()) {
        session_.reset();  // the backend cannot roll back: evaluate the whole prompt again
        keep = 0;
      }
      cached_.resize(keep);
    }
    const std::vector<int32_t> suffix(prompt.begin() + static_cast<std::ptrdiff_t>(keep), prompt.end());
    for (int32_t t : suffix) sampler_.accept(t);

    const uint64_t bytes_0 = engine_.telemetry->read_bytes();
    const int64_t t0 = steady_now_ns();
    std::vector<float> logits;
    if (Status st = session_.eval(suffix, &logits, false); !st.ok()) {
      drop_cache();
      return st;
    }
    cached_.insert(cached_.end(), suffix.begin(), suffix.end());
    const int64_t t_prompt = steady_now_ns();
    const uint64_t bytes_prompt = engine_.telemetry->read_bytes();

    chat::ReplyStream stream(cfg_.ignore_eos ? std::vector<std::string>{} : tmpl_.stop_texts);
    const int32_t V = static_cast<int32_t>(engine_.model->hp.n_vocab);
    int n_gen = 0;
    const char* why = "max tokens";
    Status st;
    for (;;) {
      if (g_interrupted) {
        why = "interrupted";
        break;
      }
      const int32_t next = sampler_.sample(logits.data(), V);
      sampler_.accept(next);
      ++n_gen;
      if (!cfg_.ignore_eos && tok_.is_end_of_generation(next)) {
        why = "end of turn";
        break;
      }
      write_out(stream.push(tok_.piece(next)));
      if (stream.stopped()) {
        why = "stop text";
        break;
      }
      if (n_gen >= cfg_.max_tokens) break;
      if (static_cast<int64_t>(cached_.size()) + 1 > n_ctx) {
        why = "context full";
        break;
      }
      st = session_.eval({next}, &logits, false);
      if (!st.ok()) break;
      cached_.push_back(next);
    }
    write_out(stream.finish());
    write_out("\n");
    const int64_t t_end = steady_now_ns();
    const bool interrupted = g_interrupted;
    g_interrupted = 0;
    if (!st.ok()) {
      drop_cache();
      return st;
    }
    // The reply, as far as it went, joins the history (an interrupted one too: it is what was said).
    history_.push_back({"assistant", stream.text()});

    const double decode_s = static_cast<double>(t_end - t_prompt) / 1e9;
    const uint64_t decode_bytes = engine_.telemetry->read_bytes() - bytes_prompt;
    std::fprintf(stderr,
                 "[%s%d tokens, %.1f tok/s, %s read/token | prompt %zu tokens: %zu reused from the KV cache, %zu "
                 "evaluated in %.0f ms, %s read | %s]\n",
                 interrupted ? "interrupted: " : "", n_gen, decode_s > 0 ? n_gen / decode_s : 0.0,
                 human_bytes(n_gen ? static_cast<double>(decode_bytes) / n_gen : 0.0).c_str(), prompt.size(), keep,
                 suffix.size(), static_cast<double>(t_prompt - t0) / 1e6,
                 human_bytes(static_cast<double>(bytes_prompt - bytes_0)).c_str(), why);
    return ok_status();
  }

  // After a failed eval the cache holds an unknown part of the batch: the next turn starts afresh.
  void drop_cache() {
    session_.reset();
    cached_.clear();
  }

  Engine& engine_;
  Evaluator& session_;
  const Tokenizer& tok_;
  chat::ChatTemplate tmpl_;
  Sampler sampler_;
  ChatConfig cfg_;
  std::string system_;
  std::vector<chat::Message> history_;
  std::vector<int32_t> cached_;  // the tokens in the KV cache, position by position
};

int cmd_chat(int argc, char** argv) {
  CLI::App app(
      "Chat with a model in the terminal. Each line on stdin is a user message; the reply streams to stdout "
      "(one line break after it) and a status line goes to stderr: tokens, tok/s, bytes read per token "
      "(the weight streamer's reads), and how much of the prompt the KV cache already held. The history is "
      "rendered with the model's chat template (tokenizer.chat_template, recognised by family; unknown or "
      "missing: chatml, with a warning) or --chat-template. Lines: /reset clears the history and the KV "
      "cache, /exit quits (so does end of input). Ctrl-C stops the reply being generated; at the prompt it "
      "quits. Works from a pipe: no prompt marker is printed unless stdin is a terminal.",
      "flea chat");
  EngineOptions opts;
  std::string template_name, system_prompt, kv = "resident";
  int64_t n_ctx = 4096;
  ChatConfig cfg;
  SamplerConfig sc;  // chat defaults: temperature 0.8, top-k 40
  add_engine_flags(app, &opts);
  app.add_option("--chat-template", template_name,
                 "render with this template instead of the model's: " + chat::family_names());
  app.add_option("--system", system_prompt, "system prompt at the start of the history (kept by /reset)");
  app.add_option("--max-tokens,-n", cfg.max_tokens, "most tokens per reply")
      ->check(CLI::Range(1, 1 << 24))->capture_default_str();
  app.add_option("--ctx", n_ctx, "KV cache positions: the whole conversation must fit")
      ->check(CLI::Range(int64_t{16}, int64_t{1} << 24))->capture_default_str();
  app.add_option("--kv", kv, "KV cache: resident, or host (in host memory, streamed to the GPU per layer "
                             "with the weights on the CUDA backend; the same as resident on the CPU)")
      ->check(CLI::IsMember({"resident", "host"}))->capture_default_str();
  app.add_option("--temp", sc.temperature, "temperature; 0 = greedy")->capture_default_str();
  app.add_option("--top-k", sc.top_k, "top-k (0 = off)")->capture_default_str();
  app.add_option("--top-p", sc.top_p, "top-p nucleus (1 = off)")->capture_default_str();
  app.add_option("--min-p", sc.min_p, "min-p (0 = off)")->capture_default_str();
  app.add_option("--repeat-penalty", sc.repeat_penalty, "repetition penalty (1 = off)")->capture_default_str();
  app.add_option("--seed", sc.seed, "sampling seed")->capture_default_str();
  app.add_flag("--ignore-eos", cfg.ignore_eos,
               "do not stop at EOS, end-of-turn tokens or stop texts (only --max-tokens, Ctrl-C or a full "
               "--ctx end a reply): for measurements and tests");
  if (int rc = parse_or_exit(app, argc, argv); rc >= 0) return rc;

  auto sampler = Sampler::create(sc);
  if (!sampler.ok()) return report_error("chat", sampler.status(), kExitUsage);
  chat::ChatTemplate tmpl;
  if (!template_name.empty()) {
    auto t = chat::template_by_name(template_name);
    if (!t.ok()) return report_error("chat", t.status(), kExitUsage);
    tmpl = std::move(*t);
  }
  opts.n_ctx = n_ctx;
  opts.n_rows = n_ctx;  // the first prompt of a long --system may fill the context
  auto engine = open_engine(opts);
  if (!engine.ok()) return report_error("chat", engine.status(), kExitUsage);
  auto tok = Tokenizer::from_gguf(engine->model->file);
  if (!tok.ok()) return report_error("chat", tok.status(), kExitUsage);
  if (template_name.empty()) {
    auto src = engine->model->file.get_string("tokenizer.chat_template");
    std::string warning;
    tmpl = chat::detect_template(src.ok() ? *src : "", &warning);
    if (!warning.empty()) std::fprintf(stderr, "flea chat: warning: %s\n", warning.c_str());
  }
  auto session = make_session(*engine, n_ctx, 1, kv);
  if (!session.ok()) return report_error("chat", session.status(), kExitUsage);
  install_sigint_handler();
  std::fprintf(stderr, "flea chat: %s, template %s, --ctx %lld; /reset, /exit, Ctrl-C stops a reply\n",
               opts.model.c_str(), tmpl.name.c_str(), static_cast<long long>(n_ctx));
  Chat chat(*engine, **session, *tok, tmpl, std::move(*sampler), cfg, system_prompt);
  const bool interactive = isatty(0);
  std::string pending, line;
  for (;;) {
    if (interactive) write_out("> ");
    const LineStatus ls = read_line(&pending, &line);
    if (ls == LineStatus::kEof) break;
    if (ls == LineStatus::kInterrupted) {
      if (interactive) write_out("\n");
      break;
    }
    if (line.empty()) continue;
    if (line == "/exit") break;
    if (line == "/reset") {
      chat.reset();
      std::fprintf(stderr, "[history and KV cache cleared]\n");
      continue;
    }
    if (line[0] == '/' && line.find(' ') == std::string::npos) {
      std::fprintf(stderr, "flea chat: unknown command '%s' (/reset, /exit)\n", line.c_str());
      continue;
    }
    if (Status st = chat.turn(line); !st.ok()) std::fprintf(stderr, "flea chat: %s\n", st.message().c_str());
  }
  return kExitOk;
}

}  // namespace
}  // namespace flea::cli

FLEA_REGISTER_COMMAND(chat, "chat with a model in the terminal (chat template, streamed replies)",
                      flea::cli::cmd_chat);
