// Samplers: greedy is the argmax; sampled frequencies follow the tempered softmax; top-k, top-p
// and min-p never yield a token they exclude (also at Gemma 3's vocabulary of 262144); the
// repetition penalty moves the argmax when it should; the same seed gives the same tokens; bad
// settings and bad logits are errors naming what is wrong.
#include "serving/sampler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <set>

#include "runtime/error.h"
#include "serving/shard_sampler.h"
#include "tests/error_of.h"

namespace gemmapod {
namespace {

using ::testing::HasSubstr;

constexpr float kInf = std::numeric_limits<float>::infinity();
const std::vector<float> kLogits = {1.0f, 3.0f, 2.5f, -1.0f, 0.5f, 3.0f, 2.0f, 0.0f};

std::vector<int> Counts(SamplingParams p, int draws, const std::vector<float>& logits = kLogits,
                        const std::vector<int32_t>& context = {}) {
  Sampler s(p);
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < draws; ++i) ++counts[static_cast<size_t>(s.Sample(logits, context))];
  return counts;
}

// Expects counts[i] > 0 exactly for the ids in `allowed`.
void ExpectDrawnExactly(const std::vector<int>& counts, const std::set<size_t>& allowed) {
  for (size_t i = 0; i < counts.size(); ++i) {
    if (allowed.count(i)) {
      EXPECT_GT(counts[i], 0) << "token " << i << " should be drawn";
    } else {
      EXPECT_EQ(counts[i], 0) << "token " << i << " is excluded";
    }
  }
}

TEST(Sampler, GreedyTakesTheFirstLargest) {
  Sampler s(SamplingParams{});
  EXPECT_EQ(s.Sample(kLogits, {}), 1);  // 1 and 5 tie at 3.0: the first wins
  const std::vector<float> masked = {-kInf, -kInf, -5.0f};
  EXPECT_EQ(s.Sample(masked, {}), 2);
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
    // Tolerance: five standard errors of a binomial frequency, plus 1e-4 for the rarest tokens.
    // A wrong distribution (say temperature 1 instead of 0.7) misses by far more.
    EXPECT_NEAR(counts[i] / double(draws), expected, 5 * sigma + 1e-4) << "token " << i;
  }
}

TEST(Sampler, MaskedTokensAreNeverDrawn) {
  // Several of the sampler's blocks of ids, most masked with -inf; the three left have
  // probabilities 1/7, 2/7 and 4/7 (the last one in the final, partial block).
  std::vector<float> logits(5000, -kInf);
  logits[10] = 0.0f;
  logits[2500] = std::log(2.0f);
  logits[4999] = std::log(4.0f);
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 5;
  const int draws = 20000;
  const std::vector<int> counts = Counts(p, draws, logits);
  ExpectDrawnExactly(counts, {10, 2500, 4999});
  // Tolerance: five binomial standard errors (at most 0.018 here).
  for (auto [id, expected] : {std::pair{10, 1 / 7.0}, {2500, 2 / 7.0}, {4999, 4 / 7.0}}) {
    const double sigma = std::sqrt(expected * (1 - expected) / draws);
    EXPECT_NEAR(counts[static_cast<size_t>(id)] / double(draws), expected, 5 * sigma) << id;
  }
}

TEST(Sampler, TopKKeepsOnlyTheKLargest) {
  SamplingParams p;
  p.temperature = 5.0f;  // flat: every token would show up without the cut
  p.top_k = 3;
  ExpectDrawnExactly(Counts(p, 5000), {1, 5, 2});
  p.top_k = 1;  // as Hugging Face's top-k: every id tied with the k-th score stays
  ExpectDrawnExactly(Counts(p, 1000), {1, 5});
  p.top_k = 100;  // more than the vocabulary: off
  ExpectDrawnExactly(Counts(p, 20000), {0, 1, 2, 3, 4, 5, 6, 7});
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingP) {
  SamplingParams p;
  p.temperature = 1.0f;
  // Probabilities at temperature 1: the two 3.0 logits 0.307 each, 2.5 0.186, 2.0 0.113, ...
  p.top_p = 0.5f;  // the two 3.0 logits reach it
  ExpectDrawnExactly(Counts(p, 5000), {1, 5});
  p.top_p = 0.65f;  // ... and need 2.5 to reach 0.65
  ExpectDrawnExactly(Counts(p, 5000), {1, 5, 2});
  p.top_p = 1e-6f;  // always at least one token
  ExpectDrawnExactly(Counts(p, 100), {1});
  // Top-k first: within the best 4 the 3.0 logits hold 0.336 each, so two reach 0.65.
  p.top_p = 0.65f;
  p.top_k = 4;
  ExpectDrawnExactly(Counts(p, 5000), {1, 5});
}

