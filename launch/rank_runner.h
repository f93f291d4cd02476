// Runs the body of a subcommand on every rank of the job: starts MPI, and when a rank fails,
// prints its message with its rank and ends the whole job (MPI_Abort), so no rank is left
// waiting in a collective for a peer that is gone.
#pragma once

#include <functional>
#include <string>

namespace gemmapod {

class Communicator;

int RunOnRanks(int* argc, char*** argv, const std::function<int(Communicator& world)>& body);

// Runs `check` on every rank and agrees on the outcome (collective over `world`). When it throws
// on any rank, the lowest such rank prints its message once and every rank throws JobFailed,
// which RunOnRanks ends with exit code 1 and no further message. For the checks all ranks make
// before they work together (files, configs, layouts): a bad path is one line, not one per rank,
// and no rank is left waiting for one that failed.
void CheckOnEveryRank(Communicator& world, const std::function<void()>& check);

struct JobFailed {};

// Refuses a job whose ranks read different files at `path` (hosts with different copies, or
// ranks started in different directories): every rank hashes what it reads there (an HDF5
// checkpoint: its tensors' names and stored checksums, metadata only; another file: its size and
// first and last MiB; a directory: each file's name and size and config.json), and rank 0 names
// the ranks and hosts that differ from it. Collective over `world`; one rank: nothing.
void CheckSameCheckpoint(Communicator& world, const std::string& path);

}  // namespace gemmapod
