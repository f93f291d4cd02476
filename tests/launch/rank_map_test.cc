#include "launch/rank_map.h"

#include <gtest/gtest.h>

namespace gemmapod {
namespace {

TEST(RankMap, ExplicitEncoderDecoderStages) {
  const PodTopology pod = ParsePodTopology(R"(
version: 1
nodes:
  - {host: enc, devices: 2, kind: gpu}
  - {host: dec, devices: 2, kind: gpu}
parallelism: {tp: 2, pp: 2, dp: 1}
pipeline:
  stages:
    - {part: encoder, layers: [0, 25]}
    - {part: decoder, layers: [0, 25]}
)",
                                           "t5.yaml");
  EXPECT_EQ(RenderRankMap(pod),
            "rank  host  device    dp  pp  tp  stage\n"
            "   0  enc   cuda:0     0   0   0  0: encoder layers 0-25\n"
            "   1  enc   cuda:1     0   0   1  0: encoder layers 0-25\n"
            "   2  dec   cuda:0     0   1   0  1: decoder layers 0-25\n"
            "   3  dec   cuda:1     0   1   1  1: decoder layers 0-25\n");
  EXPECT_NE(RenderPodSummary(pod).find("2 node(s), 4 gpu device(s); tp=2 pp=2 dp=1"),
            std::string::npos)
      << RenderPodSummary(pod);
}

TEST(RankMap, DataParallelReplicasSitBetweenTpAndPp) {
  const PodTopology pod = ParsePodTopology(R"(
version: 1
nodes: [{host: h, devices: 8, kind: cpu}]
parallelism: {tp: 2, pp: 2, dp: -1}
)",
                                           "p.yaml");
  const std::string map = RenderRankMap(pod);
  // rank 2: dp=1 pp=0 tp=0; rank 4: dp=0 pp=1 tp=0
  EXPECT_NE(map.find("   2  h     cpu:2      1   0   0  0: decoder layers auto\n"),
            std::string::npos)
      << map;
  EXPECT_NE(map.find("   4  h     cpu:4      0   1   0  1: decoder layers auto\n"),
            std::string::npos)
      << map;
}

}  // namespace
}  // namespace gemmapod
