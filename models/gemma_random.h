// Random Gemma weights for tests and benchmarks, where a checkpoint would only add I/O: matrices
// ~N(0, 1/sqrt(in_features)) so activations keep their scale through the layers, norm weights
// ~N(0, 0.1) so the (1 + w) convention matters. Deterministic in `seed`.
#pragma once

#include <cstdint>

#include "models/gemma_weights.h"

namespace gemmapod {

GemmaWeights RandomGemmaWeights(const ModelConfig& config, DType matrix_dtype, uint64_t seed);

}  // namespace gemmapod
