#include "serving/engine/generate.h"

#include <chrono>
#include <deque>

#include "runtime/error.h"

namespace gemmapod {

std::vector<GenerationResult> GeneratePipelined(
    PipelineEngine& pipeline, const Tokenizer& tokenizer,
    std::span<const GenerationRequest> requests,
    const std::function<void(size_t, std::string_view)>& on_text) {
  using Clock = std::chrono::steady_clock;
  const size_t n = requests.size();
  GEMMAPOD_CHECK(static_cast<int64_t>(n) <= pipeline.max_sequences(), "generate: ", n,
                 " requests but the pipeline has ", pipeline.max_sequences(), " sequence slots");
  std::vector<GenerationTracker> trackers;
  for (size_t i = 0; i < n; ++i) {
    const GenerationRequest& r = requests[i];
    CheckRequest(r, pipeline.max_context(), "the pipeline's context");
    trackers.emplace_back(tokenizer, r, [&on_text, i](std::string_view t) { on_text(i, t); });
  }

  // Micro-batch m holds requests m, m + M, m + 2M, ...
  const size_t groups = std::min(n, static_cast<size_t>(pipeline.stages()));
  std::vector<std::vector<size_t>> members(groups);
  for (size_t i = 0; i < n; ++i) members[i % groups].push_back(i);

  const auto start = Clock::now();
  std::vector<Clock::time_point> first_token(n, start);
  std::deque<size_t> in_flight;  // micro-batches in submission order
  for (size_t g = 0; g < groups; ++g) {
    std::vector<SequenceChunk> chunks;
    std::vector<SamplingParams> sampling;
    for (size_t i : members[g]) {
      pipeline.Reset(static_cast<int64_t>(i));
      chunks.push_back({static_cast<int64_t>(i), requests[i].prompt});
      sampling.push_back(requests[i].sampling);
    }
    if (groups == 1 && chunks.size() == 1) {
      // A lone prompt goes in pieces, so every stage works on it at once; only the last piece
      // asks for a token.
      const std::vector<int32_t>& prompt = chunks[0].tokens;
      const auto cuts = pipeline.PromptPieces(static_cast<int64_t>(prompt.size()));
      for (size_t c = 0; c + 1 < cuts.size(); ++c) {
        const SequenceChunk piece{
            chunks[0].sequence, {prompt.begin() + cuts[c].first, prompt.begin() + cuts[c].second}};
        pipeline.Submit(StageOutput::kNone, {&piece, 1}, {&sampling[0], 1});
      }
      chunks[0].tokens.erase(chunks[0].tokens.begin(),
                             chunks[0].tokens.begin() + cuts.back().first);
    }
    pipeline.Submit(StageOutput::kSample, chunks, sampling);
    in_flight.push_back(g);
  }
  std::vector<bool> started(n, false);
  while (!in_flight.empty()) {
    const size_t g = in_flight.front();
    in_flight.pop_front();
    const std::vector<int32_t> tokens = pipeline.TakeTokens();
    std::vector<SequenceChunk> next;
    std::vector<size_t> still;
    size_t k = 0;
    for (size_t i : members[g]) {
      if (!started[i]) {
        started[i] = true;
        first_token[i] = Clock::now();
      }
      const int32_t id = tokens[k++];
      if (trackers[i].Accept(id)) {
        next.push_back({static_cast<int64_t>(i), {id}});
        still.push_back(i);
      } else {
        trackers[i].result().decode_seconds =
            std::chrono::duration<double>(Clock::now() - first_token[i]).count();
      }
    }
    members[g] = std::move(still);
    if (!next.empty()) {
      pipeline.Submit(StageOutput::kSample, next);
      in_flight.push_back(g);
    }
  }
  pipeline.Finish();

  std::vector<GenerationResult> results;
  for (size_t i = 0; i < n; ++i) {
    GenerationResult r = std::move(trackers[i].result());
    r.prefill_seconds = std::chrono::duration<double>(first_token[i] - start).count();
    results.push_back(std::move(r));
  }
  return results;
}

}  // namespace gemmapod
