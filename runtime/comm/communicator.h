// Communicator: the collectives and point-to-point transfers that tensor, pipeline and data
// parallelism need, over one group of ranks. MpiCommunicator moves host memory; NcclCommunicator
// (runtime/cuda) moves device memory. Every call is collective over the group unless it is
// Send/Recv, and every rank must make the same calls in the same order.
#pragma once

#include <memory>
#include <string>

#include "runtime/tensor.h"

namespace gemmapod {

enum class ReduceOp { kSum, kMax, kMin };

// A send or a collective that was started and may not have finished. It keeps the tensor's
// storage alive; Wait() returns once the buffer may be reused (a collective's result is then in
// it). Destroying an unfinished transfer waits for it.
class PendingTransfer {
 public:
  virtual ~PendingTransfer() = default;
  virtual void Wait() = 0;
  // Whether the transfer has completed, without waiting (it also lets the library move the
  // transfer on: MPI progresses nonblocking collectives inside its calls).
  virtual bool Done() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;  // "mpi", "nccl"

  // In place: every rank ends with the element-wise reduction over all ranks.
  virtual void AllReduce(Tensor& tensor, ReduceOp op) = 0;
  // `out` has the leading dimension of `in` times size(); rank r's `in` lands in rows
  // [r * in.dim(0), (r + 1) * in.dim(0)).
  virtual void AllGather(const Tensor& in, Tensor& out) = 0;
  // `in` has size() equal blocks along its leading dimension; rank r receives the reduction of
  // every rank's block r in `out`.
  virtual void ReduceScatter(const Tensor& in, Tensor& out, ReduceOp op) = 0;
  virtual void Broadcast(Tensor& tensor, int root) = 0;
  virtual void Send(const Tensor& tensor, int dst, int tag = 0) = 0;
  virtual void Recv(Tensor& tensor, int src, int tag = 0) = 0;
  // Starts a send and returns at once. Pipeline stages send results backwards this way, so a
  // stage never blocks on a peer that is itself blocked sending forwards to it.
  virtual std::unique_ptr<PendingTransfer> SendAsync(const Tensor& tensor, int dst,
                                                     int tag = 0) = 0;
  // AllReduce started and returned at once (data parallelism sums gradients this way while the
  // backward goes on); `tensor` must not be touched until the transfer is done. Every rank must
  // start the same all-reduces in the same order. The default runs the blocking AllReduce and
  // returns a finished transfer.
  virtual std::unique_ptr<PendingTransfer> AllReduceAsync(Tensor& tensor, ReduceOp op);
  virtual void Barrier() = 0;
  // Whether a message from `src` with `tag` has arrived and waits for a Recv, without waiting.
  // For ranks that poll for work between steps of their own (a server's replica leaders); a
  // backend without it throws naming itself.
  virtual bool Probe(int src, int tag);

  // A new communicator over the ranks that pass the same `color`, ordered by `key` (as
  // MPI_Comm_split). Collective over this communicator.
  virtual std::unique_ptr<Communicator> Split(int color, int key) = 0;
};

const char* ReduceOpName(ReduceOp op);

// Shape checks every backend makes before moving a byte, with one wording for all of them.
void CheckAllGatherShapes(const Tensor& in, const Tensor& out, int group_size);
void CheckReduceScatterShapes(const Tensor& in, const Tensor& out, int group_size);

// Returns once a message from `src` with `tag` waits for a Recv. Polls without pause for a
// millisecond (traffic within a step goes at full speed), then sleeps between polls, 50 us at
// first and up to 500 us: a rank idle between a server's requests leaves its core to the others,
// where MPI's blocking receive would spin at full speed. Backends without Probe return at once.
void WaitForMessage(Communicator& comm, int src, int tag);

}  // namespace gemmapod
