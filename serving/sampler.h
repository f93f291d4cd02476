// Choosing the next token from a position's logits: greedy, or sampling shaped by temperature,
// top-k, top-p and min-p, after a repetition penalty. Applied in the order Hugging Face's
// generate() applies them, so the same settings mean the same thing here and there.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace gemmapod {

struct SamplingParams {
  float temperature = 0.0f;         // 0: greedy (argmax, the first index on ties)
  int top_k = 0;                    // keep the k most likely tokens; 0: off
  float top_p = 1.0f;               // keep the smallest set reaching this probability; 1: off
  float min_p = 0.0f;               // drop tokens below min_p x the top probability; 0: off
  float repetition_penalty = 1.0f;  // seen token's logit l -> l / p if l > 0 else l * p; 1: off
  uint64_t seed = 0;                // same seed, same draws
};

// Error naming the field for values that mean nothing (negative temperature, top_p outside
// (0, 1], min_p outside [0, 1), a non-positive penalty, NaN).
void Validate(const SamplingParams& params);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);

  // `logits` of one position over the vocabulary; `context` holds the prompt and the tokens
  // generated so far (what the repetition penalty looks at). NaN logits are an error.
  int32_t Sample(std::span<const float> logits, std::span<const int32_t> context);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<float> work_;     // penalised, tempered logits
  std::vector<int32_t> order_;  // candidate ids
  std::vector<float> probs_;    // candidate probabilities
};

}  // namespace gemmapod
