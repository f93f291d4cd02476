// The KV cache's shared pool: blocks assigned anywhere in the pool, sliding blocks given back once
// out of the window, and a sequence placed on blocks another sequence filled (a cached prefix) all
// give the bits a fixed slot gives.
#include "models/layers/kv_cache.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "models/gemma/gemma_decoder.h"
#include "models/gemma/gemma_random.h"
#include "runtime/error.h"

namespace gemmapod {
namespace {

ModelConfig TinyGemma3() {
  ModelConfig c;
  c.name = "tiny";
  c.architecture = Architecture::kGemma3Text;
  c.vocab_size = 96;
  c.hidden_size = 32;
  c.num_layers = 6;  // five sliding layers, then a global one
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.intermediate_size = 48;
  c.query_pre_attn_scalar = 16;
  c.layer_kinds = DefaultLayerKinds(c.architecture, c.num_layers);
  c.sliding_window = 9;
  c.post_norms = true;
  c.qk_norm = true;
  c.rope_theta_global = 1e6;
  c.max_position_embeddings = 128;
  Validate(c, "tiny");
  return c;
}

std::vector<int32_t> RandomTokens(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> id(3, 95);
  std::vector<int32_t> t{2};
  while (static_cast<int64_t>(t.size()) < n) t.push_back(id(rng));
  return t;
}

bool SameBits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data<float>(), b.data<float>(), a.nbytes()) == 0;
}

constexpr int64_t kBlock = 4;

// Hands out pool blocks the way a scheduler might: from the top of the pool down, so a sequence's
// blocks are never consecutive rows.
class Pool {
 public:
  explicit Pool(int64_t blocks) {
    for (int64_t b = 0; b < blocks; ++b) free_[0].push_back(static_cast<int32_t>(b));
    free_[1] = free_[0];
  }
  int32_t Take(KvGroup g) {
    EXPECT_FALSE(free_[g].empty());
    const int32_t b = free_[g].back();
    free_[g].pop_back();
    return b;
  }
  void Give(KvGroup g, int32_t b) { free_[g].insert(free_[g].begin(), b); }
  size_t free(KvGroup g) const { return free_[g].size(); }

 private:
  std::vector<int32_t> free_[2];
};

// Assigns blocks for positions [start, start + n) of `sequence` and gives back the sliding blocks
// no query from `start` on can see.
struct Tables {
  std::vector<int32_t> table[2];
  void Grow(KvCache& cache, Pool& pool, int64_t sequence, int64_t start, int64_t n,
            int64_t window) {
    for (KvGroup g : {kGlobalKv, kSlidingKv}) {
      auto& t = table[g];
      const int64_t first = static_cast<int64_t>(t.size());
      while (static_cast<int64_t>(t.size()) * kBlock < start + n) t.push_back(pool.Take(g));
      cache.Assign(sequence, g, first, {t.data() + first, t.size() - static_cast<size_t>(first)});
    }
    const int64_t keep_from = std::max<int64_t>(0, start - window + 1);
    for (int64_t b = 0; (b + 1) * kBlock <= keep_from; ++b) {
      if (table[kSlidingKv][b] >= 0) pool.Give(kSlidingKv, table[kSlidingKv][b]);
      table[kSlidingKv][b] = -1;
    }
  }
};

TEST(KvPoolTest, ScatteredBlocksAndGivenBackWindowsGiveTheFixedSlotsBits) {
  const ModelConfig c = TinyGemma3();
  GemmaDecoder model(c, RandomGemmaWeights(c, DType::kF32, 5));
  const std::vector<int32_t> tokens = RandomTokens(70, 3);
  KvCache fixed(c, 1, 128, c.num_kv_heads, 0, c.num_layers, Device::Cpu(), kBlock);
  KvPool spec{kBlock, {40, 40}};
  KvCache pooled(c, 2, 128, c.num_kv_heads, 0, c.num_layers, spec);
  Pool pool(40);
  Tables tables;
  // A prompt in pieces, then one token at a time; the other sequence slot stays empty.
  std::vector<std::pair<int64_t, int64_t>> chunks{{0, 13}, {13, 30}};
  for (int64_t p = 30; p < 70; ++p) chunks.push_back({p, p + 1});
  for (const auto& [b, e] : chunks) {
    const SequenceChunk chunk{1, {tokens.begin() + b, tokens.begin() + e}};
    tables.Grow(pooled, pool, 1, b, e - b, c.sliding_window);
    const Tensor want =
        model.Forward({{SequenceChunk{0, chunk.tokens}}}, fixed, LogitRows::kAllTokens);
    const Tensor got = model.Forward({{chunk}}, pooled, LogitRows::kAllTokens);
    ASSERT_TRUE(SameBits(got, want)) << "tokens " << b << ".." << e;
  }
  // 70 positions hold 18 global blocks; the window of 9 needs at most 4 sliding ones.
  EXPECT_EQ(pool.free(kGlobalKv), 40u - 18u);
  EXPECT_GE(pool.free(kSlidingKv), 40u - 4u);
}

