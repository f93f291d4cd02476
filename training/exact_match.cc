#include "training/exact_match.h"

#include <string>

#include "models/gemma/gemma_decoder.h"
#include "runtime/tokenizer/chat_template.h"
#include "runtime/tokenizer/tokenizer.h"
#include "serving/generator.h"
#include "training/rewards.h"

namespace gemmapod {

ExactMatch HeldOutExactMatch(GemmaDecoder& model, const Tokenizer& tokenizer,
                             const std::vector<TrainingExample>& held_out, int64_t max_new_tokens) {
  ExactMatch result;
  const std::vector<int32_t> stop = GemmaStopTokens(tokenizer);
  const RewardFunction& exact = FindReward("exact_match");  // trimmed answers equal
  for (const TrainingExample& e : held_out) {
    if (e.prompt_length <= 0) continue;
    GenerationRequest request;
    request.prompt.assign(e.tokens.begin(), e.tokens.begin() + e.prompt_length);
    request.max_new_tokens = max_new_tokens;
    request.stop_tokens = stop;
    const GenerationResult answer = Generate(model, tokenizer, request, nullptr);
    ++result.total;
    if (exact(answer.text, e.answer, "") > 0) ++result.correct;
  }
  return result;
}

}  // namespace gemmapod