// The nucleus by a full sort in double precision: the smallest best-first set of ids whose
// probability reaches top_p.
std::set<size_t> NucleusBySorting(const std::vector<float>& logits, double top_p) {
  std::vector<size_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return logits[a] > logits[b]; });
  double total = 0;
  for (float l : logits) total += std::exp(double(l) - logits[order[0]]);
  std::set<size_t> kept;
  double reached = 0;
  for (size_t id : order) {
    kept.insert(id);
    reached += std::exp(double(logits[id]) - logits[order[0]]);
    if (reached >= top_p * total) {
      // Not decided by rounding: the set without its last token falls clearly short.
      EXPECT_LT(reached - std::exp(double(logits[id]) - logits[order[0]]), top_p * total * 0.999);
      break;
    }
  }
  return kept;
}

// About 80 tokens in the nucleus: beyond the sampler's first guess of 64, so the whole
// vocabulary is partitioned. Each token in or just outside the nucleus has probability >= 0.007
// per draw, so in 4000 draws every kept one shows up and a one-token error at the boundary too.
TEST(Sampler, TopPOverManyTokensKeepsExactlyTheNucleus) {
  std::vector<float> logits(4096);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = float(int(i * 7919 % 2001) - 1000) / 1000;
  for (int r = 0; r < 100; ++r) logits[size_t(r) * 37 + 5] = 10.0f - 0.01f * float(r);
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.86f;
  p.seed = 7;
  const std::set<size_t> nucleus = NucleusBySorting(logits, p.top_p);
  ASSERT_GT(nucleus.size(), 70u);
  ASSERT_LT(nucleus.size(), 90u);
  ExpectDrawnExactly(Counts(p, 4000, logits), nucleus);
}

TEST(Sampler, MinPDropsTokensFarBelowTheTop) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.min_p = 0.5f;  // keep p >= 0.5 p_max: logits >= 3.0 - ln 2 = 2.31
  ExpectDrawnExactly(Counts(p, 5000), {1, 2, 5});
  p.temperature = 2.0f;  // tempered first: logits >= 3.0 - 2 ln 2 = 1.61
  ExpectDrawnExactly(Counts(p, 5000), {1, 2, 5, 6});
  p.top_p = 0.4f;  // top-p (keeps 1, 5) before min-p
  ExpectDrawnExactly(Counts(p, 5000), {1, 5});
}

// At Gemma 3's vocabulary: 1000 tied tokens at logit 5 scattered over 262144 zeros. Top-p 0.3
// keeps the lowest ids of the tie until 0.3 of the mass, several hundred tokens: more than the
// sampler's first round of candidates, so its growing rounds must agree with a full sort.
TEST(Sampler, LargeVocabularyCutsAgreeWithAFullSort) {
  const size_t vocab = 262144;
  std::vector<float> logits(vocab, 0.0f);
  std::vector<size_t> tied;
  for (size_t i = 0; i < 1000; ++i) tied.push_back(i * 257 + 11);
  for (size_t id : tied) logits[id] = 5.0f;
  const double e5 = std::exp(5.0);
  const double mass = 1000 * e5 + (vocab - 1000);
  const size_t nucleus = static_cast<size_t>(std::ceil(0.3 * mass / e5));
  ASSERT_GT(nucleus, 700u);
  ASSERT_LT(nucleus, 900u);

  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.3f;
  p.seed = 3;
  const int draws = 300;  // each draw scans the whole vocabulary: keep the test fast
  const std::vector<int> counts = Counts(p, draws, logits);
  int beyond_first_rounds = 0;  // the rounds of 64 and 512 candidates fell short of 0.3
  for (size_t rank = 0; rank < tied.size(); ++rank) {
    if (rank >= nucleus) {
      EXPECT_EQ(counts[tied[rank]], 0) << "rank " << rank;
    }
    if (rank >= 512 && rank < nucleus) beyond_first_rounds += counts[tied[rank]];
  }
  int total_in_tie = 0;
  for (size_t id : tied) total_in_tie += counts[id];
  EXPECT_EQ(total_in_tie, draws);  // nothing outside the tie
  EXPECT_GT(beyond_first_rounds, 0);

  p.top_p = 1.0f;
  p.top_k = 40;  // as Hugging Face's top-k: all 1000 tied with the 40th stay, nothing else
  const std::vector<int> top_k = Counts(p, draws, logits);
  int in_top_k = 0, beyond_40 = 0;
  for (size_t rank = 0; rank < tied.size(); ++rank) {
    in_top_k += top_k[tied[rank]];
    if (rank >= 40) beyond_40 += top_k[tied[rank]];
  }
  EXPECT_EQ(in_top_k, draws);
  EXPECT_GT(beyond_40, 0);

  p.top_k = 0;
  p.min_p = 0.5f;  // only the tie (exp(-5) < 0.5)
  const std::vector<int> min_p = Counts(p, draws, logits);
  int in_tie = 0;
  for (size_t id : tied) in_tie += min_p[id];
  EXPECT_EQ(in_tie, draws);
}