TEST(KvPoolTest, ASequencePlacedOnAnotherOnesPrefixBlocksGivesTheBitsOfItsWholePrompt) {
  const ModelConfig c = TinyGemma3();
  GemmaDecoder model(c, RandomGemmaWeights(c, DType::kF32, 5));
  std::vector<int32_t> a = RandomTokens(40, 7), b = a;
  b.resize(24);  // 24 shared positions: six blocks
  const std::vector<int32_t> tail = RandomTokens(15, 8);
  b.insert(b.end(), tail.begin(), tail.end());
  KvPool spec{kBlock, {40, 40}};
  KvCache pooled(c, 2, 128, c.num_kv_heads, 0, c.num_layers, spec);
  Pool pool(40);
  Tables ta;
  ta.Grow(pooled, pool, 0, 0, 40, c.sliding_window);
  model.Forward({{SequenceChunk{0, a}}}, pooled, LogitRows::kLastToken);

  // Sequence 1 takes a's first six global blocks and the sliding blocks its window needs at 24
  // (positions 16..23: blocks 4 and 5, which a kept since Grow gave back only blocks below its
  // start), then computes only its own tokens.
  Tables tb;
  tb.table[kGlobalKv].assign(ta.table[kGlobalKv].begin(), ta.table[kGlobalKv].begin() + 6);
  tb.table[kSlidingKv].assign(ta.table[kSlidingKv].begin(), ta.table[kSlidingKv].begin() + 6);
  for (int i = 0; i < 4; ++i) tb.table[kSlidingKv][i] = -1;  // never read from 24 on
  pooled.Assign(1, kGlobalKv, 0, tb.table[kGlobalKv]);
  pooled.Assign(1, kSlidingKv, 0, tb.table[kSlidingKv]);
  pooled.Place(1, 24);
  tb.Grow(pooled, pool, 1, 24, 15, c.sliding_window);
  const Tensor got = model.Forward({{SequenceChunk{1, tail}}}, pooled, LogitRows::kAllTokens);

  KvCache fixed(c, 1, 128, c.num_kv_heads, 0, c.num_layers, Device::Cpu(), kBlock);
  const Tensor all = model.Forward({{SequenceChunk{0, b}}}, fixed, LogitRows::kAllTokens);
  EXPECT_TRUE(SameBits(got, all.Slice(24, 39)));
}

TEST(KvPoolTest, MissingBlocksAreNamed) {
  const ModelConfig c = TinyGemma3();
  GemmaDecoder model(c, RandomGemmaWeights(c, DType::kF32, 5));
  KvCache pooled(c, 2, 128, c.num_kv_heads, 0, c.num_layers, KvPool{kBlock, {8, 8}});
  try {
    model.Forward({{SequenceChunk{1, RandomTokens(3, 1)}}}, pooled, LogitRows::kLastToken);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "KV cache: sequence 1 has no global block for positions 0..3");
  }
  EXPECT_EQ(pooled.length(1), 0);
  const std::vector<int32_t> one{3};
  pooled.Assign(1, kGlobalKv, 0, one);
  try {
    model.Forward({{SequenceChunk{1, RandomTokens(3, 1)}}}, pooled, LogitRows::kLastToken);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "KV cache: sequence 1 has no sliding block for positions 0..3");
  }
  const std::vector<int32_t> outside{8};
  EXPECT_THROW(pooled.Assign(1, kSlidingKv, 0, outside), Error);
  EXPECT_THROW(pooled.Place(1, 9), Error);  // positions 4..8 have no blocks
  KvCache fixed(c, 1, 16);
  EXPECT_THROW(fixed.Assign(0, kGlobalKv, 0, one), Error);
}

}  // namespace
}  // namespace gemmapod
