#include "launch/rank_runner.h"

#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "runtime/comm/mpi_communicator.h"

namespace gemmapod {
namespace {

// The ranks of a job must run one command: mpirun's `:` syntax can start them with different
// arguments, and they would then wait on each other in different calls or mix their outputs.
// Checked first, with one all-gather of a hash of each rank's arguments.
void CheckOneCommand(Communicator& world, int argc, char** argv) {
  if (world.size() == 1) return;
  std::string command;
  for (int i = 1; i < argc; ++i) {
    if (!command.empty()) command += ' ';
    command += argv[i];
  }
  uint64_t hash = 1469598103934665603ull;  // FNV-1a
  for (const unsigned char c : command) hash = (hash ^ c) * 1099511628211ull;
  Tensor mine = Tensor::Empty({2}, DType::kI32);
  mine.data<int32_t>()[0] = static_cast<int32_t>(hash & 0xffffffffu);
  mine.data<int32_t>()[1] = static_cast<int32_t>(hash >> 32);
  Tensor all = Tensor::Empty({2 * world.size()}, DType::kI32);
  world.AllGather(mine, all);
  const int32_t* h = all.data<int32_t>();
  std::string differ;
  for (int r = 1; r < world.size(); ++r) {
    if (h[2 * r] != h[0] || h[2 * r + 1] != h[1])
      differ += (differ.empty() ? "" : ", ") + std::to_string(r);
  }
  if (differ.empty()) return;
  if (world.rank() == 0) {
    std::fprintf(stderr,
                 "gemmapod: error: the job's ranks were started with different commands: rank(s) "
                 "%s differ from rank 0's `gemmapod %s` (every rank must run the same command)\n",
                 differ.c_str(), command.c_str());
    std::fflush(stderr);
  }
  throw JobFailed{};
}

// Ranks on one host share its cores. OpenMP's default (a thread per core the process may run
// on) gives each of them every core, and their spinning threads then fight for the cores: four
// training ranks on two cores took 13 s for what one thread each does in under 1 s. Unless
// OMP_NUM_THREADS says otherwise, or mpirun bound the rank to fewer cores than the host has
// (OpenMP already follows that), each rank takes its share of the cores.
void ShareCoresWithTheHostsRanks() {
  if (std::getenv("OMP_NUM_THREADS") != nullptr) return;
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  const int ranks = local != nullptr ? std::atoi(local) : 0;
  if (ranks <= 1) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  if (sched_getaffinity(0, sizeof set, &set) != 0 || online <= 0 || CPU_COUNT(&set) < online) {
    return;
  }
  omp_set_num_threads(std::max(1, static_cast<int>(online) / ranks));
}

}  // namespace

int RunOnRanks(int* argc, char*** argv, const std::function<int(Communicator& world)>& body) {
  MpiSession session(argc, argv);
  auto world = MpiCommunicator::World();
  ShareCoresWithTheHostsRanks();
  try {
    CheckOneCommand(*world, *argc, *argv);
    return body(*world);
  } catch (const JobFailed&) {
    return 1;  // reported once by CheckOnEveryRank; every rank got here
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

void CheckOnEveryRank(Communicator& world, const std::function<void()>& check) {
  std::string message;
  bool failed = false;
  try {
    check();
  } catch (const std::exception& e) {
    failed = true;
    message = e.what();
  }
  // failures[0]: how many ranks failed; first[0]: the lowest of them (size() when none).
  Tensor failures = Tensor::Empty({1}, DType::kI32), first = Tensor::Empty({1}, DType::kI32);
  failures.data<int32_t>()[0] = failed ? 1 : 0;
  first.data<int32_t>()[0] = failed ? world.rank() : world.size();
  world.AllReduce(failures, ReduceOp::kSum);
  world.AllReduce(first, ReduceOp::kMin);
  const int count = failures.data<int32_t>()[0];
  if (count == 0) return;
  if (world.rank() == first.data<int32_t>()[0]) {
    if (count == world.size()) {
      std::fprintf(stderr, "gemmapod: error: %s\n", message.c_str());
    } else {
      std::fprintf(stderr, "gemmapod: rank %d of %d: error: %s\n", world.rank(), world.size(),
                   message.c_str());
    }
    std::fflush(stderr);
  }
  throw JobFailed{};
}

}  // namespace gemmapod
