#include "launch/rank_runner.h"

#include <cstdio>
#include <exception>
#include <string>

#include "runtime/comm/mpi_communicator.h"

namespace gemmapod {

int RunOnRanks(int* argc, char*** argv, const std::function<int(Communicator& world)>& body) {
  MpiSession session(argc, argv);
  auto world = MpiCommunicator::World();
  try {
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
