// A Gemma (1/2/3) pipeline stage with its KV cache, as the pipeline engine drives it.
#pragma once

#include <cstdint>
#include <memory>

#include "models/gemma/gemma_stage.h"
#include "serving/engine/stage_model.h"

namespace gemmapod {

class ProcessGrid;

// `stage` must be this rank's place in `grid` (its tp coordinates and stage position; checked).
// The KV cache holds `max_sequences` sequences of up to `max_context` tokens (0: the model's
// max_position_embeddings), in fixed slots or, when `pool.block_tokens` > 0, in a shared pool of
// blocks that a scheduler assigns.
std::unique_ptr<StageModel> MakeGemmaStageModel(const ProcessGrid& grid, GemmaStage stage,
                                                int64_t max_sequences, int64_t max_context,
                                                const KvPool& pool = KvPool{0, {0, 0}, 0});

}  // namespace gemmapod
