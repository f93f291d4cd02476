#include "launch/mpirun_command.h"

#include <gtest/gtest.h>

#include "runtime/error.h"

namespace gemmapod {
namespace {

PodTopology TwoGpuNodes() {
  return ParsePodTopology(R"(
version: 1
nodes:
  - {host: a0, devices: 4, kind: gpu}
  - {host: a1, devices: 4, kind: gpu}
interconnect:
  env: {NCCL_IB_HCA: mlx5}
parallelism: {tp: 4, pp: 2, dp: 1}
launch:
  mpirun_args: ["--mca", "btl_tcp_if_include", "eth0"]
)",
                          "test.yaml");
}

MpirunOptions Options() {
  MpirunOptions o;
  o.gemmapod_exe = "/opt/gp/gemmapod";
  o.pod_path = "/pods/p.yaml";
  o.command = {"demo", "--steps", "3"};
  return o;
}

TEST(MpirunCommand, OneRankPerDeviceFillingNodesInOrder) {
  const std::vector<std::string> argv = MpirunCommand(TwoGpuNodes(), Options());
  EXPECT_EQ(ShellJoin(argv),
            "mpirun -np 8 --host a0:4,a1:4 --map-by slot -x NCCL_IB_HCA=mlx5 --mca "
            "btl_tcp_if_include eth0 /opt/gp/gemmapod demo --steps 3 --pod /pods/p.yaml");
}

TEST(MpirunCommand, HostfileReplacesTheHostList) {
  MpirunOptions o = Options();
  o.hostfile = "/tmp/hosts";
  const std::string line = ShellJoin(MpirunCommand(TwoGpuNodes(), o));
  EXPECT_EQ(line.rfind("mpirun -np 8 --hostfile /tmp/hosts --map-by slot ", 0), 0u) << line;
  EXPECT_EQ(HostfileText(TwoGpuNodes()), "a0 slots=4\na1 slots=4\n");
}

TEST(MpirunCommand, KeepsAnExplicitPodArgument) {
  MpirunOptions o = Options();
  o.command = {"demo", "--pod=/other.yaml"};
  const std::vector<std::string> argv = MpirunCommand(TwoGpuNodes(), o);
  EXPECT_EQ(argv.back(), "--pod=/other.yaml");
}

TEST(MpirunCommand, PassesThePodOnlyToSubcommandsThatTakeIt) {
  MpirunOptions o = Options();
  o.command = {"info"};
  EXPECT_EQ(MpirunCommand(TwoGpuNodes(), o).back(), "info");
  o.command = {"plan"};
  EXPECT_EQ(MpirunCommand(TwoGpuNodes(), o).back(), "/pods/p.yaml");
}

TEST(MpirunCommand, CpuPodsShareCoresAndMayOversubscribe) {
  const PodTopology pod = ParsePodTopology(R"(
version: 1
nodes: [{host: localhost, devices: 4, kind: cpu}]
parallelism: {tp: 2, pp: 2, dp: 1}
launch: {oversubscribe: true}
)",
                                           "local.yaml");
  MpirunOptions o = Options();
  o.as_root = true;
  o.host_threads = 2;
  EXPECT_EQ(ShellJoin(MpirunCommand(pod, o)),
            "mpirun -np 4 --host localhost:4 --map-by slot --oversubscribe --bind-to none "
            "--allow-run-as-root -x OMP_NUM_THREADS=1 /opt/gp/gemmapod demo --steps 3 --pod "
            "/pods/p.yaml");
}

TEST(MpirunCommand, NeedsASubcommand) {
  MpirunOptions o = Options();
  o.command.clear();
  EXPECT_THROW(MpirunCommand(TwoGpuNodes(), o), Error);
}

TEST(ShellJoin, QuotesWhatAShellWouldSplit) {
  EXPECT_EQ(ShellJoin({"a", "b c", "it's", "", "$HOME"}), "a 'b c' 'it'\\''s' '' '$HOME'");
}

}  // namespace
}  // namespace gemmapod
