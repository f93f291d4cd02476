// The gemmapod binary as a user runs it: exit codes, what it prints, and multi-rank jobs started
// through `gemmapod launch` (which runs mpirun itself, as root if need be).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/launch/run_gemmapod.h"

namespace {

using gemmapod::Contains;
using gemmapod::Gemmapod;
using Result = gemmapod::CliResult;

TEST(Cli, InfoNamesTheKernelsAndLibraries) {
  const Result r = Gemmapod("info");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "^gemmapod [0-9]+\\.[0-9]+\\.[0-9]+\n")) << r.output;
  EXPECT_TRUE(Contains(r.output, "cpu kernels: (portable|avx512|avx512bf16)")) << r.output;
  EXPECT_TRUE(Contains(r.output, "mpi: Open MPI")) << r.output;
  EXPECT_TRUE(Contains(r.output, "cuda backend: ")) << r.output;
  const Result lowered = Gemmapod("info", 60, "GEMMAPOD_CPU_ISA=portable");
  EXPECT_TRUE(Contains(lowered.output, "cpu kernels: portable")) << lowered.output;
}

TEST(Cli, PlanPrintsTheRankMap) {
  const Result r = Gemmapod("plan --pod configs/pods/local.yaml");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "tp=2 pp=1 dp=1")) << r.output;
  EXPECT_TRUE(Contains(r.output, "\n +0 +localhost +cpu:0 +0 +0 +0 ")) << r.output;
  EXPECT_TRUE(Contains(r.output, "\n +1 +localhost +cpu:1 +0 +0 +1 ")) << r.output;
}

TEST(Cli, PlanOfTwoNodesPutsStagesOnNodes) {
  const Result r = Gemmapod("plan --pod configs/pods/2x8-h100.yaml");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // tp=8 inside a node, pp=2 across: rank 8 is the first GPU of the second node, stage 1.
  EXPECT_TRUE(Contains(r.output, "\n +8 +\\S+ +cuda:0 +0 +1 +0 ")) << r.output;
  EXPECT_TRUE(Contains(r.output, "\n +15 +\\S+ +cuda:7 +0 +1 +7 ")) << r.output;
}

TEST(Cli, BadPodIsOneErrorLineWithFileAndLine) {
  const Result r = Gemmapod("plan --pod tests/sharding/bad_pods/tp_not_dividing_node.yaml");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(
      Contains(r.output,
               "^gemmapod: error: tests/sharding/bad_pods/tp_not_dividing_node.yaml:[0-9]+:[0-9]+: "
               "[^\n]+\n$"))
      << r.output;
}

TEST(Cli, MissingPodFileIsAnError) {
  const Result r = Gemmapod("plan --pod configs/pods/no-such-pod.yaml");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.output, "no-such-pod.yaml")) << r.output;
}

TEST(Cli, UnknownSubcommandAndBadFlagsAreRejected) {
  EXPECT_NE(Gemmapod("frobnicate").exit_code, 0);
  const Result r = Gemmapod("demo --weight-dtype f16");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(Contains(r.output, "weight-dtype")) << r.output;
}

TEST(Cli, LaunchDryRunPrintsTheMpirunCommand) {
  const Result r = Gemmapod("launch --dry-run --pod configs/pods/2x8-h100.yaml -- demo --steps 3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output,
                       "^mpirun -np 16 --host \\S+:8,\\S+:8 --map-by slot .*gemmapod demo --steps "
                       "3 --pod /\\S*configs/pods/2x8-h100.yaml\n$"))
      << r.output;
}

// The ranks' deadline in a collective reaches mpirun's command line from the pod file's
// launch.timeout_s, and from --timeout (before or after the subcommand), which wins.
TEST(Cli, TheCommunicationDeadlineReachesTheRanks) {
  namespace fs = std::filesystem;
  const std::string pod = (fs::temp_directory_path() / "timeout-pod.yaml").string();
  {
    std::ifstream in("configs/pods/local.yaml");
    std::string text((std::istreambuf_iterator<char>(in)), {});
    std::ofstream(pod) << text << "\nlaunch: {timeout_s: 45}\n";
  }
  const Result from_pod = Gemmapod("launch --dry-run --pod " + pod + " -- demo --steps 3");
  ASSERT_EQ(from_pod.exit_code, 0) << from_pod.output;
  EXPECT_TRUE(Contains(from_pod.output, "-x GEMMAPOD_COMM_TIMEOUT=45 ")) << from_pod.output;
  const Result flag = Gemmapod("launch --timeout 7 --dry-run --pod " + pod + " -- demo --steps 3");
  ASSERT_EQ(flag.exit_code, 0) << flag.output;
  EXPECT_TRUE(Contains(flag.output, "-x GEMMAPOD_COMM_TIMEOUT=7\\.0+ ")) << flag.output;
  EXPECT_FALSE(Contains(flag.output, "=45")) << flag.output;
  const Result bad = Gemmapod("demo --timeout soon --steps 1");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_TRUE(Contains(bad.output, "--timeout")) << bad.output;
  {
    std::ifstream in("configs/pods/local.yaml");
    std::string text((std::istreambuf_iterator<char>(in)), {});
    std::ofstream(pod) << text << "\nlaunch: {timeout_s: -1}\n";
  }
  const Result negative = Gemmapod("launch --dry-run --pod " + pod + " -- demo --steps 3");
  EXPECT_NE(negative.exit_code, 0);
  EXPECT_TRUE(Contains(negative.output, "timeout-pod.yaml:[0-9]+:[0-9]+: launch.timeout_s"))
      << negative.output;
}

