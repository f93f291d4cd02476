// Where T5Gemma's parts go: stages of different tensor-parallel widths from explicit degrees and
// from pod files (auto and explicit stage lists), the shard each rank holds, and the layouts the
// model refuses, named.
#include "sharding/t5gemma_layout.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "models/t5gemma/t5gemma_config.h"
#include "models/t5gemma/t5gemma_random.h"
#include "runtime/error.h"
#include "sharding/pod_topology.h"

namespace gemmapod {
namespace {

using ::testing::HasSubstr;

std::string ErrorOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

PodTopology Pod(const std::string& body, int devices) {
  return ParsePodTopology(
      StrCat("version: 1\nnodes:\n  - {host: a, devices: ", devices, ", kind: cpu}\n", body),
      "pod.yaml");
}

TEST(T5GemmaLayout, StagesOfTheirOwnWidthAndTheShardsTheyHold) {
  const T5GemmaConfig c = LoadT5GemmaConfigYaml("configs/models/t5gemma-9b-2b.yaml");
  // The 9B encoder over two stages of 4 ranks, the 2B decoder over one stage of 2.
  const T5GemmaLayout layout = MakeT5GemmaLayout(c, 4, 2, 2, 1);
  ASSERT_EQ(layout.stages.size(), 3u);
  EXPECT_EQ(layout.world_size(), 10);
  EXPECT_EQ(layout.first_decoder_stage(), 2);
  EXPECT_EQ(layout.stages[0].encoder_layers, (LayerRange{0, 21}));
  EXPECT_EQ(layout.stages[1].encoder_layers, (LayerRange{21, 42}));
  EXPECT_EQ(layout.stages[2].decoder_layers, (LayerRange{0, 26}));
  EXPECT_EQ(layout.stages[2].first_rank, 8);
  EXPECT_EQ(layout.StageOf(7), 1);
  EXPECT_EQ(layout.StageOf(9), 2);
  EXPECT_THAT(ErrorOf([&] { layout.StageOf(10); }), HasSubstr("outside its 10 ranks"));

  const T5GemmaShard first = T5GemmaShardOf(c, layout, 1);
  EXPECT_TRUE(first.has_encoder && !first.has_decoder);
  EXPECT_TRUE(first.encoder.has_embedding);
  EXPECT_FALSE(first.encoder.has_head);
  EXPECT_EQ(first.encoder.tp_rank, 1);
  EXPECT_EQ(first.encoder.heads, 4);  // 16 / 4
  const T5GemmaShard last_encoder = T5GemmaShardOf(c, layout, 4);
  EXPECT_FALSE(last_encoder.encoder.has_embedding);
  EXPECT_TRUE(last_encoder.encoder.has_head);  // its final norm
  const T5GemmaShard decoder = T5GemmaShardOf(c, layout, 9);
  EXPECT_TRUE(decoder.has_decoder && !decoder.has_encoder);
  EXPECT_TRUE(decoder.decoder.has_embedding && decoder.decoder.has_head);
  EXPECT_EQ(decoder.decoder.tp_rank, 1);
  EXPECT_EQ(decoder.decoder.heads, 4);  // 8 / 2

  // The last encoder stage holds its final norm but not the embedding: its weights are its layers
  // and one norm, while the first stage carries the 256000 x 3584 table as well.
  const int64_t first_bytes = T5GemmaShardWeightBytes(c, first, 2);
  const int64_t last_bytes = T5GemmaShardWeightBytes(c, last_encoder, 2);
  EXPECT_EQ(first_bytes - last_bytes, 256000 * 3584 / 4 * 2 - 3584 * 4);
}

TEST(T5GemmaLayout, PodFilesPlaceTheStacks) {
  const T5GemmaConfig c = LoadT5GemmaConfigYaml("configs/models/t5gemma-9b-2b.yaml");
  // Auto: the encoder takes the stages its share of the bytes earns (3 of 4 for 9B-2B).
  const T5GemmaLayout automatic = T5GemmaLayoutFromPod(Pod("parallelism: {tp: 1, pp: 4}\n", 4), c);
  EXPECT_EQ(automatic.first_decoder_stage(), 3);
  // pp 1: one stage holds both stacks.
  const T5GemmaLayout one = T5GemmaLayoutFromPod(Pod("parallelism: {tp: 2, pp: 1}\n", 2), c);
  ASSERT_EQ(one.stages.size(), 1u);
  EXPECT_TRUE(one.stages[0].encoder && one.stages[0].decoder);
  // encoder_tp: the encoder stage wider than the decoder's.
  const T5GemmaLayout wide =
      T5GemmaLayoutFromPod(Pod("parallelism: {tp: 2, encoder_tp: 4, pp: 2}\npipeline: {stages: "
                               "auto, encoder_stages: 1}\n",
                               6),
                           c);
  EXPECT_EQ(wide.stages[0].tp, 4);
  EXPECT_EQ(wide.stages[1].tp, 2);
  EXPECT_EQ(wide.stages[1].first_rank, 4);
  // Explicit stages: the pod's ranges, inclusive.
  const T5GemmaLayout listed = T5GemmaLayoutFromPod(
      Pod("parallelism: {tp: 1, pp: 3}\npipeline:\n  stages:\n"
          "    - {part: encoder, layers: [0, 29]}\n    - {part: encoder, layers: [30, 41]}\n"
          "    - {part: decoder, layers: [0, 25]}\n",
          3),
      c);
  EXPECT_EQ(listed.stages[0].encoder_layers, (LayerRange{0, 30}));
  EXPECT_EQ(listed.stages[1].encoder_layers, (LayerRange{30, 42}));
  EXPECT_EQ(listed.stages[2].decoder_layers, (LayerRange{0, 26}));
}

// With dp replicas the pod's layout is one replica's (tp x pp ranks), and the replicas follow
// the process grid's order: stage s of every replica on the same node.
TEST(T5GemmaLayout, DataParallelPodsLayOutOneReplica) {
  const T5GemmaConfig c = LoadT5GemmaConfigYaml("configs/models/t5gemma-9b-2b.yaml");
  const PodTopology pod = Pod("parallelism: {tp: 1, pp: 2, dp: 2}\n", 4);
  const T5GemmaLayout layout = T5GemmaLayoutFromPod(pod, c);
  EXPECT_EQ(layout.world_size(), 2);
  EXPECT_EQ(layout.Describe(), "encoder tp 1 x 1 stage(s) | decoder tp 1 x 1 stage(s)");
  // Ranks 0 and 1 are stage 0 of replicas 0 and 1; ranks 2 and 3 their stage 1.
  const int replica[] = {0, 1, 0, 1}, local[] = {0, 0, 1, 1};
  for (int rank = 0; rank < 4; ++rank) {
    const T5GemmaReplicaRank at = T5GemmaReplicaOf(&pod, rank);
    EXPECT_EQ(at.replica, replica[rank]) << rank;
    EXPECT_EQ(at.rank, local[rank]) << rank;
  }
  EXPECT_EQ(T5GemmaReplicaOf(nullptr, 3).rank, 3);
}

TEST(T5GemmaLayout, RefusedLayoutsAreNamed) {
  const T5GemmaConfig c = LoadT5GemmaConfigYaml("configs/models/t5gemma-9b-2b.yaml");
  EXPECT_THAT(ErrorOf([&] { MakeT5GemmaLayout(c, 3, 1, 1, 1); }),
              HasSubstr("encoder tp: tp 3 does not divide the 16 query heads"));
  EXPECT_THAT(ErrorOf([&] { MakeT5GemmaLayout(c, 1, 1, 16, 1); }),
              HasSubstr("decoder tp: tp 16 does not divide the 8 query heads"));
  EXPECT_THAT(ErrorOf([&] { MakeT5GemmaLayout(c, 2, 0, 1, 1); }),
              HasSubstr("give the encoder stages of its own"));
  EXPECT_THAT(ErrorOf([&] { MakeT5GemmaLayout(c, 1, 1, 1, 27); }),
              HasSubstr("decoder: 27 stage(s) for 26 layers"));
  // A gap in the encoder's layers (the pod file's own check).
  EXPECT_THAT(ErrorOf([&] {
                T5GemmaLayoutFromPod(Pod("parallelism: {tp: 1, pp: 3}\npipeline:\n  stages:\n"
                                         "    - {part: encoder, layers: [0, 19]}\n"
                                         "    - {part: encoder, layers: [21, 41]}\n"
                                         "    - {part: decoder, layers: [0, 25]}\n",
                                         3),
                                     c);
              }),
              HasSubstr("encoder layers must continue at layer 20 after stage 0, got 21"));
  // Not covering the decoder.
  EXPECT_THAT(ErrorOf([&] {
                T5GemmaLayoutFromPod(Pod("parallelism: {tp: 1, pp: 2}\npipeline:\n  stages:\n"
                                         "    - {part: encoder, layers: [0, 41]}\n"
                                         "    - {part: decoder, layers: [0, 24]}\n",
                                         2),
                                     c);
              }),
              HasSubstr("must cover the encoder's 42 layers and the decoder's 26 layers"));
}

// Random weights made for one rank are that rank's slices of the whole random model, so every
// layout of a random checkpoint holds the same model.
TEST(T5GemmaLayout, RandomShardsAreSlicesOfTheWholeRandomModel) {
  const T5GemmaConfig c = LoadT5GemmaConfigYaml("configs/models/tiny-t5gemma.yaml");
  const T5GemmaWeights whole = RandomT5GemmaWeights(c, DType::kF32, 5);
  const T5GemmaLayout layout = MakeT5GemmaLayout(c, 2, 1, 1, 1);
  auto rows_equal = [](const Tensor& part, const Tensor& full, int64_t first_row) {
    const int64_t n = part.numel();
    return std::equal(part.data<float>(), part.data<float>() + n,
                      full.data<float>() + first_row * part.dim(part.rank() - 1));
  };
  const T5GemmaShard encoder_rank1 = T5GemmaShardOf(c, layout, 1);
  const T5GemmaWeights mine = RandomT5GemmaShard(c, encoder_rank1, DType::kF32, 5);
  // Query heads 3..5 of 6 (16 wide) and vocabulary rows 256..511.
  EXPECT_TRUE(
      rows_equal(mine.encoder.layers[0].q_proj.weight, whole.encoder.layers[0].q_proj.weight, 48));
  EXPECT_TRUE(rows_equal(mine.encoder.embed_tokens.weight, whole.encoder.embed_tokens.weight, 256));
  EXPECT_FALSE(mine.decoder.embed_tokens.weight.defined());
  const T5GemmaWeights decoder =
      RandomT5GemmaShard(c, T5GemmaShardOf(c, layout, 2), DType::kF32, 5);
  EXPECT_TRUE(rows_equal(decoder.cross[2].k_proj.weight, whole.cross[2].k_proj.weight, 0));
  EXPECT_TRUE(rows_equal(decoder.cross[2].pre_norm, whole.cross[2].pre_norm, 0));
  // Another seed, another model.
  const T5GemmaWeights other = RandomT5GemmaWeights(c, DType::kF32, 6);
  EXPECT_FALSE(rows_equal(other.cross[2].k_proj.weight, whole.cross[2].k_proj.weight, 0));
}

}  // namespace
}  // namespace gemmapod
