// The NCCL communicator's collectives on device memory against the serial computation, one GPU
// per rank. Skips on every rank when the machine has fewer GPUs than ranks (NCCL cannot put two
// ranks of one communicator on the same GPU).
#include "runtime/cuda/nccl_communicator.h"

#include <gtest/gtest.h>

#include "runtime/comm/mpi_communicator.h"
#include "runtime/cuda/cuda_backend.h"

namespace gemmapod {
namespace {

float InputOf(int rank, int64_t i) { return static_cast<float>(((rank * 7 + i * 3) % 23) - 11); }

Tensor HostInput(int rank, int64_t n, DType dtype) {
  Tensor t = Tensor::Empty({n}, DType::kF32);
  for (int64_t i = 0; i < n; ++i) t.data<float>()[i] = InputOf(rank, i);
  return t.To(dtype);
}

class NcclTest : public testing::Test {
 protected:
  void SetUp() override {
    world_ = MpiCommunicator::World();
    if (cuda::DeviceCount() < world_->size()) {
      GTEST_SKIP() << "needs " << world_->size() << " GPUs, found " << cuda::DeviceCount();
    }
    cuda::RegisterCudaBackend();
    nccl_ = NcclCommunicator::Create(*world_, world_->rank());
  }
  std::unique_ptr<MpiCommunicator> world_;
  std::unique_ptr<NcclCommunicator> nccl_;
};

TEST_F(NcclTest, AllReduceSumAndMax) {
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
      Tensor t = cuda::ToDevice(HostInput(nccl_->rank(), 300, dtype), nccl_->device());
      nccl_->AllReduce(t, op);
      const Tensor got = cuda::ToHost(t).To(DType::kF32);
      for (int64_t i = 0; i < 300; ++i) {
        double want = InputOf(0, i);
        for (int r = 1; r < nccl_->size(); ++r) {
          want =
              op == ReduceOp::kSum ? want + InputOf(r, i) : std::max<double>(want, InputOf(r, i));
        }
        ASSERT_EQ(got.data<float>()[i], want) << DTypeName(dtype) << " " << ReduceOpName(op);
      }
    }
  }
}

TEST_F(NcclTest, AllGatherReduceScatterBroadcast) {
  const int size = nccl_->size(), rank = nccl_->rank(), dev = nccl_->device();
  Tensor in = cuda::ToDevice(HostInput(rank, 10, DType::kF32), dev);
  Tensor all = Tensor::Empty({10 * size}, DType::kF32, Device::Cuda(dev));
  nccl_->AllGather(in, all);
  const Tensor gathered = cuda::ToHost(all);
  for (int r = 0; r < size; ++r) {
    for (int64_t i = 0; i < 10; ++i) ASSERT_EQ(gathered.data<float>()[r * 10 + i], InputOf(r, i));
  }
  Tensor big = cuda::ToDevice(HostInput(rank, 10 * size, DType::kF32), dev);
  Tensor mine = Tensor::Empty({10}, DType::kF32, Device::Cuda(dev));
  nccl_->ReduceScatter(big, mine, ReduceOp::kSum);
  const Tensor scattered = cuda::ToHost(mine);
  for (int64_t i = 0; i < 10; ++i) {
    double want = 0;
    for (int r = 0; r < size; ++r) want += InputOf(r, rank * 10 + i);
    ASSERT_EQ(scattered.data<float>()[i], want);
  }
  Tensor b = cuda::ToDevice(HostInput(rank, 10, DType::kF32), dev);
  nccl_->Broadcast(b, size - 1);
  const Tensor broadcast = cuda::ToHost(b);
  for (int64_t i = 0; i < 10; ++i) ASSERT_EQ(broadcast.data<float>()[i], InputOf(size - 1, i));
  nccl_->Barrier();
}

TEST_F(NcclTest, SplitMakesWorkingSubgroups) {
  // Even and odd ranks (one group on a single rank); the subgroup reduces over its members only.
  const int rank = nccl_->rank(), size = nccl_->size();
  auto sub = nccl_->Split(rank % 2, rank);
  const int members = (size + 1 - rank % 2) / 2;
  ASSERT_EQ(sub->size(), members);
  EXPECT_EQ(sub->rank(), rank / 2);
  EXPECT_EQ(sub->backend(), "nccl");
  Tensor t = cuda::ToDevice(HostInput(rank, 50, DType::kF32), nccl_->device());
  sub->AllReduce(t, ReduceOp::kSum);
  const Tensor got = cuda::ToHost(t);
  for (int64_t i = 0; i < 50; ++i) {
    double want = 0;
    for (int r = rank % 2; r < size; r += 2) want += InputOf(r, i);
    ASSERT_EQ(got.data<float>()[i], want);
  }
  sub->Barrier();
}

TEST_F(NcclTest, HostTensorsAreRejected) {
  Tensor host = Tensor::Zeros({4}, DType::kF32);
  EXPECT_THROW(nccl_->AllReduce(host, ReduceOp::kSum), Error);
}

}  // namespace
}  // namespace gemmapod
