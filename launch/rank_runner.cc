#include "launch/rank_runner.h"

#include <cstdio>
#include <exception>

#include "runtime/comm/mpi_communicator.h"

namespace gemmapod {

int RunOnRanks(int* argc, char*** argv, const std::function<int(Communicator& world)>& body) {
  MpiSession session(argc, argv);
  auto world = MpiCommunicator::World();
  try {
    return body(*world);
  } catch (const std::exception& e) {
    if (world->size() == 1) {
      std::fprintf(stderr, "gemmapod: error: %s\n", e.what());
    } else {
      std::fprintf(stderr, "gemmapod: rank %d of %d: error: %s\n", world->rank(), world->size(),
                   e.what());
    }
    std::fflush(stderr);
    // Finalising would wait for ranks that are stuck waiting for this one: abort them all.
    if (world->size() > 1) MpiSession::Abort(1);
    return 1;
  }
}

}  // namespace gemmapod