TEST(Sampler, ExtremePenaltyNeverPicksAMaskedToken) {
  // A penalty far below 1 once overflowed a logit to +inf and made every weight NaN.
  std::vector<float> logits(3000, 1.0f);
  logits[0] = -std::numeric_limits<float>::infinity();
  logits[5] = 10.0f;
  SamplingParams p;
  p.temperature = 1.0f;
  p.repetition_penalty = 1e-38f;
  Sampler s(p);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(s.Sample(logits, std::vector<int32_t>{5}), 5);
}

TEST(Sampler, RepetitionPenaltyMovesTheArgmax) {
  SamplingParams p;
  p.repetition_penalty = 1.5f;
  Sampler s(p);
  EXPECT_EQ(s.Sample(kLogits, {}), 1);
  // 1 and 5 (3.0) seen: 3.0 / 1.5 = 2.0 < 2.5, so token 2 wins.
  EXPECT_EQ(s.Sample(kLogits, std::vector<int32_t>{1, 5, 5}), 2);
  // Negative logits are multiplied, so a seen one becomes less likely too.
  const std::vector<float> negative = {-1.0f, -1.2f};
  EXPECT_EQ(s.Sample(negative, std::vector<int32_t>{0}), 1);
  // A token seen three times is penalised once: 2.0 / 1.5 = 1.33 stays above 1.3.
  const std::vector<float> close = {2.0f, 1.3f};
  EXPECT_EQ(s.Sample(close, std::vector<int32_t>{0, 0, 0}), 0);
  // And the penalty applies to the call it was given for only.
  EXPECT_EQ(s.Sample(kLogits, {}), 1);
}

TEST(Sampler, SameSeedSameTokens) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 9;
  Sampler a(p), b(p);
  p.seed = 10;
  Sampler c(p);
  std::vector<int32_t> ta, tb, tc;
  for (int i = 0; i < 50; ++i) {
    ta.push_back(a.Sample(kLogits, {}));
    tb.push_back(b.Sample(kLogits, {}));
    tc.push_back(c.Sample(kLogits, {}));
  }
  EXPECT_EQ(ta, tb);
  EXPECT_NE(ta, tc);
}

TEST(Sampler, BadSettingsNameTheirField) {
  auto error_of = [](SamplingParams p) { return ErrorOf([&] { Validate(p); }); };
  SamplingParams p;
  EXPECT_EQ(error_of(p), "(no error)");
  p.temperature = -1;
  EXPECT_THAT(error_of(p), HasSubstr("temperature"));
  p = {};
  p.temperature = NAN;
  EXPECT_THAT(error_of(p), HasSubstr("temperature"));
  p = {};
  p.top_p = 0;
  EXPECT_THAT(error_of(p), HasSubstr("top_p"));
  p = {};
  p.top_p = 1.5f;
  EXPECT_THAT(error_of(p), HasSubstr("top_p"));
  p = {};
  p.min_p = 1;
  EXPECT_THAT(error_of(p), HasSubstr("min_p"));
  p = {};
  p.min_p = NAN;
  EXPECT_THAT(error_of(p), HasSubstr("min_p"));
  p = {};
  p.top_k = -2;
  EXPECT_THAT(error_of(p), HasSubstr("top_k"));
  p = {};
  p.repetition_penalty = 0;
  EXPECT_THAT(error_of(p), HasSubstr("repetition_penalty"));
  p = {};
  p.repetition_penalty = NAN;
  EXPECT_THAT(error_of(p), HasSubstr("repetition_penalty"));
  p = {};
  p.top_p = 0;
  EXPECT_THROW(Sampler{p}, Error);  // the constructor validates too
}