TEST(Cli, DemoAloneRunsAsOneRank) {
  const Result r = Gemmapod("demo --steps 2 --layers 2 --hidden 64 --ffn 128");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "1 rank")) << r.output;
  EXPECT_TRUE(Contains(r.output, "sharded output matches one rank")) << r.output;
}

// The README's main job, through `gemmapod launch`, on both local pods (tp=2; tp=2 x pp=2).
TEST(Cli, DemoShardedOverLocalPodsMatchesOneRank) {
  for (const char* pod : {"configs/pods/local.yaml", "configs/pods/local-4.yaml"}) {
    const Result r =
        Gemmapod(std::string("launch --pod ") + pod + " -- demo --steps 2 --layers 4", 120);
    EXPECT_EQ(r.exit_code, 0) << pod << "\n" << r.output;
    EXPECT_TRUE(Contains(r.output, "sharded output matches one rank")) << pod << "\n" << r.output;
  }
}

TEST(Cli, DemoFollowsExplicitPipelineStages) {
  const Result ok = Gemmapod(
      "launch --pod tests/launch/pods/uneven-stages.yaml -- demo --steps 2 --layers 5", 120);
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_TRUE(Contains(ok.output, "tp=1 pp=2 dp=1")) << ok.output;
  EXPECT_TRUE(Contains(ok.output, "sharded output matches one rank")) << ok.output;
  // The stages cover 5 layers; a model of 4 is refused on every rank with the pod file named.
  const Result bad = Gemmapod(
      "launch --pod tests/launch/pods/uneven-stages.yaml -- demo --steps 2 --layers 4", 60);
  EXPECT_NE(bad.exit_code, 0) << bad.output;
  EXPECT_TRUE(Contains(bad.output, "uneven-stages.yaml: the pipeline stages cover layers 0-4"))
      << bad.output;
  // Both ranks find the problem; it is reported once.
  EXPECT_EQ(bad.output.find("the pipeline stages cover"),
            bad.output.rfind("the pipeline stages cover"))
      << bad.output;
}

TEST(Cli, LaunchWithAHostfileWritesItAndRuns) {
  const std::string hostfile =
      testing::TempDir() + "gemmapod_cli_hosts_" + std::to_string(getpid()) + ".txt";
  const Result r = Gemmapod("launch --hostfile " + hostfile +
                                " --pod configs/pods/local.yaml -- demo --steps 1 --layers 2",
                            120);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "--hostfile \\S+gemmapod_cli_hosts_")) << r.output;
  EXPECT_TRUE(Contains(r.output, "sharded output matches one rank")) << r.output;
  std::ifstream in(hostfile);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), "localhost slots=2\n");
  std::remove(hostfile.c_str());
}

TEST(Cli, LaunchRunsPodlessSubcommandsAndRefusesNesting) {
  const Result info = Gemmapod("launch --pod configs/pods/local.yaml -- info", 120);
  EXPECT_EQ(info.exit_code, 0) << info.output;
  EXPECT_TRUE(Contains(info.output, "cpu kernels: ")) << info.output;
  const Result nested = Gemmapod(
      "launch --pod configs/pods/local.yaml -- launch --pod configs/pods/local.yaml -- "
      "demo");
  EXPECT_EQ(nested.exit_code, 1) << nested.output;
  EXPECT_TRUE(Contains(nested.output, "cannot itself be 'launch'")) << nested.output;
}

TEST(Cli, DemoOnAGpuPodSaysItUsesTheHost) {
  const Result r =
      Gemmapod("launch --pod tests/launch/pods/local-gpu.yaml -- demo --steps 1 --layers 2", 120);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "the pod's gpu devices are not used")) << r.output;
}

