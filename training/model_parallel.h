// Checkpoint tensors under model parallelism: a training checkpoint holds whole logical tensors
// whatever the layout, so the rank that writes gathers each tensor from the parts the replica's
// other ranks hold while they send theirs, and a resume cuts each rank's part out of the whole
// tensor. Which part a rank holds is a ParameterSlice (models/gemma/gemma_shard.h): whole
// (replicated over its tensor-parallel group), or [begin, end) along rows or columns, vocabulary
// rows padded with zeros past `end`; a pipeline stage holds only its layers' parameters, and the
// first and last stages both hold the tied embedding.
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

// Rank 0 of `group`: the whole tensor of `shape` and `dtype` from the parts of the `sources`
// ranks (slices[i]: source i's part; a source that is rank 0 is `mine`, the others are received).
// A replicated parameter has one source.
Tensor GatherWhole(Communicator& group, const Tensor& mine, const Shape& shape, DType dtype,
                   const std::vector<int>& sources, const std::vector<ParameterSlice>& slices);
// This rank's part of a whole tensor (padding rows zero).
Tensor CutPart(const Tensor& whole, const ParameterSlice& slice);

// Every parameter's whole shape and which ranks of a replica's model group hold which slice of
// it: what a family's TrainableModel needs to gather whole checkpoint tensors on rank 0, cut a
// rank's part out of them, and count each element once in the gradient norm. Of the ranks
// holding the same slice (a replicated norm, a key/value head shared by several ranks, the tied
// embedding on the last stage) the lowest is the slice's source; the others' copies are equal
// after the step's gradient sums, and stay out of the norm.
class ModelParallelParameters {
 public:
  // Calls fn(name, whole shape, slice) for every parameter of model-group rank `rank`'s part, in
  // checkpoint order.
  using Visit = std::function<void(
      int rank,
      const std::function<void(const std::string&, const Shape&, const ParameterSlice&)>&)>;
  ModelParallelParameters() = default;
  ModelParallelParameters(Communicator* group, const Visit& visit);

  bool active() const { return group_ != nullptr; }
  Communicator& group() const { return *group_; }
  // Every parameter, in checkpoint order.
  const std::vector<std::string>& names() const { return names_; }
  // Rank 0: the whole tensor from its part (`mine`, null where it holds none) and the sources';
  // they call Send meanwhile. `dtype`: the tensor's (the parts').
  Tensor Whole(const std::string& name, const Tensor* mine, DType dtype) const;
  void Send(const std::string& name, const Tensor& mine) const;
  // This rank's part of a whole tensor.
  Tensor PartOf(const std::string& name, const Tensor& whole) const;
  // Leaves the parameters this rank is not a source of out of the norm.
  void CountEachElementOnce(AdamW& optimizer) const;

 private:
  struct Parameter {
    std::string name;
    Shape shape;
    std::vector<int> holders, sources;   // model-group ranks, ascending
    std::vector<ParameterSlice> slices;  // per holder
    std::vector<ParameterSlice> source_slices;
  };
  const Parameter& Find(const std::string& name) const;
  bool IsSource(const Parameter& p, int rank) const;

  Communicator* group_ = nullptr;
  std::vector<std::string> names_;
  std::vector<Parameter> parameters_;
  std::map<std::string, size_t> index_;
};

}  // namespace gemmapod