TEST(Sampler, BadLogitsAreErrors) {
  for (float temperature : {0.0f, 1.0f}) {
    SamplingParams p;
    p.temperature = temperature;
    Sampler s(p);
    EXPECT_THAT(ErrorOf([&] {
                  s.Sample(std::vector<float>{0.0f, NAN}, {});
                }),
                HasSubstr("logit of token 1 is nan"));
    EXPECT_THAT(ErrorOf([&] {
                  s.Sample(std::vector<float>{kInf, 0.0f}, {});
                }),
                HasSubstr("logit of token 0 is inf"));
    EXPECT_THAT(ErrorOf([&] {
                  s.Sample(std::vector<float>{-kInf, -kInf}, {});
                }),
                HasSubstr("every logit is -inf"));
    EXPECT_THAT(ErrorOf([&] { s.Sample(std::vector<float>{}, {}); }), HasSubstr("empty logits"));
  }
  SamplingParams p;
  p.repetition_penalty = 1.2f;
  Sampler s(p);
  EXPECT_THAT(ErrorOf([&] {
                s.Sample(kLogits, std::vector<int32_t>{0, 8});
              }),
              HasSubstr("context token 8 (position 1) is outside the 8 logits"));
  // The failed call left no marks behind: id 0 is not penalised in the next one.
  const std::vector<float> close = {2.0f, 1.9f};
  EXPECT_EQ(s.Sample(close, {}), 0);
}

// OpenAI's presence and frequency penalties: l - presence - frequency x count, for the ids of
// this shard that were generated (each once, however often it repeats).
TEST(OccurrencePenalties, LowerEachGeneratedIdByPresencePlusFrequencyTimesCount) {
  std::vector<float> shard = {1.0f, 2.0f, 3.0f, 4.0f};  // ids 10..13
  const std::vector<int32_t> generated = {11, 13, 13, 13, 99, 5};
  ApplyOccurrencePenalties(shard, 10, generated, 0.5f, 0.25f);
  EXPECT_FLOAT_EQ(shard[0], 1.0f);
  EXPECT_FLOAT_EQ(shard[1], 2.0f - 0.5f - 0.25f);
  EXPECT_FLOAT_EQ(shard[2], 3.0f);
  EXPECT_FLOAT_EQ(shard[3], 4.0f - 0.5f - 0.75f);
  // Negative values encourage repetition.
  std::vector<float> other = {0.0f};
  ApplyOccurrencePenalties(other, 7, std::vector<int32_t>{7, 7}, -1.0f, -0.5f);
  EXPECT_FLOAT_EQ(other[0], 2.0f);
}

TEST(OccurrencePenalties, TheShardSamplerAppliesThemToGeneratedTokensOnly) {
  SamplingParams p;
  p.presence_penalty = 2.0f;
  ShardSampler sampler(p, nullptr);
  const std::vector<float> logits = {0.0f, 5.0f, 4.0f};
  // The prompt holds id 1: not penalised, so the greedy choice stays 1.
  std::vector<int32_t> context = {1};
  EXPECT_EQ(sampler.Sample(logits, 0, 3, context), 1);
  // Once 1 has been generated it is penalised by 2 and 2 wins.
  context.push_back(1);
  EXPECT_EQ(sampler.Sample(logits, 0, 3, context), 2);
}

TEST(OccurrencePenalties, OutOfRangeValuesAreRefusedAndTheOneRankSamplerRefusesThem) {
  SamplingParams p;
  p.presence_penalty = 2.5f;
  EXPECT_THAT(ErrorOf([&] { Validate(p); }), testing::HasSubstr("presence_penalty"));
  p.presence_penalty = 0.0f;
  p.frequency_penalty = std::nanf("");
  EXPECT_THAT(ErrorOf([&] { Validate(p); }), testing::HasSubstr("frequency_penalty"));
  p.frequency_penalty = 1.0f;
  EXPECT_THAT(ErrorOf([&] { Sampler s(p); }), testing::HasSubstr("pipeline's sampler"));
}

}  // namespace
}  // namespace gemmapod
