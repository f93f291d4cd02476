// RecurrentGemma's place in a process grid: the layer ranges of its stages and a rank's shard.
// The commands run it on the pipeline engine (serving/engine/recurrent_stage_model.h).
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

// Runs `chunk` through every stage of this rank's replica (collective over the replica), one chunk
// at a time, and returns the logits on every rank: [tokens, vocab] or [1, vocab]. Unlike the
// engine's chunks, `chunk` may carry document starts (segment positions): the sharded
// equivalence test feeds a document reset through every layout with it.
Tensor ForwardOnGrid(RecurrentGemma& stage, const ProcessGrid& grid, const RecurrentChunk& chunk,
                     RecurrentGemmaState& state, bool all_logits);

}  // namespace gemmapod
