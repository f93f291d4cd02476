// Stage balancing: contiguous ranges of at least one layer, the heaviest stage as light as it can
// be (checked against every possible cut), the embedding and head counted on the first and last
// stages; a pod's explicit ranges checked against the model.
#include "sharding/stage_plan.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "tests/error_of.h"

namespace gemmapod {
namespace {

using ::testing::HasSubstr;

int64_t Heaviest(const std::vector<int64_t>& bytes, const std::vector<LayerRange>& r,
                 int64_t first_extra, int64_t last_extra) {
  int64_t worst = 0;
  for (size_t s = 0; s < r.size(); ++s) {
    int64_t c = 0;
    for (int64_t l = r[s].first; l < r[s].end; ++l) c += bytes[static_cast<size_t>(l)];
    if (s == 0) c += first_extra;
    if (s + 1 == r.size()) c += last_extra;
    worst = std::max(worst, c);
  }
  return worst;
}

// The best heaviest stage over every way to cut `bytes` into `stages` non-empty ranges.
int64_t BruteForce(const std::vector<int64_t>& bytes, int stages, int64_t first_extra,
                   int64_t last_extra) {
  const int64_t L = static_cast<int64_t>(bytes.size());
  int64_t best = INT64_MAX;
  std::vector<LayerRange> r(static_cast<size_t>(stages));
  std::function<void(int, int64_t)> cut = [&](int s, int64_t first) {
    if (s == stages - 1) {
      r[static_cast<size_t>(s)] = {first, L};
      best = std::min(best, Heaviest(bytes, r, first_extra, last_extra));
      return;
    }
    for (int64_t end = first + 1; end <= L - (stages - 1 - s); ++end) {
      r[static_cast<size_t>(s)] = {first, end};
      cut(s + 1, end);
    }
  };
  cut(0, 0);
  return best;
}

TEST(StagePlan, BalancesAgainstEveryPossibleCut) {
  const std::vector<std::vector<int64_t>> models = {
      {5, 5, 5, 5, 5, 5, 5}, {1, 9, 2, 8, 3, 7, 4, 6}, {10, 1, 1, 1, 1, 1, 1, 10}};
  for (const auto& bytes : models) {
    for (int stages = 1; stages <= 4; ++stages) {
      for (auto [first, last] : {std::pair<int64_t, int64_t>{0, 0}, {12, 12}, {30, 3}}) {
        const std::vector<LayerRange> r = BalanceStages(bytes, stages, first, last);
        ASSERT_EQ(r.size(), static_cast<size_t>(stages));
        EXPECT_EQ(r.front().first, 0);
        EXPECT_EQ(r.back().end, static_cast<int64_t>(bytes.size()));
        for (size_t s = 0; s < r.size(); ++s) {
          EXPECT_LT(r[s].first, r[s].end);
          if (s > 0) {
            EXPECT_EQ(r[s].first, r[s - 1].end);
          }
        }
        EXPECT_EQ(Heaviest(bytes, r, first, last), BruteForce(bytes, stages, first, last))
            << "stages " << stages << " extras " << first << "/" << last;
      }
    }
  }
}

TEST(StagePlan, AHeavyEmbeddingMovesLayersOffTheFirstStage) {
  const std::vector<int64_t> layers(8, 10);
  const std::vector<LayerRange> r = BalanceStages(layers, 2, 40, 0);
  EXPECT_EQ(r[0], (LayerRange{0, 2}));
  EXPECT_EQ(r[1], (LayerRange{2, 8}));
}

TEST(StagePlan, MoreStagesThanLayersIsRefused) {
  EXPECT_THAT(ErrorOf([] { BalanceStages(std::vector<int64_t>(3, 1), 4, 0, 0); }),
              HasSubstr("4 stages but the model has only 3 layers"));
}

TEST(StagePlan, ExplicitStagesMustCoverTheModel) {
  PodTopology pod;
  pod.source = "pod.yaml";
  pod.pp = 2;
  pod.pipeline.automatic = false;
  pod.pipeline.stages = {{StackPart::kDecoder, 0, 1}, {StackPart::kDecoder, 2, 4}};
  const std::vector<int64_t> five(5, 1), seven(7, 1), four(4, 1);
  const std::vector<LayerRange> r = DecoderStages(pod, "m", five, 0, 0);
  EXPECT_EQ(r[0], (LayerRange{0, 2}));
  EXPECT_EQ(r[1], (LayerRange{2, 5}));
  EXPECT_THAT(ErrorOf([&] { DecoderStages(pod, "m", seven, 0, 0); }),
              HasSubstr("pod.yaml: pipeline.stages: the last stage ends at layer 4 but m has "
                        "layers 0..6"));
  EXPECT_THAT(ErrorOf([&] { DecoderStages(pod, "m", four, 0, 0); }),
              HasSubstr("pod.yaml: pipeline.stages[1]: layers [2, 4] but m has layers 0..3"));
  pod.pipeline.encoder_stages = 1;
  EXPECT_THAT(ErrorOf([&] { DecoderStages(pod, "m", five, 0, 0); }),
              HasSubstr("encoder stage(s) but m is decoder-only"));
}

}  // namespace
}  // namespace gemmapod
