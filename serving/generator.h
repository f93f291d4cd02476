// Generation for one sequence: prefill the prompt, then sample, stream and stop. The loop a
// server and the CLI share.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "models/gemma/gemma_decoder.h"
#include "runtime/tokenizer/tokenizer.h"
#include "serving/sampler.h"

namespace gemmapod {

struct GenerationRequest {
  std::vector<int32_t> prompt;  // token ids, BOS included
  int64_t max_new_tokens = 128;
  SamplingParams sampling;
  std::vector<int32_t> stop_tokens;       // generation ends on any of these (not emitted)
  std::vector<std::string> stop_strings;  // ... or when the text produces one (not emitted)
  // Report each generated token's log-probability (>= 0) and this many of the most likely ids'
  // (the pipeline's loop only); -1: none.
  int32_t top_logprobs = -1;
  // Encoder-decoder models (T5Gemma): the encoder's input, run once when the sequence starts;
  // `prompt` is then the decoder's start. Empty for decoder-only models.
  std::vector<int32_t> encoder_prompt;
};

// kCancelled: the client went away or the request timed out before it finished.
enum class FinishReason { kStopToken, kStopString, kLength, kCancelled };
// "stop_token", "stop_string", "length", "cancelled"
const char* FinishReasonName(FinishReason r);

struct GenerationResult {
  std::vector<int32_t> tokens;  // generated ids, a stop token excluded
  std::string text;             // what was streamed, a stop string excluded
  FinishReason finish = FinishReason::kLength;
  double prefill_seconds = 0;
  double decode_seconds = 0;
};

// What happens to one request's sampled tokens: stop tokens and strings, the streamed text, the
// result. Shared by every generation loop, so they all stop and stream alike.
class GenerationTracker {
 public:
  GenerationTracker(const Tokenizer& tokenizer, const GenerationRequest& request,
                    std::function<void(std::string_view)> on_text);
  ~GenerationTracker();
  GenerationTracker(GenerationTracker&&) noexcept;

  // Takes the next sampled token. Returns true when the model should be fed it and sampled
  // again; false when the request has finished (the result is then final).
  bool Accept(int32_t id);
  const std::vector<int32_t>& context() const { return context_; }  // prompt + generated
  GenerationResult& result() { return result_; }

 private:
  void Finish();
  void Emit(const std::string& text);

  struct Streams;  // the stop condition and text stream
  std::unique_ptr<Streams> streams_;
  std::function<void(std::string_view)> on_text_;
  int64_t max_new_tokens_;
  std::vector<int32_t> context_;
  GenerationResult result_;
};

// Checks a request against the model before any work: a prompt, room for it and max_new_tokens
// in the context, valid sampling settings.
void CheckRequest(const GenerationRequest& request, const ModelConfig& config);
// The same against a context of `max_context` tokens; `holder` names it in the error ("the
// model's context", "the pipeline's context").
void CheckRequest(const GenerationRequest& request, int64_t max_context, std::string_view holder);

// `on_text` receives each piece of final text as soon as it is known (may be empty-handed when
// nothing is final yet). The KV cache is sized to prompt + max_new_tokens and checked against the
// model's max_position_embeddings before any work.
GenerationResult Generate(GemmaDecoder& model, const Tokenizer& tokenizer,
                          const GenerationRequest& request,
                          const std::function<void(std::string_view)>& on_text);

}  // namespace gemmapod
