// Training stages of a decoder-only Gemma are balanced by the work of a step: each layer's matrix
// elements, and the tied head's vocabulary x width on the last stage. Gemma 3 270M's head
// (262144 x 640) outweighs its 18 layers, so the last of two stages keeps one layer; with a
// small vocabulary the layers split evenly.
#include <gtest/gtest.h>

#include "models/gemma/model_config_yaml.h"
#include "sharding/gemma_layout.h"

namespace gemmapod {
namespace {

TEST(GemmaTrainingStages, TheHeadCountsOnTheLastStage) {
  const ModelConfig c = LoadModelConfigYaml("configs/models/gemma3-270m.yaml");
  const std::vector<LayerRange> two = GemmaTrainingStageLayers(c, 2);
  EXPECT_EQ(two, (std::vector<LayerRange>{{0, 17}, {17, 18}}));
  // Inference balances bytes instead: the embedding on the first stage weighs as much as the
  // head on the last, and the layers split evenly.
  EXPECT_EQ(GemmaStageLayers(c, 1, 2, 4, nullptr), (std::vector<LayerRange>{{0, 9}, {9, 18}}));

  ModelConfig small = c;
  small.vocab_size = 512;
  const std::vector<LayerRange> even = GemmaTrainingStageLayers(small, 3);
  EXPECT_EQ(even, (std::vector<LayerRange>{{0, 6}, {6, 12}, {12, 18}}));
}

}  // namespace
}  // namespace gemmapod