TEST(Cli, DryRunWritesNoHostfile) {
  const std::string hostfile =
      testing::TempDir() + "gemmapod_dry_hosts_" + std::to_string(getpid()) + ".txt";
  const Result r = Gemmapod("launch --dry-run --hostfile " + hostfile +
                            " --pod configs/pods/local.yaml -- demo");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "--hostfile \\S+gemmapod_dry_hosts_")) << r.output;
  EXPECT_FALSE(std::ifstream(hostfile).good()) << "a dry run wrote " << hostfile;
}

// One rank fails mid-run while its peer waits for it in a collective: the job must end, with a
// non-zero code and that rank's message, long before the time limit.
TEST(Cli, FailingRankEndsTheWholeJob) {
  const Result r = Gemmapod(
      "launch --pod configs/pods/local.yaml -- demo --steps 1000 --inject-failure-rank 1", 30);
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.exit_code, 124) << "timed out: a rank hung\n" << r.output;
  EXPECT_TRUE(Contains(r.output, "rank 1 of 2: error: injected failure")) << r.output;
}

}  // namespace

namespace {

// Output that cannot be written is an error (it used to exit 0 with the text lost).
TEST(Cli, AFullStandardOutputIsAnError) {
  const gemmapod::CliResult r = gemmapod::RunShell(
      std::string("timeout 60 ") + GEMMAPOD_BIN +
      " tokenize --tokenizer tests/fixtures/tokenizer/tiny_gemma.model --text hello 2>&1 "
      ">/dev/full");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(gemmapod::Contains(r.output, "cannot write to standard output: No space left"))
      << r.output;
}

// Seeds outside [0, 2^64) and shard sizes whose bytes would overflow are refused, not wrapped.
TEST(Cli, OutOfRangeSeedsAndShardSizesAreRefused) {
  for (const char* seed : {"-1", "18446744073709551616", "1e30", "seven"}) {
    const gemmapod::CliResult r = gemmapod::Gemmapod(
        std::string("random-checkpoint --config configs/models/tiny-gemma.yaml --out "
                    "/tmp/never-written.h5 --seed ") +
        seed);
    EXPECT_NE(r.exit_code, 0) << seed;
    EXPECT_TRUE(gemmapod::Contains(r.output, "--seed: a seed is")) << r.output;
  }
  const gemmapod::CliResult shard = gemmapod::Gemmapod(
      "convert tests/fixtures/models/gemma3 /tmp/never-written --max-shard-mib 17592186044417");
  EXPECT_NE(shard.exit_code, 0);
  EXPECT_TRUE(
      gemmapod::Contains(shard.output, "--max-shard-mib: Value 17592186044417 not in range"))
      << shard.output;
}

}  // namespace

namespace {

// A size read from a file is bounded before anything is sized by it: a layer count of 10^7 in a
// model YAML or a config.json used to grow memory to tens of GB (10^12: bad_alloc after 30 s).
TEST(Cli, HugeSizesInModelFilesAreRefusedAtOnce) {
  const std::string dir = "/tmp/huge-sizes-" + std::to_string(getpid());
  std::filesystem::create_directories(dir + "/hf");
  {
    std::ifstream in("configs/models/tiny-gemma.yaml");
    std::ofstream out(dir + "/huge.yaml");
    std::string line;
    while (std::getline(in, line)) {
      out << (line.rfind("num_layers:", 0) == 0 ? "num_layers: 10000000" : line) << "\n";
    }
  }
  const gemmapod::CliResult yaml =
      gemmapod::Gemmapod("plan --pod configs/pods/local.yaml --model " + dir + "/huge.yaml", 30);
  EXPECT_EQ(yaml.exit_code, 1) << yaml.output;
  EXPECT_TRUE(gemmapod::Contains(yaml.output,
                                 "huge.yaml: num_layers: must be in \\[1, 4096\\], "
                                 "got 10000000"))
      << yaml.output;
  {
    std::ifstream in("tests/fixtures/models/gemma1/config.json");  // no layer_types list
    std::stringstream text;
    text << in.rdbuf();
    std::string json = text.str();
    const std::string key = "\"num_hidden_layers\":";
    const size_t at = json.find(key);
    ASSERT_NE(at, std::string::npos);
    const size_t end = json.find_first_of(",}", at);
    json.replace(at, end - at, key + " 1000000000000");
    std::ofstream(dir + "/hf/config.json") << json;
    std::filesystem::copy_file("tests/fixtures/models/gemma1/model.safetensors",
                               dir + "/hf/model.safetensors");
  }
  const gemmapod::CliResult hf =
      gemmapod::Gemmapod("convert " + dir + "/hf " + dir + "/out.h5", 30);
  EXPECT_EQ(hf.exit_code, 1) << hf.output;
  EXPECT_TRUE(gemmapod::Contains(hf.output, "num_layers: must be in \\[1, 4096\\]")) << hf.output;
  std::filesystem::remove_all(dir);
}

}  // namespace
