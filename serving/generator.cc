#include "serving/generator.h"

#include <algorithm>
#include <chrono>

#include "runtime/error.h"
#include "serving/stop_condition.h"

namespace gemmapod {

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kStopToken:
      return "stop_token";
    case FinishReason::kStopString:
      return "stop_string";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "cancelled";
  }
  return "?";
}

struct GenerationTracker::Streams {
  StopCondition stop;
  TextStream text;
};

GenerationTracker::GenerationTracker(const Tokenizer& tokenizer, const GenerationRequest& request,
                                     std::function<void(std::string_view)> on_text)
    : streams_(std::make_unique<Streams>(Streams{
          StopCondition(request.stop_tokens, request.stop_strings), TextStream(tokenizer)})),
      on_text_(std::move(on_text)),
      max_new_tokens_(request.max_new_tokens),
      context_(request.prompt) {}

GenerationTracker::~GenerationTracker() = default;
GenerationTracker::GenerationTracker(GenerationTracker&&) noexcept = default;

void GenerationTracker::Emit(const std::string& text) {
  if (text.empty()) return;
  result_.text += text;
  if (on_text_) on_text_(text);
}

bool GenerationTracker::Accept(int32_t id) {
  bool stopped = false;
  if (streams_->stop.IsStopToken(id)) {
    result_.finish = FinishReason::kStopToken;
    Finish();
    return false;
  }
  result_.tokens.push_back(id);
  context_.push_back(id);
  Emit(streams_->stop.Push(streams_->text.Push(id), &stopped));
  if (stopped) {
    result_.finish = FinishReason::kStopString;
    return false;
  }
  if (static_cast<int64_t>(result_.tokens.size()) == max_new_tokens_) {
    result_.finish = FinishReason::kLength;
    Finish();
    return false;
  }
  return true;
}

void GenerationTracker::Finish() {
  // The text held back (an incomplete character, a possible stop string's start) is final now.
  bool stopped = false;
  Emit(streams_->stop.Push(streams_->text.Flush(), &stopped));
  if (stopped) {
    result_.finish = FinishReason::kStopString;
  } else {
    Emit(streams_->stop.Flush());
  }
}

void CheckRequest(const GenerationRequest& request, int64_t max_context, std::string_view holder) {
  GEMMAPOD_CHECK(!request.prompt.empty(), "generate: the prompt has no tokens");
  GEMMAPOD_CHECK(request.max_new_tokens > 0, "generate: max_new_tokens must be positive, got ",
                 request.max_new_tokens);
  const int64_t prompt = static_cast<int64_t>(request.prompt.size());
  // Compared without adding first, so an enormous max_new_tokens cannot overflow.
  GEMMAPOD_CHECK(prompt <= max_context && request.max_new_tokens <= max_context - prompt,
                 "generate: prompt (", prompt, " tokens) + max_new_tokens (",
                 request.max_new_tokens, ") exceeds ", holder, " of ", max_context, " tokens");
  Validate(request.sampling);
}

void CheckRequest(const GenerationRequest& request, const ModelConfig& config) {
  CheckRequest(request, config.max_position_embeddings, "the model's context");
}

GenerationResult Generate(GemmaDecoder& model, const Tokenizer& tokenizer,
                          const GenerationRequest& request,
                          const std::function<void(std::string_view)>& on_text) {
  using Clock = std::chrono::steady_clock;
  const ModelConfig& config = model.config();
  CheckRequest(request, config);
  const int64_t context = static_cast<int64_t>(request.prompt.size()) + request.max_new_tokens;

  KvCache cache(config, 1, context);
  Sampler sampler(request.sampling);
  GenerationTracker tracker(tokenizer, request, on_text);

  const auto t0 = Clock::now();
  Tensor logits = model.Forward({{SequenceChunk{0, request.prompt}}}, cache, LogitRows::kLastToken);
  const auto t1 = Clock::now();

  // Embedding tables are often padded past the tokenizer's pieces (a multiple of 64 or 128):
  // ids there mean nothing, so only the tokenizer's range is sampled.
  const size_t sampled =
      static_cast<size_t>(std::min<int64_t>(config.vocab_size, tokenizer.vocab_size()));
  for (;;) {
    const int32_t id =
        sampler.Sample(std::span<const float>(logits.data<float>(), sampled), tracker.context());
    if (!tracker.Accept(id)) break;
    logits = model.Forward({{SequenceChunk{0, {id}}}}, cache, LogitRows::kLastToken);
  }
  GenerationResult result = std::move(tracker.result());
  result.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
  result.decode_seconds = std::chrono::duration<double>(Clock::now() - t1).count();
  return result;
}

}  // namespace gemmapod
