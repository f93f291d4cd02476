// Shards: which heads, key/value heads, MLP columns and vocabulary rows each tensor-parallel rank
// holds; the ranks' random shards put back together are the whole model's random weights; the
// splits that cannot work are refused with the reason; a stage's KV cache holds only its layers.
#include "models/gemma/gemma_shard.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "models/gemma/gemma_checkpoint.h"
#include "models/gemma/gemma_random.h"
#include "models/layers/kv_cache.h"
#include "tests/error_of.h"
#include "tests/small_gemma_config.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

ModelConfig Config(int64_t heads, int64_t kv_heads, int64_t vocab) {
  return SmallGemma2Config("shard-test", {vocab, 32, 3, heads, kv_heads, 8, 48});
}

TEST(GemmaShard, KeyValueHeadsSplitOrFollowTheirQueryHeads) {
  // 4 key/value heads over tp 2: two each.
  const ModelConfig split = Config(8, 4, 100);
  for (int r = 0; r < 2; ++r) {
    const GemmaShard s = MakeGemmaShard(split, 2, r, 0, 3, true, true);
    EXPECT_EQ(s.heads, 4);
    EXPECT_EQ(s.kv_heads, 2);
    EXPECT_EQ(s.kv_head_begin, 2 * r);
  }
  // 2 key/value heads over tp 4: query heads 0-3 read head 0, 4-7 read head 1.
  const ModelConfig shared = Config(8, 2, 100);
  for (int r = 0; r < 4; ++r) {
    const GemmaShard s = MakeGemmaShard(shared, 4, r, 0, 3, true, true);
    EXPECT_EQ(s.heads, 2);
    EXPECT_EQ(s.kv_heads, 1);
    EXPECT_EQ(s.kv_head_begin, r / 2) << r;
  }
}

TEST(GemmaShard, TheVocabularyIsPaddedToTheRanks) {
  const ModelConfig c = Config(4, 1, 509);
  int64_t covered = 0;
  for (int r = 0; r < 4; ++r) {
    const GemmaShard s = MakeGemmaShard(c, 4, r, 0, 3, true, true);
    EXPECT_EQ(s.vocab_rows, 128);
    EXPECT_EQ(s.vocab_begin, 128 * r);
    EXPECT_EQ(s.vocab_valid, r < 3 ? 128 : 125);
    covered += s.vocab_valid;
  }
  EXPECT_EQ(covered, 509);
}

TEST(GemmaShard, AVocabularySmallerThanThePaddedOneLeavesRanksWithOnlyPadding) {
  const ModelConfig c = Config(4, 1, 5);  // 5 ids over 4 ranks: 2 rows each
  const int64_t valid[] = {2, 2, 1, 0};
  for (int r = 0; r < 4; ++r) {
    const GemmaShard s = MakeGemmaShard(c, 4, r, 0, 3, true, true);
    EXPECT_EQ(s.vocab_rows, 2);
    EXPECT_EQ(s.vocab_begin, 2 * r);
    EXPECT_EQ(s.vocab_valid, valid[r]);
    const GemmaWeights w = RandomGemmaShard(c, s, DType::kF32, 1);
    ASSERT_EQ(w.embed_tokens.weight.shape(), (Shape{2, 32}));
    for (int64_t i = valid[r] * 32; i < 64; ++i)
      ASSERT_EQ(w.embed_tokens.weight.data<float>()[i], 0.0f);
  }
}

TEST(GemmaShard, ShardsPutTogetherAreTheWholeModel) {
  const ModelConfig c = Config(8, 2, 509);
  const GemmaWeights whole = RandomGemmaWeights(c, DType::kF32, 3);
  const int tp = 4;
  std::vector<GemmaWeights> shards;
  for (int r = 0; r < tp; ++r) {
    shards.push_back(
        RandomGemmaShard(c, MakeGemmaShard(c, tp, r, 0, 3, true, true), DType::kF32, 3));
  }
  const int64_t d = c.hidden_size, hd = c.head_dim;
  for (int r = 0; r < tp; ++r) {
    const GemmaLayerWeights& w = shards[static_cast<size_t>(r)].layers[1];
    const GemmaLayerWeights& full = whole.layers[1];
    // q_proj rows: heads 2r, 2r+1.
    EXPECT_EQ(0, std::memcmp(w.q_proj.weight.data<float>(),
                             full.q_proj.weight.data<float>() + 2 * r * hd * d,
                             w.q_proj.weight.nbytes()));
    // k_proj rows: key/value head r / 2.
    EXPECT_EQ(0, std::memcmp(w.k_proj.weight.data<float>(),
                             full.k_proj.weight.data<float>() + (r / 2) * hd * d,
                             w.k_proj.weight.nbytes()));
    // down_proj columns [12r, 12r + 12).
    for (int64_t row = 0; row < d; ++row) {
      EXPECT_EQ(0, std::memcmp(w.down_proj.weight.data<float>() + row * 12,
                               full.down_proj.weight.data<float>() + row * 48 + 12 * r, 12 * 4));
    }
    // Embedding rows [128r, ...), zero past the vocabulary.
    const Tensor& e = shards[static_cast<size_t>(r)].embed_tokens.weight;
    ASSERT_EQ(e.dim(0), 128);
    const int64_t valid = r < 3 ? 128 : 125;
    EXPECT_EQ(0, std::memcmp(e.data<float>(), whole.embed_tokens.weight.data<float>() + 128 * r * d,
                             static_cast<size_t>(valid * d * 4)));
    for (int64_t i = valid * d; i < 128 * d; ++i) ASSERT_EQ(e.data<float>()[i], 0.0f);
    // Norms are whole on every rank.
    EXPECT_EQ(0, std::memcmp(w.attn_norm.data<float>(), full.attn_norm.data<float>(), d * 4));
  }
}

