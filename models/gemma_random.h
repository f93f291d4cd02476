// Random Gemma weights for tests and benchmarks, where a checkpoint would only add I/O: matrices
// uniform with standard deviation 1/sqrt(in_features), so activations keep their scale through
// the layers; norm weights with standard deviation 0.1, so the (1 + w) convention matters.
// Deterministic in `seed`; fast enough for full-size models (a 2B model in seconds).
#pragma once

#include <cstdint>

#include "models/gemma_weights.h"

namespace gemmapod {

GemmaWeights RandomGemmaWeights(const ModelConfig& config, DType matrix_dtype, uint64_t seed);

}  // namespace gemmapod
