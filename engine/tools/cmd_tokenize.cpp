// flea tokenize --model M --text T [--bos] [--special]: the token ids of a text as a JSON array.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>

#include "commands.h"
#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"

namespace {

int fail(const char* verb, const std::string& message) {
  std::fprintf(stderr, "%s: error: %s\n", verb, message.c_str());
  return flea::cli::kExitUsage;
}

int cmd_tokenize(int argc, char** argv) {
  const char* verb = argv[0];
  CLI::App app{"Tokenize a text with a GGUF model's vocabulary (SentencePiece 'llama' or byte-level BPE 'gpt2') "
               "and print the ids as a JSON array. No BOS unless --bos; special-token spellings such as <s> or "
               "<|eot_id|> are ordinary text unless --special."};
  app.name(verb);
  std::string model_path;
  std::string text;
  std::string text_file;
  bool add_bos = false;
  bool parse_special = false;
  app.add_option("--model", model_path, "GGUF file with tokenizer.ggml.* metadata")->required();
  auto* text_opt = app.add_option("--text", text, "the text to tokenize (UTF-8)");
  auto* file_opt = app.add_option("--text-file", text_file, "read the text from this file instead (bytes as-is)");
  text_opt->excludes(file_opt);
  app.add_flag("--bos", add_bos, "prepend the BOS token");
  app.add_flag("--special", parse_special,
               "match control and unknown token spellings (<|eot_id|>, <s>) in the text as those tokens");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return fail(verb, e.what());
  }
  if (text_opt->count() == 0 && file_opt->count() == 0) return fail(verb, "one of --text or --text-file is required");
  if (file_opt->count() > 0) {
    std::ifstream in(text_file, std::ios::binary);
    if (!in) return fail(verb, "cannot open --text-file '" + text_file + "'");
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (in.bad()) return fail(verb, "cannot read --text-file '" + text_file + "'");
  }

  auto file = flea::gguf::read_file(model_path);
  if (!file.ok()) return fail(verb, file.status().to_string());
  auto tokenizer = flea::Tokenizer::from_gguf(*file);
  if (!tokenizer.ok()) return fail(verb, model_path + ": " + tokenizer.status().to_string());

  const std::vector<int32_t> ids = tokenizer->encode(text, add_bos, parse_special);
  std::string out = "[";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(ids[i]);
  }
  out += "]\n";
  std::fputs(out.c_str(), stdout);
  return std::fflush(stdout) == 0 ? flea::cli::kExitOk : flea::cli::kExitFailure;
}

}  // namespace

FLEA_REGISTER_COMMAND(tokenize, "print the token ids of a text as a JSON array", cmd_tokenize);
