// flea logits: evaluate a token sequence in one batch and write every position's logits as
// row-major little-endian float32 [n_tokens × n_vocab].
#include <cstdio>
#include <fstream>

#include "commands.h"
#include "engine_cli.h"
#include "pipeline_cli.h"

namespace flea::cli {
namespace {

int cmd_logits(int argc, char** argv) {
  CLI::App app("Evaluate tokens in one batch; write float32 logits [n_tokens x n_vocab].", "flea logits");
  EngineOptions opts;
  std::string tokens_text, out_path;
  bool pipeline = false;
  add_engine_flags(app, &opts);
  add_pipeline_flag(app, &pipeline);
  app.add_option("--tokens", tokens_text, "comma-separated token ids, e.g. 1,2,3")->required();
  app.add_option("--out,-o", out_path, "output file (float32, little-endian)")->required();
  if (int rc = parse_or_exit(app, argc, argv); rc >= 0) return rc;

  auto tokens = parse_token_list(tokens_text);
  if (!tokens.ok()) return report_error("logits", tokens.status(), kExitUsage);
  opts.n_ctx = opts.n_rows = opts.n_logit_rows = static_cast<int64_t>(tokens->size());
  // One process (the engine and session below), or one rank of a pipeline (rank 0 drives an
  // evaluator over all of them; the others serve their layers until it is done).
  Pipeline pipe;
  StatusOr<Engine> engine = Engine{};
  StatusOr<std::unique_ptr<Evaluator>> session_or = std::unique_ptr<Evaluator>();
  Evaluator* session = nullptr;
  if (pipeline) {
    if (int rc = open_pipeline("logits", opts, static_cast<int64_t>(tokens->size()), &pipe); rc >= 0) return rc;
    if (!pipe.driver()) return serve_pipeline("logits", &pipe);
    session = pipe.evaluator.get();
  } else {
    engine = open_engine(opts);
    if (!engine.ok()) return report_error("logits", engine.status(), kExitUsage);
    session_or = make_session(*engine, static_cast<int64_t>(tokens->size()));
    if (!session_or.ok()) {
      std::fprintf(stderr, "%s\n", session_or.status().message().c_str());
      return kExitUsage;
    }
    session = session_or->get();
  }
  std::vector<float> logits;
  const Status evaluated = session->eval(*tokens, &logits, /*all_logits=*/true);
  stop_pipeline(&pipe);
  if (Status st = evaluated; !st.ok()) {
    std::fprintf(stderr, "flea logits: %s\n", st.message().c_str());
    return st.code() == StatusCode::kOutOfRange ? kExitUsage : kExitFailure;
  }
  const std::string tmp = out_path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(logits.data()),
            static_cast<std::streamsize>(logits.size() * sizeof(float)));
    if (!f.flush()) {
      std::fprintf(stderr, "flea logits: cannot write %s\n", tmp.c_str());
      return kExitFailure;
    }
  }
  if (std::rename(tmp.c_str(), out_path.c_str()) != 0) {
    std::fprintf(stderr, "flea logits: cannot rename %s to %s\n", tmp.c_str(), out_path.c_str());
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace
}  // namespace flea::cli

FLEA_REGISTER_COMMAND(logits, "evaluate tokens in one batch and write all positions' logits", flea::cli::cmd_logits);
