// Sampling on vocabulary shards (run under mpiexec; each rank holds an equal slice of a padded
// row): greedy is the argmax of the whole row, lowest id on ties; sampling without top-k is
// exactly the one-rank sampler on the gathered row; top-k draws only the row's top-k (ties
// included) with the tempered softmax's frequencies, draw for draw as the one-rank sampler; every
// rank gets the same token; the repetition penalty applies to ids on every shard; a rank whose
// shard is all padding takes part.
#include "serving/shard_sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <tuple>

#include "models/gemma/gemma_shard.h"
#include "runtime/comm/mpi_communicator.h"
#include "tests/small_gemma_config.h"

namespace gemmapod {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

class ShardSamplerTest : public ::testing::Test {
 protected:
  ShardSamplerTest() : world_(MpiCommunicator::World()) {}

  // A row of `vocab` logits, padded to a multiple of the ranks; this rank's slice.
  void MakeRow(int64_t vocab, uint32_t seed) {
    row_.assign(static_cast<size_t>(vocab), 0.0f);
    uint32_t x = seed;
    for (float& v : row_) {
      x = x * 1664525u + 1013904223u;
      v = static_cast<float>(x >> 8) / 16777216.0f * 8.0f - 4.0f;
    }
    // The slice of the vocabulary the model's shards give this rank.
    // 12 heads divide over 2, 3 and 4 ranks.
    const ModelConfig c = SmallGemma2Config("sampler-test", {vocab, 8, 1, 12, 1, 4, 24});
    const GemmaShard shard = MakeGemmaShard(c, world_->size(), world_->rank(), 0, 1, true, true);
    width_ = shard.vocab_rows;
    begin_ = shard.vocab_begin;
    shard_.assign(static_cast<size_t>(width_), -kInf);
    for (int64_t i = 0; i < width_ && begin_ + i < vocab; ++i) {
      shard_[static_cast<size_t>(i)] = row_[static_cast<size_t>(begin_ + i)];
    }
  }

  // Every rank drew the same token.
  void ExpectAgreed(int32_t token) {
    Tensor t = Tensor::Empty({1}, DType::kI32);
    t.data<int32_t>()[0] = token;
    Tensor lo = t.Clone(), hi = t.Clone();
    world_->AllReduce(lo, ReduceOp::kMin);
    world_->AllReduce(hi, ReduceOp::kMax);
    EXPECT_EQ(lo.data<int32_t>()[0], hi.data<int32_t>()[0]) << "ranks drew different tokens";
  }

  std::unique_ptr<MpiCommunicator> world_;
  std::vector<float> row_, shard_;
  int64_t width_ = 0, begin_ = 0;
};

TEST_F(ShardSamplerTest, GreedyIsTheArgmaxOfTheWholeRow) {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    MakeRow(1003, seed);
    if (seed % 2 == 0) {
      // A tie across shards: the lower id wins, as on one rank.
      row_[900] = row_[10] = 50.0f;
      MakeRow(1003, seed);
      row_[900] = row_[10] = 50.0f;
      for (int64_t i = 0; i < width_ && begin_ + i < 1003; ++i) {
        shard_[static_cast<size_t>(i)] = row_[static_cast<size_t>(begin_ + i)];
      }
    }
    ShardSampler sampler({}, world_.get());
    const int32_t got = sampler.Sample(shard_, begin_, 1003, {});
    Sampler one({});
    EXPECT_EQ(got, one.Sample(row_, {})) << "seed " << seed;
    ExpectAgreed(got);
  }
}

