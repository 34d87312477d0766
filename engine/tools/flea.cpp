// flea: the engine CLI. `flea <command> --help` documents each command.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>

#include "commands.h"

namespace flea::cli {

std::vector<Command>& registry() {
  static std::vector<Command> commands;
  return commands;
}

}  // namespace flea::cli

static void print_usage(FILE* out) {
  auto commands = flea::cli::registry();
  std::sort(commands.begin(), commands.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  std::fprintf(out, "usage: flea <command> [options]\n\ncommands:\n");
  for (const auto& c : commands) std::fprintf(out, "  %-10s %s\n", c.name.c_str(), c.help.c_str());
  std::fprintf(out, "\n`flea <command> --help` shows a command's options.\n");
}

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    print_usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? flea::cli::kExitUsage : flea::cli::kExitOk;
  }
  for (const auto& c : flea::cli::registry()) {
    if (c.name == argv[1]) {
      std::string verb = std::string("flea ") + argv[1];
      argv[1] = verb.data();
      return c.fn(argc - 1, argv + 1);
    }
  }
  std::fprintf(stderr, "flea: unknown command '%s'\n", argv[1]);
  print_usage(stderr);
  return flea::cli::kExitUsage;
}
