// Data parallelism for the trainer: the ranks of the job are replicas of the whole model, each
// runs its own share of a step's micro-batches, and the summed gradients make every replica take
// the same AdamW step. Gradients are summed over the replicas in buckets (large tensors alone, in
// place; small ones packed together, so a norm costs no collective of its own). Scalars (loss
// sums, target and exact-match counts) are gathered and added in rank order, so every replica
// computes the same bits. One rank (no communicator) is the same code with nothing to sum.
//
// ZeRO-1 (Shard): the parameters laid end to end are cut into size() contiguous ranges, and each
// replica keeps the optimizer state (masters, moments) of its range only. A step then
// reduce-scatters the gradients (each replica receives the sum of its range), finds the global
// norm from the replicas' sums of squares, updates its range, and all-gathers the updated values
// into every replica's weights: the traffic of one all-reduce, the optimizer's memory divided by
// size(). Checkpoints stay whole files: rank 0 receives each parameter's state from the replicas
// that hold it while it writes.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "runtime/comm/communicator.h"
#include "training/adamw.h"
#include "training/gemma_lm.h"

namespace gemmapod {

// The gradients of `optimizer` cut into the buckets data parallelism sums, in the order a backward
// finishes them (last registered first): a tensor of at least `bucket_bytes` alone, smaller ones
// packed together up to that size.
std::vector<std::vector<Tensor*>> GradientBuckets(AdamW& optimizer, int64_t bucket_bytes);

class DataParallel {
 public:
  // world: the replicas (null: one rank). The communicator must outlive this.
  explicit DataParallel(Communicator* world);

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool leader() const { return rank_ == 0; }

  // This replica's share [begin, end) of `count` items split into size() contiguous parts
  // (the first count % size() parts one longer).
  std::pair<int64_t, int64_t> Share(int64_t count) const;

  // Sums every gradient registered with the optimizer over the replicas.
  void SumGradients(AdamW& optimizer, int64_t bucket_bytes = kDefaultBucketBytes) const;

  // ZeRO-1: gives this replica the state of its range only (after the parameters are
  // registered, before a resume restores them).
  void Shard(AdamW& optimizer);
  bool sharded() const { return sharded_; }
  // A step on sharded state: ReduceScatterGradients (each replica receives the sum of its range),
  // the optimizer's step on that range (with the norm from every replica's share: Sum), then
  // AllGatherUpdates (every replica's updated values into every replica's weights).
  void ReduceScatterGradients(AdamW& optimizer, int64_t bucket_bytes = kDefaultBucketBytes) const;
  void AllGatherUpdates(AdamW& optimizer, int64_t bucket_bytes = kDefaultBucketBytes) const;
  // Saving sharded state: rank 0 calls GatherState for each parameter in the optimizer's order
  // while the other replicas are in SendState, which answers those calls.
  Tensor GatherState(const AdamW& optimizer, const std::string& name, AdamWPart part) const;
  void SendState(const AdamW& optimizer) const;
  // Each replica's value, added in rank order (the same result on every replica).
  LossSum Sum(const LossSum& mine) const;
  int64_t Sum(int64_t mine) const;
  double Sum(double mine) const;
  std::vector<double> Sum(const std::vector<double>& mine) const;  // element by element
  double Max(double mine) const;
  // Throws naming the replicas whose weights differ from rank 0's (a CRC-32 of every registered
  // weight, gathered): replicas that drifted apart would train different models silently.
  void CheckReplicasAgree(const AdamW& optimizer) const;

  static constexpr int64_t kDefaultBucketBytes = int64_t{32} << 20;

 private:
  // Every replica's `words` int32 values, rank after rank.
  std::vector<int32_t> Gather(const std::vector<int32_t>& words) const;
  // Every replica's 8-byte value, added in rank order.
  template <typename T>
  T SumOf(T mine) const;

  // Replica r's range of the parameters laid end to end, of `total` elements, and its piece in
  // round `round` of `chunk` elements.
  std::pair<int64_t, int64_t> RangeOf(int r, int64_t total) const;
  std::pair<int64_t, int64_t> Piece(int r, int64_t round, int64_t chunk, int64_t total) const;

  Communicator* world_;
  int rank_ = 0, size_ = 1;
  bool sharded_ = false;
};

// Data parallelism's gradient sum overlapped with the backward: the buckets of SumGradients, each
// started as an asynchronous all-reduce as soon as the backward has finished every gradient in it
// (the model reports each layer as its backward ends, by its checkpoint prefix), in bucket order
// so that every replica starts the same collectives in the same order; Finish starts the rest
// (the embedding, the final norm) and waits for all. The sums are SumGradients's.
class OverlappedGradientSum {
 public:
  OverlappedGradientSum(Communicator* world, AdamW& optimizer,
                        int64_t bucket_bytes = DataParallel::kDefaultBucketBytes);
  ~OverlappedGradientSum();
  // The backward has finished the gradients of the layer whose parameters are named
  // `prefix`... ("model.layers.3.") for this step.
  void LayerDone(const std::string& prefix);
  // After the step's last backward: every gradient summed over the replicas.
  void Finish();
  // Buckets started this step.
  size_t started() const { return next_; }

 private:
  struct Bucket {
    std::vector<Tensor*> grads;
    size_t done = 0;  // of grads, finished this step
    Tensor packed;    // what is being summed (grads[0] itself when alone)
    std::unique_ptr<PendingTransfer> transfer;
  };
  void Start(Bucket& bucket);

  Communicator* world_;
  std::vector<Bucket> buckets_;
  std::map<std::string, std::vector<size_t>> layer_tensors_;  // prefix -> a bucket per tensor
  std::set<std::string> layers_done_;                         // this step's
  size_t next_ = 0;                                           // the next bucket to start
};

}  // namespace gemmapod
