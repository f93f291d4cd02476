// Where RecurrentGemma's parts go on a process grid: the layer ranges of its stages and a rank's
// shard. The commands run it on the pipeline engine (serving/engine/recurrent_stage_model.h).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "models/recurrent_gemma/recurrent_gemma_shard.h"
#include "sharding/process_grid.h"

namespace gemmapod {

// Layer ranges of `pp` stages over `num_layers`, as even as they go (the earlier stages take the
// extra layers). Throws when there are more stages than layers.
std::vector<std::pair<int64_t, int64_t>> RecurrentStageLayers(int64_t num_layers, int pp);

// This rank's shard of `config` in `grid`.
RecurrentGemmaShard RecurrentGemmaShardAt(const RecurrentGemmaConfig& config,
                                          const ProcessGrid& grid);

}  // namespace gemmapod
