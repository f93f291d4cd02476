// Random T5Gemma weights for tests and benchmarks, in the scheme of models/gemma_random.h:
// matrices uniform with standard deviation 1/sqrt(in_features), norm weights with standard
// deviation 0.1, every element a pure function of (seed, tensor name, index in the full tensor),
// so a rank makes exactly its own shard and every layout holds slices of the same model.
//
// Each stack is RandomGemmaShard's Gemma 2 stack under a seed of its own (derived from `seed` and
// the stack's name), so an encoder and a decoder of the same shape are different; the encoder's
// final norm and the decoder's cross-attention blocks are made under their Hugging Face names
// ("model.encoder.norm.weight", "model.decoder.layers.3.cross_attn.q_proj.weight", ...).
#pragma once

#include <cstdint>

#include "models/t5gemma_weights.h"

namespace gemmapod {

T5GemmaWeights RandomT5GemmaShard(const T5GemmaConfig& config, const T5GemmaShard& shard,
                                  DType matrix_dtype, uint64_t seed);
T5GemmaWeights RandomT5GemmaWeights(const T5GemmaConfig& config, DType matrix_dtype, uint64_t seed);

}  // namespace gemmapod
