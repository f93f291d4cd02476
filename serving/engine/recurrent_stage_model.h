// A RecurrentGemma (Griffin) pipeline stage with its fixed-size decode state, as the pipeline
// engine drives it.
#pragma once

#include <cstdint>
#include <memory>

#include "models/recurrent_gemma/recurrent_gemma.h"
#include "serving/engine/stage_model.h"

namespace gemmapod {

// The state holds `max_sequences` sequences of any length (its size depends on the config alone).
std::unique_ptr<StageModel> MakeRecurrentStageModel(RecurrentGemma model, int64_t max_sequences);

}  // namespace gemmapod
