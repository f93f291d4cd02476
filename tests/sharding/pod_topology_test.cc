// Pod files: the shipped configs parse to the values they document, and every kind of bad pod
// file fails with one line that starts "<file>:<line>:<column>: <key>:" (docs/pod-file.md).
#include "sharding/pod_topology.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "runtime/error.h"

namespace gemmapod {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// The message of the Error that loading `path` throws ("" when it loads).
std::string LoadError(const std::string& path) {
  try {
    LoadPodTopology(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string ParseError(const std::string& yaml) {
  try {
    ParsePodTopology(yaml, "inline.yaml");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(PodTopology, LocalIsTwoCpuRanksWithTensorParallelism) {
  const PodTopology pod = LoadPodTopology("configs/pods/local.yaml");
  EXPECT_EQ(pod.source, "configs/pods/local.yaml");
  EXPECT_EQ(pod.name, "local");
  ASSERT_EQ(pod.nodes.size(), 1u);
  EXPECT_EQ(pod.nodes[0].host, "localhost");
  EXPECT_EQ(pod.nodes[0].devices, 2);
  EXPECT_EQ(pod.nodes[0].kind, DeviceType::kCpu);
  EXPECT_EQ(pod.nodes[0].memory_gib, 24);
  EXPECT_EQ(pod.world_size(), 2);
  EXPECT_EQ(pod.device_type(), DeviceType::kCpu);
  EXPECT_EQ(pod.tp, 2);
  EXPECT_EQ(pod.pp, 1);
  EXPECT_EQ(pod.dp, 1);  // -1 resolved: 2 / (2 x 1)
  EXPECT_TRUE(pod.pipeline.automatic);
  EXPECT_EQ(pod.interconnect.intra_node.type, "shared-memory");
  EXPECT_FALSE(pod.launch.oversubscribe);
}

TEST(PodTopology, LocalFourIsAnOversubscribedTwoByTwoGrid) {
  const PodTopology pod = LoadPodTopology("configs/pods/local-4.yaml");
  ASSERT_EQ(pod.nodes.size(), 1u);
  EXPECT_EQ(pod.nodes[0].host, "localhost");
  EXPECT_EQ(pod.world_size(), 4);
  EXPECT_EQ(pod.tp, 2);
  EXPECT_EQ(pod.pp, 2);
  EXPECT_EQ(pod.dp, 1);
  EXPECT_TRUE(pod.launch.oversubscribe);
  EXPECT_EQ(pod.launch.mpirun_args, (std::vector<std::string>{"--mca", "btl", "self,vader"}));
}

TEST(PodTopology, TwoByEightH100KeepsTensorParallelismInsideANode) {
  const PodTopology pod = LoadPodTopology("configs/pods/2x8-h100.yaml");
  ASSERT_EQ(pod.nodes.size(), 2u);
  for (const PodNode& node : pod.nodes) {
    EXPECT_EQ(node.devices, 8);
    EXPECT_EQ(node.kind, DeviceType::kGpu);
    EXPECT_EQ(node.model, "H100-80GB");
    EXPECT_EQ(node.device_memory_gib, 80);
  }
  EXPECT_EQ(pod.nodes[0].host, "gpu-a0");
  EXPECT_EQ(pod.nodes[1].host, "gpu-a1");
  EXPECT_EQ(pod.world_size(), 16);
  EXPECT_EQ(pod.device_type(), DeviceType::kGpu);
  EXPECT_EQ(pod.tp, 8);
  EXPECT_EQ(pod.pp, 2);
  EXPECT_EQ(pod.dp, 1);
  EXPECT_EQ(pod.interconnect.intra_node.type, "nvlink");
  EXPECT_EQ(pod.interconnect.inter_node.type, "infiniband");
  EXPECT_EQ(pod.interconnect.inter_node.gbps, 400);
  EXPECT_EQ(pod.interconnect.env.at("NCCL_IB_HCA"), "mlx5");
  EXPECT_TRUE(pod.pipeline.automatic);
  // Stage 0 (ranks 0-7) on the first node, stage 1 (ranks 8-15) on the second.
  EXPECT_EQ(pod.node_of_rank(7), 0);
  EXPECT_EQ(pod.node_of_rank(8), 1);
  EXPECT_EQ(pod.local_device_of_rank(8), 0);
  EXPECT_EQ(pod.local_device_of_rank(15), 7);
}

TEST(PodTopology, TpuV5e16IsFourHostsOfFourChips) {
  const PodTopology pod = LoadPodTopology("configs/pods/tpu-v5e-16.yaml");
  ASSERT_EQ(pod.nodes.size(), 4u);
  for (const PodNode& node : pod.nodes) {
    EXPECT_EQ(node.devices, 4);
    EXPECT_EQ(node.kind, DeviceType::kTpu);
    EXPECT_EQ(node.device_memory_gib, 16);
  }
  EXPECT_EQ(pod.world_size(), 16);
  EXPECT_EQ(pod.device_type(), DeviceType::kTpu);
  EXPECT_EQ(pod.tp, 4);
  EXPECT_EQ(pod.pp, 1);
  EXPECT_EQ(pod.dp, 4);  // -1 resolved: 16 / (4 x 1)
  EXPECT_EQ(pod.interconnect.intra_node.type, "ici");
  EXPECT_EQ(pod.interconnect.inter_node.type, "dcn");
}

TEST(PodTopology, MinimalFileTakesTheDefaults) {
  const PodTopology pod =
      ParsePodTopology("version: 1\nnodes:\n  - {host: a, devices: 3, kind: cpu}\n", "inline.yaml");
  EXPECT_EQ(pod.source, "inline.yaml");
  EXPECT_EQ(pod.name, "");
  EXPECT_EQ(pod.tp, 1);
  EXPECT_EQ(pod.pp, 1);
  EXPECT_EQ(pod.dp, 3);  // dp defaults to -1: everything is data parallel
  EXPECT_TRUE(pod.pipeline.automatic);
  EXPECT_EQ(pod.pipeline.encoder_stages, 0);
  EXPECT_EQ(pod.interconnect.intra_node.type, "");
  EXPECT_FALSE(pod.launch.oversubscribe);
  EXPECT_TRUE(pod.launch.mpirun_args.empty());
}

TEST(PodTopology, DpMinusOneFillsWhatTpAndPpLeave) {
  const PodTopology pod = ParsePodTopology(
      "version: 1\n"
      "nodes:\n"
      "  - {host: a, devices: 8, kind: gpu}\n"
      "  - {host: b, devices: 8, kind: gpu}\n"
      "  - {host: c, devices: 8, kind: gpu}\n"
      "parallelism: {tp: 4, pp: 2, dp: -1}\n",
      "inline.yaml");
  EXPECT_EQ(pod.world_size(), 24);
  EXPECT_EQ(pod.dp, 3);
}

TEST(PodTopology, RanksFillNodesInFileOrder) {
  const PodTopology pod = ParsePodTopology(
      "version: 1\n"
      "nodes:\n"
      "  - {host: a, devices: 2, kind: cpu}\n"
      "  - {host: b, devices: 4, kind: cpu}\n"
      "  - {host: c, devices: 2, kind: cpu}\n"
      "parallelism: {tp: 2}\n",
      "inline.yaml");
  ASSERT_EQ(pod.world_size(), 8);
  const int expected_node[] = {0, 0, 1, 1, 1, 1, 2, 2};
  const int expected_local[] = {0, 1, 0, 1, 2, 3, 0, 1};
  for (int rank = 0; rank < 8; ++rank) {
    EXPECT_EQ(pod.node_of_rank(rank), expected_node[rank]) << "rank " << rank;
    EXPECT_EQ(pod.local_device_of_rank(rank), expected_local[rank]) << "rank " << rank;
  }
  EXPECT_THROW(pod.node_of_rank(8), Error);
  EXPECT_THROW(pod.local_device_of_rank(-1), Error);
}

TEST(PodTopology, ExplicitEncoderDecoderStages) {
  const PodTopology pod = ParsePodTopology(
      "version: 1\n"
      "nodes: [{host: a, devices: 4, kind: cpu}]\n"
      "parallelism: {tp: 1, pp: 4}\n"
      "pipeline:\n"
      "  stages:\n"
      "    - {part: encoder, layers: [0, 13]}\n"
      "    - {part: encoder, layers: [14, 26]}\n"
      "    - {part: decoder, layers: [0, 13]}\n"
      "    - {layers: [14, 26]}\n",  // part defaults to decoder
      "inline.yaml");
  EXPECT_FALSE(pod.pipeline.automatic);
  EXPECT_EQ(pod.pipeline.encoder_stages, 2);
  ASSERT_EQ(pod.pipeline.stages.size(), 4u);
  EXPECT_EQ(pod.pipeline.stages[1].part, StackPart::kEncoder);
  EXPECT_EQ(pod.pipeline.stages[1].first_layer, 14);
  EXPECT_EQ(pod.pipeline.stages[1].last_layer, 26);
  EXPECT_EQ(pod.pipeline.stages[3].part, StackPart::kDecoder);
  EXPECT_EQ(pod.pipeline.stages[3].first_layer, 14);
}

TEST(PodTopology, AutoStagesWithEncoderStages) {
  const PodTopology pod = ParsePodTopology(
      "version: 1\n"
      "nodes: [{host: a, devices: 4, kind: cpu}]\n"
      "parallelism: {pp: 4}\n"
      "pipeline: {stages: auto, encoder_stages: 1}\n",
      "inline.yaml");
  EXPECT_TRUE(pod.pipeline.automatic);
  EXPECT_EQ(pod.pipeline.encoder_stages, 1);
  EXPECT_TRUE(pod.pipeline.stages.empty());
}

TEST(PodTopology, ScalarsFollowYaml) {
  const PodTopology pod = ParsePodTopology(
      "version: 1\n"
      "nodes: [{host: 10, devices: +2, kind: gpu, memory_gib: 1.5e3, device_memory_gib: 80}]\n"
      "launch: {oversubscribe: yes}\n",
      "inline.yaml");
  EXPECT_EQ(pod.nodes[0].host, "10");
  EXPECT_EQ(pod.nodes[0].devices, 2);
  EXPECT_EQ(pod.nodes[0].memory_gib, 1500);
  EXPECT_TRUE(pod.launch.oversubscribe);
}

TEST(PodTopology, MissingFileNamesThePathAndTheReason) {
  const std::string message = LoadError("tests/sharding/bad_pods/no_such_file.yaml");
  EXPECT_THAT(message, StartsWith("tests/sharding/bad_pods/no_such_file.yaml: cannot read"));
  EXPECT_THAT(message, HasSubstr("No such file"));
}

TEST(PodTopology, DirectoryIsNotAPodFile) {
  EXPECT_THAT(LoadError("tests/sharding/bad_pods"), HasSubstr("is a directory"));
  // A device would be read forever; only regular files are configuration files.
  EXPECT_THAT(LoadError("/dev/zero"), StartsWith("/dev/zero: cannot read pod file: not a regular"));
}

TEST(PodTopology, InlineTextIsNamedBySource) {
  EXPECT_THAT(ParseError("version: 1\nnodes: []\n"), StartsWith("inline.yaml:2:8: nodes: "));
  EXPECT_THAT(ParseError(""), StartsWith("inline.yaml:1:1: "));
}

TEST(PodTopology, OutOfRangeIntegerIsRejected) {
  EXPECT_THAT(ParseError("version: 99999999999\n"),
              StartsWith("inline.yaml:1:10: version: integer out of range"));
  EXPECT_THAT(ParseError("version: 1\n"
                         "nodes:\n"
                         "  - {host: a, devices: 2147483647, kind: cpu}\n"
                         "  - {host: b, devices: 1, kind: cpu}\n"),
              StartsWith("inline.yaml:4:5: nodes[1]: the nodes up to this one hold 2147483648"));
}

// One bad pod file per kind of mistake: tests/sharding/bad_pods/<name>.yaml.
struct BadPod {
  const char* name;
  const char* where;   // "<line>:<column>: <key path>:" that the message must start with
  const char* phrase;  // what the message must say
};

void PrintTo(const BadPod& bad, std::ostream* out) { *out << bad.name; }

class BadPodFile : public ::testing::TestWithParam<BadPod> {};

TEST_P(BadPodFile, FailsWithOneLineNamingFileLineAndKey) {
  const BadPod& bad = GetParam();
  const std::string path = std::string("tests/sharding/bad_pods/") + bad.name + ".yaml";
  const std::string message = LoadError(path);
  ASSERT_FALSE(message.empty()) << path << " loaded without an error";
  EXPECT_THAT(message, StartsWith(path + ":" + bad.where)) << message;
  EXPECT_THAT(message, HasSubstr(bad.phrase));
  EXPECT_EQ(message.find('\n'), std::string::npos) << "not one line: " << message;
}

const BadPod kBadPods[] = {
    // The document itself.
    {"syntax_error", "3:1: YAML syntax error", "end of sequence flow not found"},
    {"empty_file", "1:1: the pod file is empty", "version: 1"},
    // yaml-cpp's LoadAll looped forever on this, memory growing.
    {"lone_comma", "1:1: YAML syntax error", "the text holds no YAML value"},
    {"two_documents", "4:1: a second YAML document", "put everything in one document"},
    {"bad_host_name", "3:12: nodes[0].host:", "is not a host name or address"},
    {"top_level_list", "1:1: expected a mapping", "got a list"},
    // Missing required keys point at the mapping that lacks them.
    {"missing_version", "1:1: version:", "missing required key"},
    {"missing_nodes", "1:1: nodes:", "missing required key"},
    {"missing_host", "3:5: nodes[0].host:", "missing required key"},
    {"missing_devices", "3:5: nodes[0].devices:", "missing required key"},
    {"missing_kind", "3:5: nodes[0].kind:", "missing required key"},
    {"missing_layers", "9:7: pipeline.stages[0].layers:", "missing required key"},
    {"missing_link_type", "7:15: interconnect.intra_node.type:", "missing required key"},
    // Unknown and repeated keys, at every level.
    {"unknown_top_key",
     "6:1: parallelsim:", "unknown key; allowed keys here: version, name, nodes"},
    {"unknown_node_key", "6:5: nodes[0].gpus:", "unknown key; allowed keys here: host, devices"},
    {"unknown_parallelism_key", "8:3: parallelism.cp:", "allowed keys here: tp, pp, dp"},
    {"unknown_link_key", "7:45: interconnect.inter_node.hcas:", "allowed keys here: type, gbps"},
    {"unknown_stage_key", "9:39: pipeline.stages[0].embed:", "allowed keys here: part, layers"},
    {"unknown_launch_key", "8:3: launch.np:", "allowed keys here: oversubscribe, mpirun_args"},
    {"duplicate_key", "6:5: nodes[0].devices:", "key repeated (first at line 4)"},
    // Wrong types.
    {"devices_not_int", "4:14: nodes[0].devices:", "expected an integer, got 'two'"},
    {"tp_not_int", "7:7: parallelism.tp:", "expected an integer, got '1.5'"},
    {"oversubscribe_not_bool",
     "7:18: launch.oversubscribe:", "expected true or false, got 'maybe'"},
    {"nodes_not_list", "3:3: nodes:", "expected a list, got a mapping"},
    {"host_not_string", "3:11: nodes[0].host:", "expected a string, got a list"},
    {"memory_not_number", "6:17: nodes[0].memory_gib:", "expected a number, got 'lots'"},
    {"mpirun_args_not_list", "7:16: launch.mpirun_args:", "expected a list"},
    {"env_not_map", "7:8: interconnect.env:", "expected a mapping of keys, got a list"},
    {"stages_not_list", "7:11: pipeline.stages:", "expected auto or a list of stages"},
    {"layers_not_pair", "9:31: pipeline.stages[0].layers:", "expected [first, last]"},
    // Values outside their set or range.
    {"bad_kind", "5:11: nodes[0].kind:", "unknown value 'fpga'; expected one of cpu, gpu, tpu"},
    {"bad_link_type", "7:22: interconnect.intra_node.type:", "unknown value 'tcp'"},
    {"bad_part", "9:14: pipeline.stages[0].part:", "expected one of encoder, decoder"},
    {"version_2", "1:10: version:", "unsupported pod file version 2"},
    {"devices_zero", "4:14: nodes[0].devices:", "must be >= 1, got 0"},
    {"empty_node_list", "2:8: nodes:", "at least one node"},
    {"empty_host", "3:11: nodes[0].host:", "must not be empty"},
    {"memory_zero", "6:17: nodes[0].memory_gib:", "must be > 0"},
    {"device_memory_on_cpu", "6:24: nodes[0].device_memory_gib:", "gpu and tpu nodes only"},
    {"env_bad_name", "8:5: interconnect.env.NCCL-DEBUG:", "not a valid environment variable"},
    {"tp_zero", "7:7: parallelism.tp:", "must be >= 1, got 0"},
    {"pp_zero", "7:7: parallelism.pp:", "must be >= 1, got 0"},
    {"dp_zero", "7:7: parallelism.dp:", "must be >= 1, or -1"},
    {"dp_below_minus_one", "7:7: parallelism.dp:", "got -2"},
    // Relationships between nodes.
    {"duplicate_host", "5:12: nodes[2].host:", "duplicate host 'a' (first listed at line 3)"},
    {"mixed_kinds", "4:33: nodes[1].kind:", "differs from kind 'gpu' of node 'a' (line 3)"},
    // Degrees against the nodes.
    {"tp_not_dividing_node",
     "6:7: parallelism.tp:", "tp (4) does not divide the 6 devices of node 'b' (line 4)"},
    {"degrees_not_world",
     "9:7: parallelism.dp:", "tp (2) x pp (1) x dp (3) = 6 but the nodes hold 4 devices"},
    {"dp_fill_not_divisible",
     "9:7: parallelism.dp:", "the nodes hold 6 devices, not a multiple of tp (2) x pp (4) = 8"},
    {"dp_fill_not_divisible_implicit", "8:7: parallelism.pp:", "dp -1 cannot fill the pod"},
    // Pipeline layout.
    {"stage_count_not_pp", "9:5: pipeline.stages:", "lists 3 stage(s) but parallelism.pp is 2"},
    {"layers_reversed",
     "10:16: pipeline.stages[1].layers:", "first layer (19) is after last layer (10)"},
    {"layers_negative", "9:17: pipeline.stages[0].layers[0]:", "must be >= 0, got -1"},
    {"first_stage_not_layer_zero",
     "9:16: pipeline.stages[0].layers:", "the first decoder stage must start at layer 0, got 1"},
    {"layers_gap",
     "10:16: pipeline.stages[1].layers:", "continue at layer 10 after stage 0, got 11 (a gap)"},
    {"layers_overlap", "10:16: pipeline.stages[1].layers:", "got 9 (an overlap)"},
    {"encoder_after_decoder",
     "11:14: pipeline.stages[2].part:", "encoder stage after decoder stage 1"},
    {"encoder_stages_with_list", "11:19: pipeline.encoder_stages:", "only applies to stages: auto"},
    {"encoder_stages_too_many",
     "9:19: pipeline.encoder_stages:", "must be in [0, pp) = [0, 2), got 2"},
    {"encoder_stages_negative", "8:19: pipeline.encoder_stages:", "got -1"},
};

INSTANTIATE_TEST_SUITE_P(EveryKind, BadPodFile, ::testing::ValuesIn(kBadPods),
                         [](const ::testing::TestParamInfo<BadPod>& info) {
                           return std::string(info.param.name);
                         });

}  // namespace
}  // namespace gemmapod

namespace gemmapod {
namespace {

// An encoder-decoder pod whose encoder stages have their own tensor parallelism.
TEST(PodTopology, EncoderTpGivesTheEncoderStagesTheirOwnWidth) {
  const PodTopology pod = LoadPodTopology("configs/pods/2-node-t5gemma.yaml");
  EXPECT_EQ(pod.encoder_tp, 0);  // equal to tp: nothing special
  const PodTopology split = LoadPodTopology("tests/launch/pods/t5gemma-split.yaml");
  EXPECT_EQ(split.encoder_tp, 2);
  EXPECT_EQ(split.tp, 1);
  EXPECT_EQ(split.pp, 3);
  EXPECT_EQ(split.dp, 1);
  EXPECT_EQ(split.pipeline.encoder_stages, 1);
  EXPECT_EQ(split.world_size(), 4);
}

TEST(PodTopology, EncoderTpErrorsNameTheKey) {
  const std::string nodes = "version: 1\nnodes:\n  - {host: a, devices: 4, kind: cpu}\n";
  // No encoder stages of their own to give the width to.
  EXPECT_THAT(ParseError(nodes + "parallelism: {tp: 1, encoder_tp: 2, pp: 1}\n"),
              AllOf(StartsWith("inline.yaml:4:"), HasSubstr("parallelism.encoder_tp"),
                    HasSubstr("needs encoder stages of their own")));
  // 1 x 2 + 2 x 1 = 4 ranks fit; 1 x 2 + 1 x 1 = 3 do not.
  EXPECT_THAT(ParseError(nodes + "parallelism: {tp: 1, encoder_tp: 2, pp: 2}\n"
                                 "pipeline: {stages: auto, encoder_stages: 1}\n"),
              AllOf(HasSubstr("parallelism.encoder_tp"), HasSubstr("= 3 ranks"),
                    HasSubstr("the nodes hold 4 devices")));
  // Groups of different widths must each stay inside a node: ranks 0-2 would span a and b.
  EXPECT_THAT(ParseError("version: 1\nnodes:\n  - {host: a, devices: 2, kind: cpu}\n"
                         "  - {host: b, devices: 2, kind: cpu}\n"
                         "parallelism: {tp: 1, encoder_tp: 3, pp: 2}\n"
                         "pipeline: {stages: auto, encoder_stages: 1}\n"),
              AllOf(HasSubstr("parallelism.encoder_tp"),
                    HasSubstr("stage 0's tensor-parallel group (ranks 0-2) would span nodes 'a' "
                              "and 'b'")));
  // ... while 4 + 2 on one node of 6 is two groups inside it.
  EXPECT_EQ(ParseError("version: 1\nnodes:\n  - {host: a, devices: 6, kind: cpu}\n"
                       "parallelism: {tp: 2, encoder_tp: 4, pp: 2}\n"
                       "pipeline: {stages: auto, encoder_stages: 1}\n"),
            "");
  EXPECT_THAT(ParseError(nodes + "parallelism: {tp: 1, encoder_tp: 0, pp: 2}\n"),
              HasSubstr("must be >= 1, got 0"));
  EXPECT_EQ(ParseError(nodes + "parallelism: {tp: 1, encoder_tp: 2, pp: 3}\n"
                               "pipeline: {stages: auto, encoder_stages: 1}\n"),
            "");
}

}  // namespace
}  // namespace gemmapod
