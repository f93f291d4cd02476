// Communicator over NCCL for tensors in CUDA device memory. Ranks agree on the NCCL unique id
// through an MPI communicator over the same ranks (FasterTransformer's scheme). Each call is
// enqueued on the communicator's stream and waited for before returning, so a tensor is ready
// to use when the call returns.
#pragma once

#include <memory>

#include "runtime/comm/communicator.h"

namespace gemmapod {

class MpiCommunicator;

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `bootstrap`: every rank passes the CUDA device it drives.
  static std::unique_ptr<NcclCommunicator> Create(MpiCommunicator& bootstrap, int device);
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }
  int device() const { return device_; }

  void AllReduce(Tensor& tensor, ReduceOp op) override;
  void AllGather(const Tensor& in, Tensor& out) override;
  void ReduceScatter(const Tensor& in, Tensor& out, ReduceOp op) override;
  void Broadcast(Tensor& tensor, int root) override;
  void Send(const Tensor& tensor, int dst, int tag = 0) override;
  void Recv(Tensor& tensor, int src, int tag = 0) override;
  std::unique_ptr<PendingTransfer> SendAsync(const Tensor& tensor, int dst, int tag = 0) override;
  void Barrier() override;
  std::unique_ptr<Communicator> Split(int color, int key) override;

 private:
  struct Handles;  // ncclComm_t and cudaStream_t, kept out of this header
  NcclCommunicator(std::unique_ptr<Handles> handles, int device);

  std::unique_ptr<Handles> handles_;
  int device_ = 0;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace gemmapod
