// Random Gemma weights for tests and benchmarks, where a checkpoint would only add I/O: matrices
// uniform with standard deviation 1/sqrt(in_features), so activations keep their scale through
// the layers; norm weights with standard deviation 0.1, so the (1 + w) convention matters.
// Counter-based: an element is a pure function of (seed, tensor name, index in the full tensor),
// so a rank makes exactly its own shard, and every layout holds slices of the same model.
#pragma once

#include <cstdint>

#include "models/gemma/gemma_shard.h"

namespace gemmapod {

// `slice` of parameter `p` (its full name and shape), f32 for norms, else `matrix_dtype`: the
// element function every random model (Gemma's stacks, T5Gemma's) draws from.
Tensor RandomParameterSlice(const GemmaParameter& p, const ParameterSlice& slice,
                            DType matrix_dtype, uint64_t seed);
GemmaWeights RandomGemmaShard(const ModelConfig& config, const GemmaShard& shard,
                              DType matrix_dtype, uint64_t seed);
GemmaWeights RandomGemmaWeights(const ModelConfig& config, DType matrix_dtype, uint64_t seed);

}  // namespace gemmapod
