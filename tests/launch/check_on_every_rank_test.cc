// CheckOnEveryRank (under mpiexec): when the check fails on any rank, every rank learns it and
// throws JobFailed, so none goes on to wait for a peer that gave up; when it passes everywhere,
// nothing is thrown.
#include <gtest/gtest.h>

#include "launch/rank_runner.h"
#include "runtime/comm/mpi_communicator.h"
#include "runtime/error.h"

namespace gemmapod {
namespace {

TEST(CheckOnEveryRank, PassesWhenEveryRankPasses) {
  auto world = MpiCommunicator::World();
  int calls = 0;
  EXPECT_NO_THROW(CheckOnEveryRank(*world, [&] { ++calls; }));
  EXPECT_EQ(calls, 1);
}

TEST(CheckOnEveryRank, OneFailingRankStopsEveryRank) {
  auto world = MpiCommunicator::World();
  const int last = world->size() - 1;
  EXPECT_THROW(CheckOnEveryRank(*world,
                                [&] {
                                  if (world->rank() == last) throw Error("only the last rank");
                                }),
               JobFailed);
  // The ranks are still in step: a collective after the failure completes on all of them.
  Tensor one = Tensor::Empty({1}, DType::kI32);
  one.data<int32_t>()[0] = 1;
  world->AllReduce(one, ReduceOp::kSum);
  EXPECT_EQ(one.data<int32_t>()[0], world->size());
}

TEST(CheckOnEveryRank, AFailureOnEveryRankStopsEveryRank) {
  auto world = MpiCommunicator::World();
  EXPECT_THROW(CheckOnEveryRank(*world, [] { throw Error("everywhere"); }), JobFailed);
}

}  // namespace
}  // namespace gemmapod
