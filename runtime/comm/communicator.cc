#include "runtime/comm/communicator.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "runtime/error.h"

namespace gemmapod {

const char* ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kMax:
      return "max";
    case ReduceOp::kMin:
      return "min";
  }
  return "?";
}

void CheckAllGatherShapes(const Tensor& in, const Tensor& out, int group_size) {
  GEMMAPOD_CHECK(in.dtype() == out.dtype() && out.numel() == in.numel() * group_size,
                 "AllGather: ", in.Describe(), " from each of ", group_size,
                 " ranks does not fill ", out.Describe());
}

void CheckReduceScatterShapes(const Tensor& in, const Tensor& out, int group_size) {
  GEMMAPOD_CHECK(in.dtype() == out.dtype() && in.numel() == out.numel() * group_size,
                 "ReduceScatter: ", in.Describe(), " is not ", group_size, " blocks of ",
                 out.Describe());
}

namespace {

// A transfer that finished before it was returned.
class FinishedTransfer final : public PendingTransfer {
 public:
  void Wait() override {}
  bool Done() override { return true; }
};

}  // namespace

std::unique_ptr<PendingTransfer> Communicator::AllReduceAsync(Tensor& tensor, ReduceOp op) {
  AllReduce(tensor, op);
  return std::make_unique<FinishedTransfer>();
}

bool Communicator::Probe(int, int) {
  throw Error(StrCat("Probe: the ", backend(), " communicator cannot poll for messages"));
}

void WaitForMessage(Communicator& comm, int src, int tag) {
  using Clock = std::chrono::steady_clock;
  if (comm.backend() != "mpi") return;  // the only backend that can poll
  const Clock::time_point spin_until = Clock::now() + std::chrono::milliseconds(1);
  auto pause = std::chrono::microseconds(50);
  while (!comm.Probe(src, tag)) {
    if (Clock::now() < spin_until) continue;
    std::this_thread::sleep_for(pause);
    pause = std::min(2 * pause, std::chrono::microseconds(500));
  }
}

}  // namespace gemmapod
