// Without MPI (FLEA_MPI off) --pipeline has no transport: one clear error (see comm.h).
#include "pipeline/comm.h"

namespace flea::pipeline {

#ifndef FLEA_HAVE_MPI
StatusOr<std::unique_ptr<Comm>> open_mpi_comm() {
  return unimplemented("--pipeline: this build has no MPI (install libopenmpi-dev and configure with -DFLEA_MPI=ON)");
}
#endif

}  // namespace flea::pipeline
