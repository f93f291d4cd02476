// Random T5Gemma weights for tests and benchmarks, in the scheme of models/gemma_random.h:
// matrices uniform with standard deviation 1/sqrt(in_features), norm weights with standard
// deviation 0.1, every element a pure function of (seed, tensor name, index in the full tensor),
// so a rank makes exactly its own shard and every layout holds slices of the same model.
//
// Every parameter, the cross-attention blocks included, is drawn under its Hugging Face name
// ("model.encoder.layers.0.mlp.up_proj.weight", "model.decoder.layers.3.cross_attn.q_proj.weight"),
// so an encoder and a decoder of the same shape differ.
#pragma once

#include <cstdint>

#include "models/t5gemma/t5gemma_weights.h"

namespace gemmapod {

T5GemmaWeights RandomT5GemmaShard(const T5GemmaConfig& config, const T5GemmaShard& shard,
                                  DType matrix_dtype, uint64_t seed);
T5GemmaWeights RandomT5GemmaWeights(const T5GemmaConfig& config, DType matrix_dtype, uint64_t seed);

}  // namespace gemmapod