TEST(GemmaShard, AStageHoldsOnlyItsLayersAndParts) {
  const ModelConfig c = Config(8, 2, 100);
  const GemmaShard middle = MakeGemmaShard(c, 2, 0, 1, 2, false, false);
  const GemmaWeights w = RandomGemmaShard(c, middle, DType::kBF16, 1);
  EXPECT_FALSE(w.layers[0].q_proj.weight.defined());
  EXPECT_FALSE(w.layers[2].down_proj.weight.defined());
  EXPECT_EQ(w.layers[1].q_proj.weight.shape(), (Shape{4 * 8, 32}));
  EXPECT_FALSE(w.embed_tokens.weight.defined());
  EXPECT_FALSE(w.final_norm.defined());
  EXPECT_LT(GemmaShardWeightBytes(c, middle, 2), GemmaShardWeightBytes(c, WholeGemma(c), 2) / 3);
}

TEST(GemmaShard, SplitsThatCannotWorkAreRefused) {
  EXPECT_THAT(ErrorOf([] { MakeGemmaShard(Config(6, 2, 100), 4, 0, 0, 3, true, true); }),
              HasSubstr("tp 4 does not divide the 6 query heads of shard-test"));
  EXPECT_THAT(ErrorOf([] { MakeGemmaShard(Config(12, 6, 100), 4, 0, 0, 3, true, true); }),
              HasSubstr("tp 4 neither divides nor is a multiple of the 6 key/value heads"));
  ModelConfig odd_mlp = Config(8, 2, 100);
  odd_mlp.intermediate_size = 50;
  EXPECT_THAT(ErrorOf([&] { MakeGemmaShard(odd_mlp, 4, 0, 0, 3, true, true); }),
              HasSubstr("tp 4 does not divide the MLP width 50"));
}

// Loading the whole model reads whole tensors, so the file's checksums are checked: a flipped
// byte in a matrix is an error naming it, not different logits.
TEST(GemmaShard, ADamagedMatrixIsCaughtByItsChecksum) {
  const ModelConfig c = Config(8, 2, 100);
  GemmaWeights w = RandomGemmaWeights(c, DType::kF32, 4);
  const fs::path path =
      fs::temp_directory_path() / ("shard-crc-" + std::to_string(getpid()) + ".h5");
  SaveGemmaCheckpoint(path.string(), c, w, std::nullopt);
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const Tensor& q = w.layers[1].q_proj.weight;
  const size_t at = bytes.find(std::string(static_cast<const char*>(q.raw()), 256));
  ASSERT_NE(at, std::string::npos);
  bytes[at + 100] ^= 0x01;
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  EXPECT_THAT(ErrorOf([&] { LoadGemmaCheckpoint(path.string()); }),
              HasSubstr("tensor 'model.layers.1.self_attn.q_proj.weight': checksum mismatch"));
  fs::remove(path);
}

TEST(GemmaShard, AStagesCacheHoldsOnlyItsLayers) {
  const ModelConfig c = Config(8, 2, 100);
  KvCache stage(c, 1, 16, 1, 1, 3);
  EXPECT_EQ(stage.bytes(), KvCache::BytesFor(c, 1, 16, 1, 1, 3));
  EXPECT_LT(stage.bytes(), KvCache(c, 1, 16).bytes());
  stage.Layer(0, 2);
  EXPECT_THAT(ErrorOf([&] { stage.Layer(0, 0); }), HasSubstr("layer 0 is not held here"));
}

}  // namespace
}  // namespace gemmapod
