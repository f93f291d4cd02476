// Where a decoder-only Gemma's parts go on a process grid: the layers of each pipeline stage (the
// pod file's, or balanced by the bytes each stage holds) and the shard of each rank.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "models/gemma_shard.h"
#include "sharding/process_grid.h"
#include "sharding/stage_plan.h"

namespace gemmapod {

// Per-rank bytes of each layer and of the first and last stages' extras (embedding; head and
// final norm) under tensor parallelism `tp`, for BalanceStages.
struct GemmaStageBytes {
  std::vector<int64_t> layers;
  int64_t first_extra = 0;
  int64_t last_extra = 0;
};
GemmaStageBytes GemmaBytesPerStagePart(const ModelConfig& config, int tp, int64_t matrix_bytes);

// The layers of each of `pp` stages: the pod's explicit ranges (checked against the model), or
// balanced by bytes when the pod says "auto" or there is no pod (`pod` null).
std::vector<LayerRange> GemmaStageLayers(const ModelConfig& config, int tp, int pp,
                                         int64_t matrix_bytes, const PodTopology* pod);

// The shard of the rank at `at` in a grid of `shape` with these stage layers.
GemmaShard GemmaShardAt(const ModelConfig& config, const GridShape& shape, const GridCoords& at,
                        std::span<const LayerRange> stages);

}  // namespace gemmapod
