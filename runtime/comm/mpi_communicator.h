// Communicator over MPI for host (CPU) tensors. f32, i32 and i8 reduce with MPI's own types;
// bf16 (which MPI lacks) is widened to f32, reduced, and rounded to nearest even once, so a bf16
// all-reduce is the bf16 rounding of the f32 reduction, whatever the rank count.
#pragma once

#include <mpi.h>

#include <vector>

#include "runtime/comm/communicator.h"

namespace gemmapod {

// Starts MPI (threads funnelled to the main thread) and finalises it on destruction. Works with
// and without mpirun: a process started alone becomes a one-rank world.
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  int world_rank() const;
  int world_size() const;
  // Ends every rank of the job with `code` (used when one rank fails, so no rank hangs).
  [[noreturn]] static void Abort(int code);
};

class MpiCommunicator final : public Communicator {
 public:
  // Wraps MPI_COMM_WORLD (not owned).
  static std::unique_ptr<MpiCommunicator> World();
  // Takes ownership of `comm` (freed in the destructor) unless it is MPI_COMM_WORLD.
  explicit MpiCommunicator(MPI_Comm comm);
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }

  void AllReduce(Tensor& tensor, ReduceOp op) override;
  void AllGather(const Tensor& in, Tensor& out) override;
  void ReduceScatter(const Tensor& in, Tensor& out, ReduceOp op) override;
  void Broadcast(Tensor& tensor, int root) override;
  void Send(const Tensor& tensor, int dst, int tag = 0) override;
  void Recv(Tensor& tensor, int src, int tag = 0) override;
  bool Probe(int src, int tag) override;
  std::unique_ptr<PendingTransfer> SendAsync(const Tensor& tensor, int dst, int tag = 0) override;
  // MPI_Iallreduce in chunks (f32 and wider: bf16 takes the blocking path, which rounds once).
  std::unique_ptr<PendingTransfer> AllReduceAsync(Tensor& tensor, ReduceOp op) override;
  void Barrier() override;
  std::unique_ptr<Communicator> Split(int color, int key) override;

  MPI_Comm comm() const { return comm_; }
  // The world rank of this group's rank `rank` (-1 outside the group).
  int WorldRank(int rank) const;

 private:
  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
  std::vector<int> world_ranks_;
};

}  // namespace gemmapod
