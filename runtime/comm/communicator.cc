#include "runtime/comm/communicator.h"

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

bool Communicator::Probe(int, int) {
  throw Error(StrCat("Probe: the ", backend(), " communicator cannot poll for messages"));
}

}  // namespace gemmapod
