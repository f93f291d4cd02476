// Checkpoint tensors under tensor parallelism: a training checkpoint holds whole logical tensors
// whatever the layout, so the rank that writes gathers each tensor from its group's parts while
// the others send theirs, and a resume cuts each rank's part out of the whole tensor. Which part
// a rank holds is a ParameterSlice (models/gemma/gemma_shard.h): whole (replicated), or
// [begin, end) along rows or columns, vocabulary rows padded with zeros past `end`.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "models/gemma/gemma_shard.h"
#include "runtime/tensor.h"

namespace gemmapod {

class AdamW;
class Communicator;

// Rank 0 of `tp`: the whole tensor of `shape` from its own part `mine` and every other rank's
// (slices[r]: rank r's part). Replicated parts are taken from rank 0 and not sent.
Tensor GatherWhole(Communicator& tp, const Tensor& mine, const Shape& shape,
                   const std::vector<ParameterSlice>& slices);
// The other ranks of `tp`: their part, unless it is replicated.
void SendPart(Communicator& tp, const Tensor& mine, const ParameterSlice& slice);
// This rank's part of a whole tensor (padding rows zero).
Tensor CutPart(const Tensor& whole, const ParameterSlice& slice);

// Every parameter's whole shape and every rank's slice of it, for a model split over a
// tensor-parallel group: what a family's TrainableModel needs to gather whole checkpoint tensors
// on rank 0, cut a rank's part out of them, and count replicated parameters once in the norm.
class TensorParallelParameters {
 public:
  // Calls fn(name, whole shape, slice) for every parameter of tensor-parallel rank `rank`'s
  // shard, in checkpoint order (the same names for every rank).
  using Visit = std::function<void(
      int rank,
      const std::function<void(const std::string&, const Shape&, const ParameterSlice&)>&)>;
  TensorParallelParameters() = default;
  TensorParallelParameters(Communicator* tp, const Visit& visit);

  bool active() const { return tp_ != nullptr; }
  Communicator& group() const { return *tp_; }
  // Rank 0: the whole tensor from its part and the other ranks'; they call Send meanwhile.
  Tensor Whole(const std::string& name, const Tensor& mine) const;
  void Send(const std::string& name, const Tensor& mine) const;
  // This rank's part of a whole tensor.
  Tensor PartOf(const std::string& name, const Tensor& whole) const;
  bool Replicated(const std::string& name) const;
  // Leaves every replicated parameter out of the norm on the ranks other than 0.
  void CountReplicatedOnce(AdamW& optimizer) const;

 private:
  size_t Index(const std::string& name) const;

  Communicator* tp_ = nullptr;
  std::vector<std::string> names_;
  std::vector<Shape> shapes_;
  std::vector<std::vector<ParameterSlice>> slices_;  // [parameter][rank]
  std::map<std::string, size_t> index_;
};

}  // namespace gemmapod
