#include "training/exact_match.h"

#include <string>

#include "models/gemma/gemma_decoder.h"
#include "runtime/tokenizer/chat_template.h"
#include "runtime/tokenizer/tokenizer.h"
#include "serving/generator.h"

namespace gemmapod {
namespace {

std::string Trim(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

}  // namespace

ExactMatch HeldOutExactMatch(GemmaDecoder& model, const Tokenizer& tokenizer,
                             const std::vector<TrainingExample>& held_out, int64_t max_new_tokens) {
  ExactMatch result;
  const std::vector<int32_t> stop = GemmaStopTokens(tokenizer);
  for (const TrainingExample& e : held_out) {
    if (e.prompt_length <= 0) continue;
    GenerationRequest request;
    request.prompt.assign(e.tokens.begin(), e.tokens.begin() + e.prompt_length);
    request.max_new_tokens = max_new_tokens;
    request.stop_tokens = stop;
    const GenerationResult answer = Generate(model, tokenizer, request, nullptr);
    ++result.total;
    if (Trim(answer.text) == Trim(e.answer)) ++result.correct;
  }
  return result;
}

}  // namespace gemmapod
