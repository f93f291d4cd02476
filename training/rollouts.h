// Rollouts for on-policy RL: many prompts answered at once by the serving engine's decoder over
// the very weight tensors being trained (no copy, no export), each sampled token recorded with
// its log-probability and the policy's entropy at that position. The log-probability is
// log softmax(logits) over the whole vocabulary in double, the quantity the trainer's head
// computes for the same token, so the two agree to rounding: what the PPO/GRPO ratio's "old"
// policy needs without a second forward.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "models/sequence_chunk.h"
#include "runtime/tensor.h"
#include "serving/sampler.h"

namespace gemmapod {

class GemmaDecoder;
class Tokenizer;

struct RolloutOptions {
  int64_t max_new_tokens = 64;
  // temperature 1 and no truncation (top_k 0, top_p 1, min_p 0): sampling from the policy
  // itself, which the recorded log-probabilities describe; temperature 0: greedy (evaluation).
  SamplingParams sampling;
  std::vector<int32_t> stop_tokens;       // end the answer; kept in it (the policy chose to stop)
  std::vector<std::string> stop_strings;  // end the answer at the token that produced one
};

struct Rollout {
  std::vector<int32_t> tokens;  // the answer's ids, a stop token included
  std::vector<double> logp;     // per answer token: log pi(token) under the sampling weights
  std::vector<double> entropy;  // per answer token: the policy's entropy there
  std::string text;             // the answer's text, a stop string excluded
  bool stopped = false;         // ended by a stop token or string (not by max_new_tokens)
};

// A decoder as rollouts drive it: runs each chunk (sequence i's next tokens; sequence i of
// `num_sequences` fresh ones starts at position 0) and returns f32 logits [chunks, vocab] of each
// chunk's last token. Made once per batch of rollouts by the family's engine.
using DecodeStep = std::function<Tensor(std::span<const SequenceChunk> chunks)>;
struct RolloutDecoder {
  std::function<DecodeStep(int64_t num_sequences, int64_t max_context)> start;
  int64_t vocab_size = 0;
  int64_t max_context = 0;  // the longest sequence the model takes
};

// One rollout per prompt (repeat a prompt for several samples), sequence i sampled with seed
// seeds[i]: the draws depend on the seed alone, not on which other prompts share the batch. All
// sequences prefill together and decode one token each per step until every one has stopped.
std::vector<Rollout> GenerateRollouts(const RolloutDecoder& model, const Tokenizer& tokenizer,
                                      const std::vector<std::vector<int32_t>>& prompts,
                                      const std::vector<uint64_t>& seeds,
                                      const RolloutOptions& options);
// Decoder-only Gemma: every sequence's chunk in one ragged forward over a KV cache.
RolloutDecoder GemmaRollouts(GemmaDecoder& model);
std::vector<Rollout> GenerateRollouts(GemmaDecoder& model, const Tokenizer& tokenizer,
                                      const std::vector<std::vector<int32_t>>& prompts,
                                      const std::vector<uint64_t>& seeds,
                                      const RolloutOptions& options);

// Sampling from the policy as the recorded log-probabilities describe it: an error naming the
// setting otherwise.
void CheckPolicySampling(const SamplingParams& sampling);

}  // namespace gemmapod
