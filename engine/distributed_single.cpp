// engine/distributed.h without MPI (EMBER_MPI off): one rank.
#include "engine/distributed.h"
#include "engine/error.h"

namespace ember {

bool built_with_mpi() { return false; }

std::unique_ptr<Communicator> world_communicator(double timeout_seconds, bool overlap) {
  if (const int ranks = launched_rank_count(); ranks > 1) {
    throw Error("launched by mpirun as one of " + std::to_string(ranks) +
                " processes, but this ember was built without MPI (EMBER_MPI=OFF; install libopenmpi-dev and "
                "reconfigure): each process would train alone. Run it without mpirun, or rebuild with MPI");
  }
  return single_rank_communicator();
}

}  // namespace ember
