// Comm over MPI's world communicator (built only with FLEA_MPI; see comm.h).
// The C API only: without these, Open MPI's mpi.h pulls in its deprecated C++ bindings (libmpi_cxx).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <climits>

#include "pipeline/comm.h"

namespace flea::pipeline {
namespace {

std::string mpi_error(int rc) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(rc);
  return std::string(text, static_cast<size_t>(len));
}

class MpiComm final : public Comm {
 public:
  MpiComm() {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    // Errors come back as codes (reported as a Status) instead of aborting the job from inside MPI.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
  ~MpiComm() override { MPI_Finalize(); }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  Status send(int to, const void* data, size_t bytes) override {
    if (bytes > static_cast<size_t>(INT_MAX)) return invalid_argument("pipeline message of " + std::to_string(bytes) + " bytes: more than MPI's int count");
    const int rc = MPI_Send(data, static_cast<int>(bytes), MPI_BYTE, to, kTag, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return io_error("MPI_Send to rank " + std::to_string(to) + ": " + mpi_error(rc));
    return ok_status();
  }

  Status recv(int from, void* data, size_t bytes) override {
    if (bytes > static_cast<size_t>(INT_MAX)) return invalid_argument("pipeline message of " + std::to_string(bytes) + " bytes: more than MPI's int count");
    MPI_Status st;
    const int rc = MPI_Recv(data, static_cast<int>(bytes), MPI_BYTE, from, kTag, MPI_COMM_WORLD, &st);
    if (rc != MPI_SUCCESS) return io_error("MPI_Recv from rank " + std::to_string(from) + ": " + mpi_error(rc));
    int got = 0;
    MPI_Get_count(&st, MPI_BYTE, &got);
    if (static_cast<size_t>(got) != bytes)
      return data_loss("rank " + std::to_string(from) + " sent " + std::to_string(got) + " bytes where " + std::to_string(bytes) +
                       " were expected (the ranks disagree on the protocol)");
    return ok_status();
  }

  Status all_gather(const void* mine, size_t bytes, std::vector<char>* all) override {
    all->assign(bytes * static_cast<size_t>(size_), 0);
    const int rc = MPI_Allgather(mine, static_cast<int>(bytes), MPI_BYTE, all->data(), static_cast<int>(bytes), MPI_BYTE, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return io_error("MPI_Allgather: " + mpi_error(rc));
    return ok_status();
  }

  std::string describe() const override {
    char text[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(text, &len);
    std::string s(text, static_cast<size_t>(len));
    const size_t cut = s.find_first_of(",\n");
    return s.substr(0, cut);
  }

 private:
  static constexpr int kTag = 22;
  int rank_ = 0, size_ = 1;
};

}  // namespace

StatusOr<std::unique_ptr<Comm>> open_mpi_comm() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) return internal_error("MPI is already initialized");
  int provided = 0;
  // Only the thread that runs the command calls MPI (the I/O and compute threads never do).
  if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
    return internal_error("MPI_Init_thread failed (run under mpirun or srun)");
  return std::unique_ptr<Comm>(std::make_unique<MpiComm>());
}

}  // namespace flea::pipeline
