// The vocabulary a tokenizer fuzz target runs on: the GGUF file named by the environment variable
// `env_var`, else `default_path`; loaded once. Aborts with one line when it cannot be used (a fuzz
// run without its vocabulary would test nothing).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"

namespace flea::fuzz {

inline std::unique_ptr<Tokenizer> load_vocab(const char* env_var, const char* default_path, const char* target) {
  const char* env = std::getenv(env_var);
  const std::string path = env ? env : default_path;
  auto f = gguf::read_file(path);
  if (!f.ok()) {
    std::fprintf(stderr, "%s: %s (set %s)\n", target, f.status().message().c_str(), env_var);
    std::abort();
  }
  auto t = Tokenizer::from_gguf(*f);
  if (!t.ok()) {
    std::fprintf(stderr, "%s: %s: %s\n", target, path.c_str(), t.status().message().c_str());
    std::abort();
  }
  return std::make_unique<Tokenizer>(std::move(*t));
}

}  // namespace flea::fuzz
