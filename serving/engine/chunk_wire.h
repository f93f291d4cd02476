// How a micro-batch's chunks travel between ranks as 32-bit words: the pipeline engine sends them
// to the next stage, and the serving driver mirrors its calls to the first stage's other
// tensor-parallel ranks in the same words. One encoding, so a new sampling field is added once.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "models/layers/kv_cache.h"
#include "models/sequence_chunk.h"
#include "serving/sampler.h"

namespace gemmapod {

struct WireChunk {
  SequenceChunk tokens;
  int64_t start = 0;  // the position of the chunk's first token
  SamplingParams sampling;
  bool sample = true;  // kSample: this chunk's next token is wanted
  // With its token: -1 no log-probabilities; k >= 0 the token's and the k most likely ids'.
  int32_t top_logprobs = -1;
  // A shared KV pool (kv_cache.h): table entries [kv_first[g], + kv_blocks[g].size()) of the
  // sequence in group g, assigned before the chunk runs. Empty with fixed slots.
  int64_t kv_first[kKvGroups] = {0, 0};
  std::vector<int32_t> kv_blocks[kKvGroups];
  // The sequence's first chunk when it starts on a cached prefix: the prefix's tokens (positions
  // [0, start), already in the blocks its table names), for the samplers' penalties.
  std::vector<int32_t> cached;
  // An encoder-decoder sequence's first chunk: the encoder's input, encoded before the chunk runs.
  std::vector<int32_t> encoder;
};

// Appends one chunk's words: header words, then the tokens.
void AppendChunkWords(const WireChunk& chunk, std::vector<int32_t>& words);
// Reads `count` chunks from `words`; errors name `who` (e.g. "pipeline stage 2") when the words
// are truncated or malformed.
std::vector<WireChunk> ParseChunkWords(std::span<const int32_t> words, int64_t count,
                                       std::string_view who);
// Sampling settings as words (read back from kSamplingWords words).
inline constexpr int64_t kSamplingWords = 9;
void AppendSamplingWords(const SamplingParams& params, std::vector<int32_t>& words);
SamplingParams ReadSamplingWords(const int32_t* words);
// Header words per chunk (the tokens, cached tokens and KV blocks come on top): sequence, start,
// token count, sampling, the sample flag, top_logprobs, the cached prefix's length, the encoder
// input's length, then per KV group the first table entry and the count.
inline constexpr int64_t kChunkHeaderWords = 7 + 2 * kKvGroups + kSamplingWords;

}  // namespace gemmapod
