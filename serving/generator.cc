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
  }
  return "?";
}

GenerationResult Generate(GemmaDecoder& model, const Tokenizer& tokenizer,
                          const GenerationRequest& request,
                          const std::function<void(std::string_view)>& on_text) {
  using Clock = std::chrono::steady_clock;
  const ModelConfig& config = model.config();
  GEMMAPOD_CHECK(!request.prompt.empty(), "generate: the prompt has no tokens");
  GEMMAPOD_CHECK(request.max_new_tokens > 0, "generate: max_new_tokens must be positive, got ",
                 request.max_new_tokens);
  const int64_t prompt = static_cast<int64_t>(request.prompt.size());
  // Compared without adding first, so an enormous max_new_tokens cannot overflow.
  GEMMAPOD_CHECK(prompt <= config.max_position_embeddings &&
                     request.max_new_tokens <= config.max_position_embeddings - prompt,
                 "generate: prompt (", prompt, " tokens) + max_new_tokens (",
                 request.max_new_tokens, ") exceeds the model's context of ",
                 config.max_position_embeddings, " tokens");
  const int64_t context = prompt + request.max_new_tokens;
  Validate(request.sampling);

  KvCache cache(config, 1, context);
  Sampler sampler(request.sampling);
  StopCondition stop(request.stop_tokens, request.stop_strings);
  TextStream stream(tokenizer);
  std::vector<int32_t> history = request.prompt;
  GenerationResult result;

  auto emit = [&](const std::string& text) {
    if (text.empty()) return;
    result.text += text;
    on_text(text);
  };

  const auto t0 = Clock::now();
  Tensor logits = model.Forward({{SequenceChunk{0, request.prompt}}}, cache, LogitRows::kLastToken);
  const auto t1 = Clock::now();
  result.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();

  // Embedding tables are often padded past the tokenizer's pieces (a multiple of 64 or 128):
  // ids there mean nothing, so only the tokenizer's range is sampled.
  const size_t sampled =
      static_cast<size_t>(std::min<int64_t>(config.vocab_size, tokenizer.vocab_size()));
  bool stopped = false;
  for (int64_t step = 0; step < request.max_new_tokens; ++step) {
    const int32_t id =
        sampler.Sample(std::span<const float>(logits.data<float>(), sampled), history);
    if (stop.IsStopToken(id)) {
      result.finish = FinishReason::kStopToken;
      stopped = true;
      break;
    }
    result.tokens.push_back(id);
    history.push_back(id);
    emit(stop.Push(stream.Push(id), &stopped));
    if (stopped) {
      result.finish = FinishReason::kStopString;
      break;
    }
    if (step + 1 == request.max_new_tokens) break;
    logits = model.Forward({{SequenceChunk{0, {id}}}}, cache, LogitRows::kLastToken);
  }
  if (!stopped || result.finish == FinishReason::kStopToken) {
    emit(stop.Push(stream.Flush(), &stopped));
    if (stopped) {
      result.finish = FinishReason::kStopString;
    } else {
      emit(stop.Flush());
    }
  }
  result.decode_seconds = std::chrono::duration<double>(Clock::now() - t1).count();
  return result;
}

}  // namespace gemmapod
