// How one rank's part of a RecurrentGemma is cut. Tensor parallelism splits by heads: the
// recurrent width follows its gate blocks (the block-diagonal gates, the depthwise convolution,
// the RG-LRU parameters and linear_x/linear_y are per channel, so each rank keeps whole blocks),
// the attention's query heads split while its single key/value head is replicated, the MLP splits
// its width; linear_out, o_proj and down_proj are row-parallel (one all-reduce each, their biases
// added once after it), and the vocabulary is split by rows. Pipeline stages hold layer ranges.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "models/gemma/gemma_shard.h"
#include "models/recurrent_gemma/recurrent_gemma_weights.h"

namespace gemmapod {

struct RecurrentGemmaShard {
  int tp = 1;
  int tp_rank = 0;
  int64_t first_layer = 0;
  int64_t end_layer = 0;
  bool has_embedding = true;  // first stage
  bool has_head = true;       // last stage
  // Derived.
  int64_t heads = 0;       // attention query heads and RG-LRU gate blocks held
  int64_t lru = 0;         // recurrent channels held
  int64_t ffn = 0;         // MLP width held
  int64_t vocab_rows = 0;  // embedding rows held
  int64_t vocab_begin = 0;
};

// Why `config` cannot be split over `tp` ranks, or nothing.
std::optional<std::string> RecurrentTensorParallelProblem(const RecurrentGemmaConfig& config,
                                                          int tp);
RecurrentGemmaShard MakeRecurrentGemmaShard(const RecurrentGemmaConfig& config, int tp, int tp_rank,
                                            int64_t first_layer, int64_t end_layer,
                                            bool has_embedding, bool has_head);
RecurrentGemmaShard WholeRecurrentGemma(const RecurrentGemmaConfig& config);

// The part of parameter `name` the shard holds (whole, or rows or columns), or nothing when it
// holds none of it (another stage's layer).
std::optional<ParameterSlice> RecurrentGemmaSliceOf(const RecurrentGemmaConfig& config,
                                                    const RecurrentGemmaShard& shard,
                                                    const std::string& name);

// The shard's slices of every parameter it holds, read from `source` (each tensor read whole,
// so its stored checksum is checked, then cut). Row-parallel biases are kept whole.
RecurrentGemmaWeights LoadRecurrentGemmaShard(const RecurrentGemmaConfig& config,
                                              const RecurrentGemmaShard& shard,
                                              const TensorSource& source);
// Bytes of the shard's weights when matrices take `matrix_bytes` per element (vectors, gate
// blocks and biases are f32).
int64_t RecurrentGemmaShardWeightBytes(const RecurrentGemmaConfig& config,
                                       const RecurrentGemmaShard& shard, int64_t matrix_bytes);

// The same cut of weights held whole (tests, benchmarks).
RecurrentGemmaWeights SliceRecurrentGemmaWeights(const RecurrentGemmaConfig& config,
                                                 const RecurrentGemmaShard& shard,
                                                 RecurrentGemmaWeights whole);

}  // namespace gemmapod
