#include "serving/engine/chunk_wire.h"

#include <bit>

#include "runtime/error.h"
#include "serving/shard_sampler.h"

namespace gemmapod {

void AppendChunkWords(const WireChunk& c, std::vector<int32_t>& words) {
  const SamplingParams& p = c.sampling;
  const int32_t header[kChunkHeaderWords] = {static_cast<int32_t>(c.tokens.sequence),
                                             static_cast<int32_t>(c.start),
                                             static_cast<int32_t>(c.tokens.tokens.size()),
                                             std::bit_cast<int32_t>(p.temperature),
                                             p.top_k,
                                             std::bit_cast<int32_t>(p.top_p),
                                             std::bit_cast<int32_t>(p.min_p),
                                             std::bit_cast<int32_t>(p.repetition_penalty),
                                             static_cast<int32_t>(p.seed & 0xffffffffu),
                                             static_cast<int32_t>(p.seed >> 32),
                                             std::bit_cast<int32_t>(p.presence_penalty),
                                             std::bit_cast<int32_t>(p.frequency_penalty),
                                             c.sample ? 1 : 0,
                                             c.top_logprobs};
  words.insert(words.end(), header, header + kChunkHeaderWords);
  words.insert(words.end(), c.tokens.tokens.begin(), c.tokens.tokens.end());
}

std::vector<WireChunk> ParseChunkWords(std::span<const int32_t> words, int64_t count,
                                       std::string_view who) {
  const int32_t* p = words.data();
  const int64_t size = static_cast<int64_t>(words.size());
  std::vector<WireChunk> chunks;
  int64_t at = 0;
  for (int64_t i = 0; i < count; ++i) {
    GEMMAPOD_CHECK(at + kChunkHeaderWords <= size, who, ": truncated micro-batch payload");
    WireChunk c;
    c.tokens.sequence = p[at];
    c.start = p[at + 1];
    const int64_t n = p[at + 2];
    c.sampling.temperature = std::bit_cast<float>(p[at + 3]);
    c.sampling.top_k = p[at + 4];
    c.sampling.top_p = std::bit_cast<float>(p[at + 5]);
    c.sampling.min_p = std::bit_cast<float>(p[at + 6]);
    c.sampling.repetition_penalty = std::bit_cast<float>(p[at + 7]);
    c.sampling.seed = static_cast<uint64_t>(static_cast<uint32_t>(p[at + 8])) |
                      (static_cast<uint64_t>(static_cast<uint32_t>(p[at + 9])) << 32);
    c.sampling.presence_penalty = std::bit_cast<float>(p[at + 10]);
    c.sampling.frequency_penalty = std::bit_cast<float>(p[at + 11]);
    c.sample = p[at + 12] != 0;
    c.top_logprobs = p[at + 13];
    GEMMAPOD_CHECK(c.top_logprobs >= -1 && c.top_logprobs <= kMaxTopLogprobs, who,
                   ": top_logprobs ", c.top_logprobs, " outside [-1, ", kMaxTopLogprobs, "]");
    at += kChunkHeaderWords;
    GEMMAPOD_CHECK(n > 0 && at + n <= size, who, ": truncated micro-batch payload");
    c.tokens.tokens.assign(p + at, p + at + n);
    at += n;
    chunks.push_back(std::move(c));
  }
  GEMMAPOD_CHECK(at == size, who, ": ", size - at, " words past the micro-batch's chunks");
  return chunks;
}

}  // namespace gemmapod
