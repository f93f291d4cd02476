// Samplers: greedy is the argmax; sampled frequencies follow the tempered softmax; top-k, top-p
// and min-p never yield a token they exclude; the repetition penalty moves the argmax when it
// should; the same seed gives the same tokens; bad settings name their field.
#include "serving/sampler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "runtime/error.h"

namespace gemmapod {
namespace {

using ::testing::HasSubstr;

const std::vector<float> kLogits = {1.0f, 3.0f, 2.5f, -1.0f, 0.5f, 3.0f, 2.0f, 0.0f};

std::vector<int> Counts(SamplingParams p, int draws, const std::vector<int32_t>& context = {}) {
  Sampler s(p);
  std::vector<int> counts(kLogits.size(), 0);
  for (int i = 0; i < draws; ++i) ++counts[static_cast<size_t>(s.Sample(kLogits, context))];
  return counts;
}

TEST(Sampler, GreedyTakesTheFirstLargest) {
  Sampler s(SamplingParams{});
  EXPECT_EQ(s.Sample(kLogits, {}), 1);  // 1 and 5 tie at 3.0: the first wins
}

TEST(Sampler, FrequenciesFollowTheTemperedSoftmax) {
  SamplingParams p;
  p.temperature = 0.7f;
  p.seed = 1;
  const int draws = 200000;
  const std::vector<int> counts = Counts(p, draws);
  double z = 0;
  for (float l : kLogits) z += std::exp(l / 0.7);
  for (size_t i = 0; i < kLogits.size(); ++i) {
    const double expected = std::exp(kLogits[i] / 0.7) / z;
    const double sigma = std::sqrt(expected * (1 - expected) / draws);
    // Five standard errors (plus a floor for the rare tokens): fails on a wrong distribution,
    // not on chance.
    EXPECT_NEAR(counts[i] / double(draws), expected, 5 * sigma + 1e-4) << "token " << i;
  }
}

TEST(Sampler, TopKKeepsOnlyTheKLargest) {
  SamplingParams p;
  p.temperature = 5.0f;  // flat: every token would show up without the cut
  p.top_k = 3;
  const std::vector<int> counts = Counts(p, 5000);
  const std::set<size_t> allowed = {1, 5, 2};
  for (size_t i = 0; i < counts.size(); ++i) {
    if (allowed.count(i))
      EXPECT_GT(counts[i], 0) << i;
    else
      EXPECT_EQ(counts[i], 0) << i;
  }
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingP) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.5f;  // probabilities: 3.0, 3.0 hold ~0.26 each, so two tokens reach 0.5
  const std::vector<int> counts = Counts(p, 5000);
  for (size_t i = 0; i < counts.size(); ++i) {
    if (i == 1 || i == 5)
      EXPECT_GT(counts[i], 0) << i;
    else
      EXPECT_EQ(counts[i], 0) << i;
  }
  p.top_p = 1e-6f;  // always at least one token
  EXPECT_EQ(Counts(p, 100)[1], 100);
}

TEST(Sampler, MinPDropsTokensFarBelowTheTop) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.min_p = 0.5f;  // keep p >= 0.5 p_max: logits >= 3.0 - ln 2 = 2.31
  const std::vector<int> counts = Counts(p, 5000);
  for (size_t i = 0; i < counts.size(); ++i) {
    if (kLogits[i] >= 3.0f - std::log(2.0f))
      EXPECT_GT(counts[i], 0) << i;
    else
      EXPECT_EQ(counts[i], 0) << i;
  }
}

TEST(Sampler, RepetitionPenaltyMovesTheArgmax) {
  SamplingParams p;
  p.repetition_penalty = 1.5f;
  Sampler s(p);
  // 1 and 5 (3.0) seen: 3.0 / 1.5 = 2.0 < 2.5, so token 2 wins.
  EXPECT_EQ(s.Sample(kLogits, std::vector<int32_t>{1, 5, 5}), 2);
  // Negative logits are multiplied, never made more likely.
  const std::vector<float> negative = {-1.0f, -1.2f};
  EXPECT_EQ(s.Sample(negative, std::vector<int32_t>{0}), 1);
}

TEST(Sampler, SameSeedSameTokens) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 9;
  Sampler a(p), b(p);
  std::vector<int32_t> ta, tb;
  for (int i = 0; i < 50; ++i) {
    ta.push_back(a.Sample(kLogits, {}));
    tb.push_back(b.Sample(kLogits, {}));
  }
  EXPECT_EQ(ta, tb);
}

TEST(Sampler, BadSettingsNameTheirField) {
  auto error_of = [](SamplingParams p) -> std::string {
    try {
      Validate(p);
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  SamplingParams p;
  p.temperature = -1;
  EXPECT_THAT(error_of(p), HasSubstr("temperature"));
  p = {};
  p.top_p = 0;
  EXPECT_THAT(error_of(p), HasSubstr("top_p"));
  p = {};
  p.min_p = 1;
  EXPECT_THAT(error_of(p), HasSubstr("min_p"));
  p = {};
  p.top_k = -2;
  EXPECT_THAT(error_of(p), HasSubstr("top_k"));
  p = {};
  p.repetition_penalty = NAN;
  EXPECT_THAT(error_of(p), HasSubstr("repetition_penalty"));
  Sampler s(SamplingParams{});
  const std::vector<float> nan = {0.0f, NAN};
  EXPECT_THROW(s.Sample(nan, {}), Error);
}

}  // namespace
}  // namespace gemmapod
