// Generation for several requests at once through a PipelineEngine: every request's prompt is
// prefilled, then each decode step feeds the tokens just sampled. The requests are cut into
// micro-batches (up to one per pipeline stage), and a micro-batch's next step is submitted as
// soon as its tokens return, so with several micro-batches every stage is busy. Runs on the
// pipeline's first stage; the other stages call PipelineEngine::Serve() meanwhile. One loop for
// every family: the CLI, and later the server and RLHF rollouts, drive it.
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
