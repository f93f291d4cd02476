// Every collective of the MPI communicator against the same computation done serially: each
// rank can compute every other rank's input (a function of rank and index), so it knows the
// exact expected result without communicating.
#include "runtime/comm/mpi_communicator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

namespace gemmapod {
namespace {

// Rank r's input element i: distinct per rank and index, exactly representable in bf16.
float InputOf(int rank, int64_t i) {
  return static_cast<float>(((rank * 7 + i * 3) % 23) - 11) * 0.5f;
}

Tensor MakeInput(int rank, int64_t n, DType dtype) {
  Tensor t = Tensor::Empty({n}, dtype);
  for (int64_t i = 0; i < n; ++i) {
    const float v = InputOf(rank, i);
    switch (dtype) {
      case DType::kF32:
        t.data<float>()[i] = v;
        break;
      case DType::kBF16:
        t.data<BF16>()[i] = FloatToBF16(v);
        break;
      case DType::kI32:
        t.data<int32_t>()[i] = static_cast<int32_t>(2 * v);
        break;
      case DType::kI8:
        t.data<int8_t>()[i] = static_cast<int8_t>(2 * v);
        break;
    }
  }
  return t;
}

double ValueAt(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kF32:
      return t.data<float>()[i];
    case DType::kBF16:
      return BF16ToFloat(t.data<BF16>()[i]);
    case DType::kI32:
      return t.data<int32_t>()[i];
    case DType::kI8:
      return t.data<int8_t>()[i];
  }
  return 0;
}

double Expected(ReduceOp op, int size, int64_t i, DType dtype) {
  const double scale = (dtype == DType::kI32 || dtype == DType::kI8) ? 2 : 1;
  double acc = scale * InputOf(0, i);
  for (int r = 1; r < size; ++r) {
    const double v = scale * InputOf(r, i);
    acc = op == ReduceOp::kSum   ? acc + v
          : op == ReduceOp::kMax ? std::max(acc, v)
                                 : std::min(acc, v);
  }
  return acc;
}

class MpiCommunicatorTest : public testing::TestWithParam<DType> {
 protected:
  std::unique_ptr<MpiCommunicator> world_ = MpiCommunicator::World();
};

TEST_P(MpiCommunicatorTest, AllReduceMatchesSerialReduction) {
  const int64_t n = 1000;
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kMin}) {
    Tensor t = MakeInput(world_->rank(), n, GetParam());
    world_->AllReduce(t, op);
    for (int64_t i = 0; i < n; ++i) {
      // Inputs are halves in [-5.5, 5.5]; sums over 4 ranks stay exact even in bf16.
      ASSERT_EQ(ValueAt(t, i), Expected(op, world_->size(), i, GetParam()))
          << ReduceOpName(op) << " element " << i;
    }
  }
}

TEST_P(MpiCommunicatorTest, AllGatherPlacesRankBlocksInOrder) {
  const int64_t n = 37;
  Tensor in = MakeInput(world_->rank(), n, GetParam());
  Tensor out = Tensor::Empty({n * world_->size()}, GetParam());
  world_->AllGather(in, out);
  for (int r = 0; r < world_->size(); ++r) {
    Tensor expect = MakeInput(r, n, GetParam());
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(ValueAt(out, r * n + i), ValueAt(expect, i));
  }
}

TEST_P(MpiCommunicatorTest, ReduceScatterGivesEachRankItsReducedBlock) {
  const int64_t block = 29;
  const int size = world_->size();
  Tensor in = MakeInput(world_->rank(), block * size, GetParam());
  Tensor out = Tensor::Empty({block}, GetParam());
  world_->ReduceScatter(in, out, ReduceOp::kSum);
  for (int64_t i = 0; i < block; ++i) {
    ASSERT_EQ(ValueAt(out, i),
              Expected(ReduceOp::kSum, size, world_->rank() * block + i, GetParam()));
  }
}

TEST_P(MpiCommunicatorTest, BroadcastFromEveryRoot) {
  for (int root = 0; root < world_->size(); ++root) {
    Tensor t = MakeInput(world_->rank(), 64, GetParam());
    world_->Broadcast(t, root);
    Tensor expect = MakeInput(root, 64, GetParam());
    for (int64_t i = 0; i < 64; ++i) ASSERT_EQ(ValueAt(t, i), ValueAt(expect, i)) << root;
  }
}

TEST_P(MpiCommunicatorTest, SendRecvAroundARing) {
  const int size = world_->size();
  if (size < 2) GTEST_SKIP() << "needs two ranks";
  const int next = (world_->rank() + 1) % size, prev = (world_->rank() + size - 1) % size;
  Tensor out = MakeInput(world_->rank(), 100, GetParam());
  Tensor in = Tensor::Empty({100}, GetParam());
  // Even ranks send first, odd ranks receive first: no deadlock with blocking calls.
  if (world_->rank() % 2 == 0) {
    world_->Send(out, next, 5);
    world_->Recv(in, prev, 5);
  } else {
    world_->Recv(in, prev, 5);
    world_->Send(out, next, 5);
  }
  Tensor expect = MakeInput(prev, 100, GetParam());
  for (int64_t i = 0; i < 100; ++i) ASSERT_EQ(ValueAt(in, i), ValueAt(expect, i));
}

