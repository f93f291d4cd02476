// RecurrentGemma over a replica of the process grid: each pipeline stage runs its layer range on
// its tensor-parallel shard, activations pass forward with blocking sends, and the last stage's
// logits reach every rank of the replica. One chunk at a time (no micro-batches in flight yet,
// unlike GemmaPipeline).
#pragma once

#include <vector>

#include "models/recurrent_gemma.h"
#include "sharding/process_grid.h"

namespace gemmapod {

// Layer ranges of `pp` stages over `num_layers`, as even as they go (the earlier stages take the
// extra layers). Throws when there are more stages than layers.
std::vector<std::pair<int64_t, int64_t>> RecurrentStageLayers(int64_t num_layers, int pp);

// This rank's shard of `config` in `grid`.
RecurrentGemmaShard RecurrentGemmaShardAt(const RecurrentGemmaConfig& config,
                                          const ProcessGrid& grid);

// Runs `chunk` through every stage of this rank's replica (collective over the replica) and
// returns the logits on every rank: [tokens, vocab] or [1, vocab].
Tensor ForwardOnGrid(RecurrentGemma& stage, const ProcessGrid& grid, const RecurrentChunk& chunk,
                     RecurrentGemmaState& state, bool all_logits);

}  // namespace gemmapod
