// A two-rank job in which rank 1 stops itself (SIGSTOP) and rank 0 waits on it in the call named
// by argv[1]: allreduce, recv or send-wait. The watchdog must end the job (comm_watchdog_test).
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstring>

#include "runtime/comm/mpi_communicator.h"

int main(int argc, char** argv) {
  using namespace gemmapod;
  try {
    MpiSession session(&argc, &argv);
    auto world = MpiCommunicator::World();
    if (world->size() != 2 || argc != 2) {
      std::fprintf(stderr, "usage: mpirun -np 2 comm_watchdog_probe allreduce|recv|send-wait\n");
      return 2;
    }
    world->Barrier();
    if (world->rank() == 1) {
      raise(SIGSTOP);  // stopped, as by a debugger or `kill -STOP`: its peers wait forever
      return 0;
    }
    sleep(1);
    Tensor t = Tensor::Zeros({4 << 20}, DType::kF32);  // large: a send waits for its receiver
    if (std::strcmp(argv[1], "allreduce") == 0) {
      world->AllReduce(t, ReduceOp::kSum);
    } else if (std::strcmp(argv[1], "recv") == 0) {
      world->Recv(t, 1, 7);
    } else {
      world->SendAsync(t, 1, 9)->Wait();
    }
    std::printf("the call returned\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "comm_watchdog_probe: %s\n", e.what());
    return 1;
  }
}