TEST_F(ShardSamplerTest, SamplingWithoutTopKIsTheOneRankSampler) {
  MakeRow(1003, 7);
  SamplingParams p;
  p.temperature = 0.8f;
  p.top_p = 0.9f;
  p.min_p = 0.01f;
  p.repetition_penalty = 1.3f;
  p.seed = 42;
  const std::vector<int32_t> context = {3, 500, 1002, 3};
  ShardSampler sharded(p, world_.get());
  Sampler one(p);
  for (int i = 0; i < 200; ++i) {
    const int32_t got = sharded.Sample(shard_, begin_, 1003, context);
    ASSERT_EQ(got, one.Sample(row_, context)) << "draw " << i;
    ExpectAgreed(got);
  }
}

TEST_F(ShardSamplerTest, TopKDrawsTheTopKWithTheirProbabilities) {
  MakeRow(1003, 11);
  SamplingParams p;
  p.temperature = 1.5f;
  p.top_k = 5;
  p.seed = 9;
  // The row's top 5 and their tempered softmax.
  std::vector<int32_t> ids(row_.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::partial_sort(ids.begin(), ids.begin() + 5, ids.end(),
                    [&](int32_t a, int32_t b) { return row_[a] > row_[b]; });
  std::map<int32_t, double> want;
  double sum = 0;
  for (int k = 0; k < 5; ++k) sum += std::exp((row_[ids[k]] - row_[ids[0]]) / 1.5);
  for (int k = 0; k < 5; ++k) want[ids[k]] = std::exp((row_[ids[k]] - row_[ids[0]]) / 1.5) / sum;

  ShardSampler sampler(p, world_.get());
  std::map<int32_t, int> counts;
  const int draws = 4000;
  for (int i = 0; i < draws; ++i) ++counts[sampler.Sample(shard_, begin_, 1003, {})];
  for (const auto& [id, n] : counts) {
    ASSERT_TRUE(want.count(id)) << "drew " << id << ", outside the top 5";
  }
  for (const auto& [id, prob] : want) {
    // Four standard deviations of a binomial count.
    const double sd = std::sqrt(draws * prob * (1 - prob));
    EXPECT_NEAR(counts[id], draws * prob, 4 * sd + 1) << "id " << id;
  }
  ExpectAgreed(static_cast<int32_t>(counts.size()));
}

// Top-k over shards draws exactly what the one-rank sampler draws with the same seed: whether the
// sampled ids span every shard or sit on one, with ties at the k-th score across shards, and with
// top-p, min-p and the penalty on top.
TEST_F(ShardSamplerTest, TopKIsDrawForDrawTheOneRankSampler) {
  for (int64_t sampled : {int64_t{1003}, int64_t{20}, int64_t{300}}) {
    MakeRow(1003, 5);
    // Ties at what becomes the k-th score, on ids that live on different ranks.
    row_[2] = row_[700] = row_[999] = 3.9f;
    row_[5] = 4.5f;
    for (int64_t i = 0; i < width_ && begin_ + i < 1003; ++i) {
      shard_[static_cast<size_t>(i)] = row_[static_cast<size_t>(begin_ + i)];
    }
    for (auto [k, top_p, min_p] : {std::tuple{5, 1.0f, 0.0f}, std::tuple{2, 1.0f, 0.0f},
                                   std::tuple{8, 0.7f, 0.0f}, std::tuple{6, 1.0f, 0.2f}}) {
      SamplingParams p;
      p.temperature = 1.3f;
      p.top_k = k;
      p.top_p = top_p;
      p.min_p = min_p;
      p.repetition_penalty = 1.1f;
      p.seed = 0x100000007ull;
      const std::vector<int32_t> context = {5, 2, 3};
      ShardSampler sharded(p, world_.get());
      Sampler one(p);
      const std::span<const float> row(row_.data(), static_cast<size_t>(sampled));
      for (int i = 0; i < 100; ++i) {
        const int32_t got = sharded.Sample(shard_, begin_, sampled, context);
        ASSERT_EQ(got, one.Sample(row, context))
            << "sampled " << sampled << " k " << k << " draw " << i;
      }
    }
  }
}

// Fewer ids than the padded vocabulary: with 5 ids over 4 ranks (2 each), the last rank holds
// only padding. Every sampler still works and agrees with one rank.
TEST_F(ShardSamplerTest, ARankWithOnlyPaddingTakesPart) {
  MakeRow(5, 13);
  for (float temperature : {0.0f, 0.9f}) {
    for (int top_k : {0, 3}) {
      SamplingParams p;
      p.temperature = temperature;
      p.top_k = top_k;
      p.seed = 21;
      ShardSampler sharded(p, world_.get());
      Sampler one(p);
      for (int i = 0; i < 50; ++i) {
        const int32_t got = sharded.Sample(shard_, begin_, 5, {});
        ASSERT_EQ(got, one.Sample(row_, {})) << "temperature " << temperature << " k " << top_k;
      }
    }
  }
}

TEST_F(ShardSamplerTest, TheRepetitionPenaltyReachesEveryShard) {
  // The top id sits on the last rank's shard; penalised, the runner-up on rank 0 wins.
  MakeRow(1003, 3);
  std::fill(row_.begin(), row_.end(), 0.0f);
  row_[1000] = 4.0f;
  row_[1] = 3.0f;
  for (int64_t i = 0; i < width_ && begin_ + i < 1003; ++i) {
    shard_[static_cast<size_t>(i)] = row_[static_cast<size_t>(begin_ + i)];
  }
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  ShardSampler sampler(p, world_.get());
  EXPECT_EQ(sampler.Sample(shard_, begin_, 1003, {}), 1000);
  EXPECT_EQ(sampler.Sample(shard_, begin_, 1003, std::vector<int32_t>{1000}), 1);
  // Ids past the sampled range are never drawn, whatever their logit.
  EXPECT_EQ(sampler.Sample(shard_, begin_, 1000, {}), 1);
}

// Log-probabilities from the shards equal the log-softmax of the whole row (over the sampled
// ids) computed in double, with the top ids best first and ties going to the lower id; the token
// asked about may sit on any rank's shard.
TEST_F(ShardSamplerTest, LogProbsAreTheWholeRowsLogSoftmax) {
  const int64_t vocab = 1000, sampled = 990;  // ids 990.. are never sampled: left out
  for (uint32_t seed : {3u, 4u}) {
    MakeRow(vocab, seed);
    row_[17] = row_[601] = 9.0f;  // a tie at the top, on different ranks' shards (2+ ranks)
    for (int64_t i = 0; i < width_ && begin_ + i < vocab; ++i) {
      shard_[static_cast<size_t>(i)] = row_[static_cast<size_t>(begin_ + i)];
    }
    double top = -1e30, sum = 0;
    for (int64_t i = 0; i < sampled; ++i) top = std::max(top, double{row_[static_cast<size_t>(i)]});
    for (int64_t i = 0; i < sampled; ++i) sum += std::exp(row_[static_cast<size_t>(i)] - top);
    const double log_z = top + std::log(sum);
    for (int32_t token : {17, 601, 5, 989}) {
      const TokenLogProbs lp = ShardLogProbs(shard_, begin_, sampled, token, 4, world_.get());
      EXPECT_NEAR(lp.logprob, row_[static_cast<size_t>(token)] - log_z, 2e-5) << token;
      ASSERT_EQ(lp.top.size(), 4u);
      EXPECT_EQ(lp.top[0].first, 17);
      EXPECT_EQ(lp.top[1].first, 601);
      for (size_t j = 0; j < 4; ++j) {
        EXPECT_NEAR(lp.top[j].second, row_[static_cast<size_t>(lp.top[j].first)] - log_z, 2e-5);
        if (j > 0) {
          EXPECT_LE(lp.top[j].second, lp.top[j - 1].second);
        }
      }
    }
  }
  // k = 0: the token's alone.
  EXPECT_TRUE(ShardLogProbs(shard_, begin_, sampled, 3, 0, world_.get()).top.empty());
}

}  // namespace
}  // namespace gemmapod
