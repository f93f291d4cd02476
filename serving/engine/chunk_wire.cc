#include "serving/engine/chunk_wire.h"

#include <bit>

#include "runtime/error.h"
#include "serving/shard_sampler.h"

namespace gemmapod {

void AppendSamplingWords(const SamplingParams& p, std::vector<int32_t>& words) {
  const int32_t w[kSamplingWords] = {std::bit_cast<int32_t>(p.temperature),
                                     p.top_k,
                                     std::bit_cast<int32_t>(p.top_p),
                                     std::bit_cast<int32_t>(p.min_p),
                                     std::bit_cast<int32_t>(p.repetition_penalty),
                                     static_cast<int32_t>(p.seed & 0xffffffffu),
                                     static_cast<int32_t>(p.seed >> 32),
                                     std::bit_cast<int32_t>(p.presence_penalty),
                                     std::bit_cast<int32_t>(p.frequency_penalty)};
  words.insert(words.end(), w, w + kSamplingWords);
}

SamplingParams ReadSamplingWords(const int32_t* w) {
  SamplingParams p;
  p.temperature = std::bit_cast<float>(w[0]);
  p.top_k = w[1];
  p.top_p = std::bit_cast<float>(w[2]);
  p.min_p = std::bit_cast<float>(w[3]);
  p.repetition_penalty = std::bit_cast<float>(w[4]);
  p.seed = static_cast<uint64_t>(static_cast<uint32_t>(w[5])) |
           (static_cast<uint64_t>(static_cast<uint32_t>(w[6])) << 32);
  p.presence_penalty = std::bit_cast<float>(w[7]);
  p.frequency_penalty = std::bit_cast<float>(w[8]);
  return p;
}

void AppendChunkWords(const WireChunk& c, std::vector<int32_t>& words) {
  words.push_back(static_cast<int32_t>(c.tokens.sequence));
  words.push_back(static_cast<int32_t>(c.start));
  words.push_back(static_cast<int32_t>(c.tokens.tokens.size()));
  AppendSamplingWords(c.sampling, words);
  words.push_back(c.sample ? 1 : 0);
  words.push_back(c.top_logprobs);
  words.push_back(static_cast<int32_t>(c.cached.size()));
  words.push_back(static_cast<int32_t>(c.encoder.size()));
  for (int g = 0; g < kKvGroups; ++g) {
    words.push_back(static_cast<int32_t>(c.kv_first[g]));
    words.push_back(static_cast<int32_t>(c.kv_blocks[g].size()));
  }
  words.insert(words.end(), c.tokens.tokens.begin(), c.tokens.tokens.end());
  words.insert(words.end(), c.cached.begin(), c.cached.end());
  words.insert(words.end(), c.encoder.begin(), c.encoder.end());
  for (const auto& blocks : c.kv_blocks) words.insert(words.end(), blocks.begin(), blocks.end());
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
    c.sampling = ReadSamplingWords(p + at + 3);
    c.sample = p[at + 3 + kSamplingWords] != 0;
    c.top_logprobs = p[at + 4 + kSamplingWords];
    GEMMAPOD_CHECK(c.top_logprobs >= -1 && c.top_logprobs <= kMaxTopLogprobs, who,
                   ": top_logprobs ", c.top_logprobs, " outside [-1, ", kMaxTopLogprobs, "]");
    const int64_t cached = p[at + 5 + kSamplingWords];
    const int64_t encoder = p[at + 6 + kSamplingWords];
    int64_t blocks[kKvGroups];
    for (int g = 0; g < kKvGroups; ++g) {
      c.kv_first[g] = p[at + 7 + kSamplingWords + 2 * g];
      blocks[g] = p[at + 8 + kSamplingWords + 2 * g];
      GEMMAPOD_CHECK(c.kv_first[g] >= 0 && blocks[g] >= 0, who, ": KV blocks [", c.kv_first[g],
                     ", +", blocks[g], ")");
    }
    at += kChunkHeaderWords;
    GEMMAPOD_CHECK(n > 0 && cached >= 0 && encoder >= 0 &&
                       at + n + cached + encoder + blocks[0] + blocks[1] <= size,
                   who, ": truncated micro-batch payload");
    c.tokens.tokens.assign(p + at, p + at + n);
    at += n;
    c.cached.assign(p + at, p + at + cached);
    at += cached;
    c.encoder.assign(p + at, p + at + encoder);
    at += encoder;
    for (int g = 0; g < kKvGroups; ++g) {
      c.kv_blocks[g].assign(p + at, p + at + blocks[g]);
      at += blocks[g];
    }
    chunks.push_back(std::move(c));
  }
  GEMMAPOD_CHECK(at == size, who, ": ", size - at, " words past the micro-batch's chunks");
  return chunks;
}

}  // namespace gemmapod
