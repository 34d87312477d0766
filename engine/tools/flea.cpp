// flea: the engine CLI. `flea <command> --help` documents each command.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <system_error>

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
      // A host allocation the machine (or RLIMIT_AS, or a cgroup) cannot satisfy is an input
      // problem of the size requested, not a crash: one line naming the command, exit 1.
      try {
        return c.fn(argc - 1, argv + 1);
      } catch (const std::bad_alloc&) {
        std::fprintf(stderr,
                     "%s: out of memory: a host allocation failed (std::bad_alloc); use a smaller model, "
                     "context or batch, or a memory budget, or raise the memory limit\n",
                     verb.c_str());
        return flea::cli::kExitFailure;
      } catch (const std::system_error& e) {
        // std::thread throws this when the kernel refuses a thread (its stack under RLIMIT_AS,
        // or the process/thread limit).
        std::fprintf(stderr, "%s: out of memory or a process limit: a thread or system resource could not be "
                     "created (%s)\n", verb.c_str(), e.code().message().c_str());
        return flea::cli::kExitFailure;
      }
    }
  }
  std::fprintf(stderr, "flea: unknown command '%s'\n", argv[1]);
  print_usage(stderr);
  return flea::cli::kExitUsage;
}
