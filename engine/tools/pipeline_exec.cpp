// `flea ... --pipeline` in the flea binary: the MPI transport lives in flea-mpi, built beside flea
// (engine/CMakeLists.txt says why it is a separate binary). open_mpi_comm() here re-executes this
// very command line as flea-mpi: exec keeps the process id and the environment mpirun gave the
// rank, so MPI_Init in flea-mpi joins the job as this rank.
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "pipeline/comm.h"

namespace flea::pipeline {

StatusOr<std::unique_ptr<Comm>> open_mpi_comm() {
#ifndef FLEA_HAVE_MPI
  return unimplemented("--pipeline: this build has no MPI (install libopenmpi-dev and configure with -DFLEA_MPI=ON)");
#else
  char self[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return internal_error(std::string("--pipeline: cannot find this executable (/proc/self/exe): ") + std::strerror(errno));
  std::string path(self, static_cast<size_t>(n));
  path = path.substr(0, path.find_last_of('/') + 1) + "flea-mpi";
  // This process's arguments, NUL-separated, exactly as given.
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  const std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> words;
  for (size_t b = 0; b < cmdline.size();) {
    const size_t e = cmdline.find('\0', b);
    words.push_back(cmdline.substr(b, (e == std::string::npos ? cmdline.size() : e) - b));
    b = e == std::string::npos ? cmdline.size() : e + 1;
  }
  if (words.empty()) return internal_error("--pipeline: cannot read /proc/self/cmdline");
  words[0] = path;
  std::vector<char*> args;
  for (std::string& w : words) args.push_back(w.data());
  args.push_back(nullptr);
  execv(path.c_str(), args.data());
  return internal_error("--pipeline: cannot run " + path + ": " + std::strerror(errno) + " (build the flea-mpi target)");
#endif
}

}  // namespace flea::pipeline
