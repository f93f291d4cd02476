// Data parallelism for the trainer: the ranks of the job are replicas of the whole model, each
// runs its own share of a step's micro-batches, and the summed gradients make every replica take
// the same AdamW step. Gradients are summed over the replicas in buckets (large tensors alone, in
// place; small ones packed together, so a norm costs no collective of its own). Scalars (loss
// sums, target and exact-match counts) are gathered and added in rank order, so every replica
// computes the same bits. One rank (no communicator) is the same code with nothing to sum.
#pragma once

#include <cstdint>
#include <vector>

#include "training/gemma_lm.h"

namespace gemmapod {

class AdamW;
class Communicator;

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
  // Returns when every replica has called it.
  void Wait() const;
  // Each replica's value, added in rank order (the same result on every replica).
  LossSum Sum(const LossSum& mine) const;
  int64_t Sum(int64_t mine) const;
  // Throws naming the replicas whose weights differ from rank 0's (a CRC-32 of every registered
  // weight, gathered): replicas that drifted apart would train different models silently.
  void CheckReplicasAgree(const AdamW& optimizer) const;

  static constexpr int64_t kDefaultBucketBytes = int64_t{32} << 20;

 private:
  // Every replica's `words` int32 values, rank after rank.
  std::vector<int32_t> Gather(const std::vector<int32_t>& words) const;

  Communicator* world_;
  int rank_ = 0, size_ = 1;
};

}  // namespace gemmapod
