// Subcommand registry for the `flea` CLI. Each tools/cmd_<verb>.cpp registers itself with
// FLEA_REGISTER_COMMAND; flea.cpp dispatches on argv[1].
#pragma once

#include <string>
#include <vector>

namespace CLI { class App; }

namespace flea::cli {

using CommandFn = int (*)(int argc, char** argv);  // argv[0] is "flea <verb>"

struct Command {
  std::string name;
  std::string help;
  CommandFn fn;
};

std::vector<Command>& registry();

struct Registrar {
  Registrar(const char* name, const char* help, CommandFn fn) { registry().push_back({name, help, fn}); }
};

// Exit codes shared by every subcommand.
constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;   // the work failed (I/O error, correctness failure)
constexpr int kExitUsage = 2;     // bad flags or bad input file

// Parses argv with CLI11; returns -1 to continue, otherwise the exit code (help or usage error).
int parse_or_exit(CLI::App& app, int argc, char** argv);

}  // namespace flea::cli

#define FLEA_REGISTER_COMMAND(name, help, fn) \
  static ::flea::cli::Registrar flea_cmd_registrar_##name(#name, help, fn)
