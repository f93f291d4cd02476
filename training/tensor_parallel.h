// Checkpoint tensors under tensor parallelism: a training checkpoint holds whole logical tensors
// whatever the layout, so the rank that writes gathers each tensor from its group's parts while
// the others send theirs, and a resume cuts each rank's part out of the whole tensor. Which part
// a rank holds is a ParameterSlice (models/gemma/gemma_shard.h): whole (replicated), or
// [begin, end) along rows or columns, vocabulary rows padded with zeros past `end`.
#pragma once

#include <vector>

#include "models/gemma/gemma_shard.h"
#include "runtime/tensor.h"

namespace gemmapod {

class Communicator;

// Rank 0 of `tp`: the whole tensor of `shape` from its own part `mine` and every other rank's
// (slices[r]: rank r's part). Replicated parts are taken from rank 0 and not sent.
Tensor GatherWhole(Communicator& tp, const Tensor& mine, const Shape& shape,
                   const std::vector<ParameterSlice>& slices);
// The other ranks of `tp`: their part, unless it is replicated.
void SendPart(Communicator& tp, const Tensor& mine, const ParameterSlice& slice);
// This rank's part of a whole tensor (padding rows zero).
Tensor CutPart(const Tensor& whole, const ParameterSlice& slice);

}  // namespace gemmapod
