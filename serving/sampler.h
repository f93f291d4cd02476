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
  // OpenAI's penalties on the generated tokens (not the prompt), in [-2, 2]: a token generated
  // c times has its logit lowered by presence (once, when c > 0) + frequency x c. Applied by the
  // pipeline's ShardSampler, which knows where the prompt ends; the one-rank Sampler needs 0.
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  uint64_t seed = 0;  // same seed, same draws
};

// Error naming the field for values that mean nothing (negative temperature, negative top_k,
// top_p outside (0, 1], min_p outside [0, 1), a non-positive penalty, NaN).
void Validate(const SamplingParams& params);

// One sequence's sampler: holds the random stream (seeded once, so a sequence of calls is
// reproducible) and scratch buffers reused across calls. Costs O(vocab) per call (on average,
// for top-p over the whole vocabulary) plus O(k log k) for the k tokens top-k keeps; the
// vocabulary is never fully sorted.
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);

  // `logits` of one position over the vocabulary; `context` holds the prompt and the tokens
  // generated so far (what the repetition penalty looks at). NaN or +inf logits, logits that are
  // all -inf, and context ids outside the logits are errors.
  int32_t Sample(std::span<const float> logits, std::span<const int32_t> context);

 private:
  std::span<const float> Penalise(std::span<const float> logits, std::span<const int32_t> context);
  // The order of candidates: the higher score first, the lower id on ties.
  static bool Better(std::span<const float> scores, int32_t a, int32_t b);
  // Fills candidates_ with the m best ids, best first.
  void SelectTop(std::span<const float> scores, size_t m);
  // Keeps the smallest best-first set of ids (of all, or of candidates_, which are then best
  // first) whose weight reaches top_p of theirs; candidates_ is left in no particular order.
  // After top-k: also keeps the ids tied with the k-th score (ids after it, in id order).
  void KeepTiesWithLast(std::span<const float> scores);
  void KeepNucleus(std::span<const float> scores, bool all);
  // Keeps the ids (of all, or of candidates_) whose probability is at least min_p x the top one.
  void KeepAboveMinP(bool all);
  // Draws from weights_ over all ids, or over candidates_.
  int32_t Draw(bool all);

  SamplingParams params_;
  float inv_temperature_ = 1.0f;
  std::mt19937_64 rng_;
  std::vector<float> penalised_;     // the logits after the repetition penalty
  std::vector<uint8_t> seen_;        // per id: already penalised in this call
  std::vector<float> scratch_;       // scores for nth_element
  std::vector<int32_t> candidates_;  // the ids still in the running, when not all are
  std::vector<float> weights_;       // per id: probability / the top probability
  std::vector<double> block_mass_;   // Draw's sums of weights_ per block of ids
};

}  // namespace gemmapod