TEST_P(MpiCommunicatorTest, SendAsyncAroundARingDoesNotBlock) {
  const int size = world_->size();
  if (size < 2) GTEST_SKIP() << "needs two ranks";
  const int next = (world_->rank() + 1) % size, prev = (world_->rank() + size - 1) % size;
  // Every rank sends first: with blocking sends of a large buffer this ring would deadlock.
  const int64_t n = 3 << 20;  // past the eager limit and over several 1 Mi-element pieces
  Tensor out = MakeInput(world_->rank(), n, GetParam());
  std::unique_ptr<PendingTransfer> pending = world_->SendAsync(out, next, 6);
  out = Tensor();  // the pending send keeps the buffer alive
  Tensor in = Tensor::Empty({n}, GetParam());
  world_->Recv(in, prev, 6);
  pending->Wait();
  Tensor expect = MakeInput(prev, n, GetParam());
  for (int64_t i = 0; i < n; i += 4099) ASSERT_EQ(ValueAt(in, i), ValueAt(expect, i)) << i;
  ASSERT_EQ(ValueAt(in, n - 1), ValueAt(expect, n - 1));
}

TEST_P(MpiCommunicatorTest, AllReduceAsyncGivesAllReducesResultWhileOthersRun) {
  // Two started before either is awaited, one over several 1 Mi-element pieces.
  const int64_t small = 1000, large = 3 << 20;
  Tensor a = MakeInput(world_->rank(), small, GetParam());
  Tensor b = MakeInput(world_->rank(), large, GetParam());
  std::unique_ptr<PendingTransfer> first = world_->AllReduceAsync(a, ReduceOp::kSum);
  std::unique_ptr<PendingTransfer> second = world_->AllReduceAsync(b, ReduceOp::kSum);
  second->Wait();
  first->Wait();
  EXPECT_TRUE(first->Done());
  for (int64_t i = 0; i < small; ++i) {
    ASSERT_EQ(ValueAt(a, i), Expected(ReduceOp::kSum, world_->size(), i, GetParam())) << i;
  }
  Tensor blocking = MakeInput(world_->rank(), large, GetParam());
  world_->AllReduce(blocking, ReduceOp::kSum);
  for (int64_t i = 0; i < large; i += 4099) ASSERT_EQ(ValueAt(b, i), ValueAt(blocking, i)) << i;
}

INSTANTIATE_TEST_SUITE_P(AllDTypes, MpiCommunicatorTest,
                         testing::Values(DType::kF32, DType::kBF16, DType::kI32, DType::kI8),
                         [](const testing::TestParamInfo<DType>& info) {
                           return std::string(DTypeName(info.param));
                         });

TEST(MpiCommunicator, BF16SumIsTheRoundingOfTheF32Sum) {
  // Each rank holds 1 + (r+1)/128 in bf16; the exact sum needs more bits than bf16 has, so a
  // reduction that rounded at every combine would drift. The result must be exactly the bf16
  // rounding of the f32 sum (the f32 sum of these few values is exact).
  auto world = MpiCommunicator::World();
  auto value = [](int r) { return BF16ToFloat(FloatToBF16(1.0f + 0x1p-7f * (r + 1))); };
  Tensor t = Tensor::Empty({3}, DType::kBF16);
  for (int i = 0; i < 3; ++i) t.data<BF16>()[i] = FloatToBF16(value(world->rank()) * (i + 1));
  world->AllReduce(t, ReduceOp::kSum);
  for (int i = 0; i < 3; ++i) {
    float exact = 0;
    for (int r = 0; r < world->size(); ++r) exact += value(r) * (i + 1);
    EXPECT_EQ(t.data<BF16>()[i].bits, FloatToBF16(exact).bits) << "element " << i;
  }
  // The same holds for the reduce-scatter of the same values.
  Tensor in = Tensor::Empty({world->size()}, DType::kBF16);
  for (int b = 0; b < world->size(); ++b) in.data<BF16>()[b] = FloatToBF16(value(world->rank()));
  Tensor out = Tensor::Empty({1}, DType::kBF16);
  world->ReduceScatter(in, out, ReduceOp::kSum);
  float exact = 0;
  for (int r = 0; r < world->size(); ++r) exact += value(r);
  EXPECT_EQ(out.data<BF16>()[0].bits, FloatToBF16(exact).bits);
}

TEST(MpiCommunicator, SplitMakesIndependentGroups) {
  auto world = MpiCommunicator::World();
  const int color = world->rank() % 2;
  auto half = world->Split(color, world->rank());
  EXPECT_EQ(half->size(), (world->size() + 1 - color) / 2);
  EXPECT_EQ(half->rank(), world->rank() / 2);
  Tensor t = Tensor::FromVector({1}, {static_cast<float>(world->rank())});
  half->AllReduce(t, ReduceOp::kSum);
  double expect = 0;
  for (int r = color; r < world->size(); r += 2) expect += r;
  EXPECT_EQ(t.data<float>()[0], expect);
}

TEST(MpiCommunicator, MismatchedShapesAreErrorsBeforeAnyTransfer) {
  auto world = MpiCommunicator::World();
  Tensor in = Tensor::Zeros({4}, DType::kF32);
  Tensor wrong = Tensor::Zeros({4 * world->size() + 1}, DType::kF32);
  EXPECT_THROW(world->AllGather(in, wrong), Error);
  Tensor wrong_type = Tensor::Zeros({4 * world->size()}, DType::kI32);
  EXPECT_THROW(world->AllGather(in, wrong_type), Error);
  Tensor small = Tensor::Zeros({3}, DType::kF32);
  EXPECT_THROW(world->ReduceScatter(in, small, ReduceOp::kSum), Error);
  EXPECT_THROW(world->Broadcast(in, world->size()), Error);
  EXPECT_THROW(world->Send(in, world->rank()), Error);
}

}  // namespace
}  // namespace gemmapod
