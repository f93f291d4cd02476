// Choosing the next token when the logits are split over the vocabulary shards of a
// tensor-parallel group (each rank holds a contiguous range of ids). Every rank of the group
// makes the same call and gets the same token, without any rank holding the whole row where it
// can be avoided:
//   greedy   each rank finds its best (score, id); the group exchanges one pair per rank
//   top-k    each rank keeps its k best (and ties with its k-th); the group exchanges those
//            candidates, and the usual sampler runs over them (temperature, top-k, top-p, min-p
//            only ever look at the top-k set, so the result is the one-rank sampler's)
//   other    temperature / top-p / min-p over the whole vocabulary gather the row (4 bytes per
//            id per rank) and run the usual sampler
// The repetition penalty is applied to each shard first, as the one-rank sampler applies it
// before everything else; then the presence and frequency penalties, on the generated tokens:
// those the context holds beyond what it held at the first call (the prompt).
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "serving/sampler.h"

namespace gemmapod {

class Communicator;

class ShardSampler {
 public:
  // `tp` may be null for a group of one.
  ShardSampler(const SamplingParams& params, Communicator* tp);

  // `shard`: this rank's logits for ids [vocab_begin, vocab_begin + shard.size()); ids at or past
  // `sampled_vocab` are never chosen (the tokenizer's range). `context` as Sampler::Sample.
  int32_t Sample(std::span<const float> shard, int64_t vocab_begin, int64_t sampled_vocab,
                 std::span<const int32_t> context);

 private:
  int32_t Greedy(std::span<const float> scores, int64_t vocab_begin);
  int32_t TopK(std::span<const float> scores, int64_t vocab_begin);
  int32_t Gathered(std::span<const float> scores, int64_t stride, int64_t sampled_vocab);

  SamplingParams params_;
  Communicator* tp_;
  Sampler sampler_;  // without the penalty (applied per shard); same seed on every rank
  std::vector<float> penalised_;
  int64_t prompt_length_ = -1;  // the context's length at the first call
};

// The penalty on the ids of `context` that fall in [begin, begin + logits.size()), each id once:
// l -> l / p when l > 0, else l * p.
void ApplyRepetitionPenalty(std::span<float> logits, int64_t begin,
                            std::span<const int32_t> context, float penalty);
// The most log-probabilities a request may ask for per position (OpenAI's top_logprobs bound).
inline constexpr int kMaxTopLogprobs = 20;

// Log-probabilities under the model's distribution: the softmax of the raw logits over the sampled
// ids (before penalties and temperature, which shape the draw, not the model).
struct TokenLogProbs {
  float logprob = 0;  // of the token asked about
  std::vector<std::pair<int32_t, float>>
      top;  // the k most likely ids, best first (lower id on ties)
};
// From this rank's shard of one position's logits (ids [vocab_begin, vocab_begin + shard.size()),
// those at or past `sampled_vocab` left out); collective over `tp` (null: a group of one): two
// scalar all-reduces and one all-gather of k candidates per rank.
TokenLogProbs ShardLogProbs(std::span<const float> shard, int64_t vocab_begin,
                            int64_t sampled_vocab, int32_t token, int k, Communicator* tp);

// OpenAI's presence and frequency penalties over `generated` (ids outside the range skipped):
// l -> l - presence - frequency x count for each id generated count > 0 times.
void ApplyOccurrencePenalties(std::span<float> logits, int64_t begin,
                              std::span<const int32_t> generated, float presence, float frequency);

}  // namespace gemmapod
