// Where a decoder-only Gemma's parts go on a process grid: the layers of each pipeline stage (the
// pod file's, or balanced by the bytes each stage holds) and the shard of each rank.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "models/gemma/gemma_shard.h"
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

// The layers of each of `pp` training stages, balanced by the work of a step rather than by bytes:
// each layer's matrix elements (its products' multiply-adds per token, forward and backward
// alike) and, on the last stage, the tied head's vocabulary x width (the embedding's lookup on
// the first stage costs nothing). With Gemma's large vocabularies the head is most of a small
// model's step (60 % of Gemma 3 270M's), so the last stage takes fewer layers.
std::vector<LayerRange> GemmaTrainingStageLayers(const ModelConfig& config, int pp);

// The shard of the rank at `at` in a grid of `shape` with these stage layers.
GemmaShard GemmaShardAt(const ModelConfig& config, const GridShape& shape, const GridCoords& at,
                        std::span<const LayerRange> stages);

// What each rank of a pod holds for a model, and why the layout cannot work, if it cannot.
struct RankPlan {
  int rank = 0;
  GridCoords at;
  int node = 0;
  LayerRange layers;
  bool embedding = false;  // first stage
  bool head = false;       // last stage
  int64_t weight_bytes = 0;
  int64_t kv_bytes = 0;  // for `batch` sequences of `context` tokens
};

struct GemmaPodPlan {
  std::vector<LayerRange> stages;
  std::vector<RankPlan> ranks;  // empty when the layout cannot be cut at all
  std::vector<std::string> problems;
};

// `matrix_bytes`: bytes per weight element as stored (2 for bf16, 4 for f32); `batch` sequences
// per replica of `context` tokens each.
GemmaPodPlan PlanGemmaOnPod(const PodTopology& pod, const ModelConfig& config, int64_t matrix_bytes,
                            int64_t batch, int64_t context);

}  // namespace gemmapod
