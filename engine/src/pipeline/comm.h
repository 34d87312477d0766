// The transport between pipeline stages: one process per rank, point-to-point messages in order.
// The only implementation is MPI (comm_mpi.cpp, linked into flea-mpi only, built when CMake finds
// an MPI); nothing here names MPI, so the engine and the flea binary carry no libmpi and a single
// process never starts it (flea re-executes itself as flea-mpi under --pipeline: tools/pipeline_exec.cpp).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "flea/status.h"

namespace flea::pipeline {

class Comm {
 public:
  virtual ~Comm() = default;  // MPI: MPI_Finalize (every rank reaches it, then the job ends)
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Blocking; a message is received whole, by a recv of exactly its size from the same sender.
  virtual Status send(int to, const void* data, size_t bytes) = 0;
  virtual Status recv(int from, void* data, size_t bytes) = 0;
  // Every rank gives `bytes` bytes; every rank receives all of them, rank by rank ([size × bytes]).
  virtual Status all_gather(const void* mine, size_t bytes, std::vector<char>* all) = 0;
  // "Open MPI v4.1.4": for the plan printout and results.
  virtual std::string describe() const = 0;
};

// MPI_Init (threads: funneled) and the world communicator. Called only under --pipeline. In the
// flea binary it does not return on success (it execs flea-mpi); an error when this build has no
// MPI (FLEA_MPI off) or flea-mpi cannot be run.
StatusOr<std::unique_ptr<Comm>> open_mpi_comm();

}  // namespace flea::pipeline
