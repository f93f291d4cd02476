// Held-out exact match: the model answers each held-out prompt greedily, through the serving
// engine's generation loop over the very weights being trained (no copy, no export), and the
// answer counts when it equals the example's answer, ignoring whitespace at either end.
#pragma once

#include <cstdint>
#include <vector>

#include "training/data.h"

namespace gemmapod {

class GemmaDecoder;
class Tokenizer;

struct ExactMatch {
  int64_t correct = 0;
  int64_t total = 0;  // held-out examples with a prompt and an answer
  double rate() const { return total > 0 ? static_cast<double>(correct) / total : 0.0; }
};

// Examples without a prompt (plain text) are not counted; each answer may take up to
// max_new_tokens tokens and ends at <eos> or <end_of_turn>.
ExactMatch HeldOutExactMatch(GemmaDecoder& model, const Tokenizer& tokenizer,
                             const std::vector<TrainingExample>& held_out, int64_t max_new_tokens);

}  // namespace gemmapod
