// `flea serve` runs flea-serve, built beside flea (engine/CMakeLists.txt says why it is a separate
// binary): exec keeps the process id, so signals and exit status are the server's own.
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "commands.h"

namespace flea::cli {
namespace {

int cmd_serve_exec(int argc, char** argv) {
  char self[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) {
    std::fprintf(stderr, "flea serve: cannot find this executable (/proc/self/exe): %s\n", std::strerror(errno));
    return kExitFailure;
  }
  std::string path(self, static_cast<size_t>(n));
  path = path.substr(0, path.find_last_of('/') + 1) + "flea-serve";
  std::vector<char*> args;
  std::string arg0 = path, verb = "serve";
  args.push_back(arg0.data());
  args.push_back(verb.data());
  for (int i = 1; i < argc; ++i) args.push_back(argv[i]);
  args.push_back(nullptr);
  execv(path.c_str(), args.data());
  std::fprintf(stderr, "flea serve: cannot run %s: %s (build the flea-serve target)\n", path.c_str(),
               std::strerror(errno));
  return kExitFailure;
}

}  // namespace
}  // namespace flea::cli

FLEA_REGISTER_COMMAND(serve, "serve the model over an OpenAI-compatible HTTP API (runs flea-serve)",
                      flea::cli::cmd_serve_exec);
