// Communicator benchmark, run under mpirun: latency and bandwidth of the collectives tensor and
// pipeline parallelism use, over the MPI communicator (host memory). Prints a markdown table on
// rank 0 (docs/performance.md). Bus bandwidth follows the NCCL-tests convention, so figures for
// different rank counts compare: all-reduce moves 2(p-1)/p of the buffer per rank, all-gather
// and reduce-scatter (p-1)/p, send/recv the buffer once.
//
//   mpirun -np 2 build/bench/comm_bench [--reps N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "runtime/comm/mpi_communicator.h"

namespace gemmapod {
namespace {

// Best time over `reps` runs after a warm-up; every rank times, the slowest rank's time counts.
template <typename Fn>
double BestSeconds(Communicator& world, int reps, Fn fn) {
  fn();
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    world.Barrier();
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    Tensor t = Tensor::FromVector(
        {1}, {static_cast<float>(
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count())});
    world.AllReduce(t, ReduceOp::kMax);
    best = std::min(best, double{t.data<float>()[0]});
  }
  return best;
}

std::string Size(int64_t bytes) {
  char buf[32];
  if (bytes >= (1 << 20)) {
    std::snprintf(buf, sizeof buf, "%lld MiB", static_cast<long long>(bytes >> 20));
  } else {
    std::snprintf(buf, sizeof buf, "%lld KiB", static_cast<long long>(bytes >> 10));
  }
  return buf;
}

int Main(int argc, char** argv) {
  int reps = 20;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = std::atoi(argv[++i]);
  }
  auto world = MpiCommunicator::World();
  const int p = world->size();
  if (p < 2) {
    std::fprintf(stderr, "comm_bench: run it under mpirun with at least 2 ranks\n");
    return 1;
  }
  if (world->rank() == 0) {
    std::printf("%d ranks, best of %d\n\n", p, reps);
    std::printf("| operation | dtype | size per rank | time | bus bandwidth |\n");
    std::printf("|---|---|---|---|---|\n");
  }
  auto row = [&](const char* op, DType dtype, int64_t bytes, double seconds, double factor) {
    if (world->rank() != 0) return;
    std::printf("| %s | %s | %s | %.1f us | %.2f GB/s |\n", op,
                std::string(DTypeName(dtype)).c_str(), Size(bytes).c_str(), seconds * 1e6,
                factor * bytes / seconds / 1e9);
  };
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (int64_t bytes : {int64_t{4} << 10, int64_t{64} << 10, int64_t{1} << 20, int64_t{16} << 20,
                          int64_t{64} << 20}) {
      const int64_t n = bytes / static_cast<int64_t>(DTypeSize(dtype));
      Tensor buf = Tensor::Zeros({n}, dtype);
      row("all-reduce (sum)", dtype, bytes,
          BestSeconds(*world, reps, [&] { world->AllReduce(buf, ReduceOp::kSum); }),
          2.0 * (p - 1) / p);
    }
  }
  for (int64_t bytes : {int64_t{64} << 10, int64_t{16} << 20}) {
    const int64_t n = bytes / 4;
    Tensor in = Tensor::Zeros({n / p}, DType::kF32);
    Tensor all = Tensor::Zeros({n / p * p}, DType::kF32);
    row("all-gather", DType::kF32, bytes,
        BestSeconds(*world, reps, [&] { world->AllGather(in, all); }), double(p - 1) / p);
    row("reduce-scatter", DType::kF32, bytes,
        BestSeconds(*world, reps, [&] { world->ReduceScatter(all, in, ReduceOp::kSum); }),
        double(p - 1) / p);
  }
  for (int64_t bytes : {int64_t{4} << 10, int64_t{16} << 20}) {
    Tensor buf = Tensor::Zeros({bytes / 4}, DType::kF32);
    // Rank 0 sends to rank 1 (a pipeline hand-off); the others idle.
    row("send/recv 0 -> 1", DType::kF32, bytes,
        BestSeconds(*world, reps,
                    [&] {
                      if (world->rank() == 0) world->Send(buf, 1);
                      if (world->rank() == 1) world->Recv(buf, 0);
                    }),
        1.0);
  }
  return 0;
}

}  // namespace
}  // namespace gemmapod

int main(int argc, char** argv) {
  gemmapod::MpiSession session(&argc, &argv);
  return gemmapod::Main(argc, argv);
}
