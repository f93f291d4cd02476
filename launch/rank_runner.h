// Runs the body of a subcommand on every rank of the job: starts MPI, and when a rank fails,
// prints its message with its rank and ends the whole job (MPI_Abort), so no rank is left
// waiting in a collective for a peer that is gone.
#pragma once

#include <functional>

namespace gemmapod {

class Communicator;

int RunOnRanks(int* argc, char*** argv, const std::function<int(Communicator& world)>& body);

}  // namespace gemmapod
