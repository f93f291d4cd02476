// Generation for several requests at once through a PipelineEngine, on the continuous-batching
// scheduler the server uses (batch_scheduler.h) with every request queued at the start: the
// prompts are prefilled, then each decode step feeds the tokens just sampled; the requests are
// dealt into one lane per pipeline stage, and a lane's next step is submitted as soon as its
// tokens return, so every stage is busy; a lone prompt on several stages goes in pieces back to
// back. Runs on the pipeline's first stage (every rank of its tensor-parallel group makes the same
// call); the other stages call PipelineEngine::Serve() meanwhile. One loop for every family: the
// CLI, the server and later RLHF rollouts drive it.
#pragma once

#include <cstddef>
#include <functional>
#include <span>
#include <string_view>
#include <vector>

#include "serving/engine/pipeline_engine.h"
#include "serving/generator.h"

namespace gemmapod {

// `on_text(i, text)` streams request i's text. Requests use cache slots 0..n-1, so the pipeline
// needs max_sequences >= n and a max_context that fits each prompt + max_new_tokens. Finishes
// the pipeline (the other stages return from Serve()).
std::vector<GenerationResult> GeneratePipelined(
    PipelineEngine& pipeline, const Tokenizer& tokenizer,
    std::span<const GenerationRequest> requests,
    const std::function<void(size_t, std::string_view)>& on_text);

}  // namespace gemmapod
