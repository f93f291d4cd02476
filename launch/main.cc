// gemmapod: one binary, one subcommand per job. Run alone it is a one-rank job; under mpirun
// (or `gemmapod launch`) every rank runs the same subcommand.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "launch/commands.h"
#include "runtime/error.h"

namespace {

std::string SelfExecutable(const char* argv0) {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) return std::string(buf, static_cast<size_t>(n));
  return argv0;
}

// The rank, when this process was started by Open MPI's launcher; -1 otherwise.
int LauncherRank() {
  const char* r = std::getenv("OMPI_COMM_WORLD_RANK");
  return r ? std::atoi(r) : -1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace gemmapod;
  CLI::App app{"gemmapod: a distributed runtime for the Gemma model family"};
  app.set_version_flag("--version", std::string("gemmapod ") + kGemmapodVersion);
  app.require_subcommand(1);

  CLI::App* info_cmd =
      app.add_subcommand("info", "Print what this build and machine offer (kernels, MPI, CUDA)");

  PlanOptions plan;
  CLI::App* plan_cmd =
      app.add_subcommand("plan", "Print the rank -> host/device/(dp,pp,tp) map of a pod");
  plan_cmd->add_option("--pod", plan.pod_path, "Pod file (YAML)")->required();

  LaunchCommandOptions launch;
  CLI::App* launch_cmd = app.add_subcommand(
      "launch", "Run a subcommand on every rank of a pod through mpirun: launch --pod P -- CMD...");
  launch_cmd->add_option("--pod", launch.pod_path, "Pod file (YAML)")->required();
  launch_cmd->add_option("--hostfile", launch.hostfile,
                         "Write the pod's nodes to this Open MPI hostfile and launch with it");
  launch_cmd->add_flag("--dry-run", launch.dry_run,
                       "Print the mpirun command instead of running it");
  launch_cmd->add_option("command", launch.command, "The gemmapod subcommand and its arguments")
      ->required();

  DemoOptions demo;
  CLI::App* demo_cmd = app.add_subcommand(
      "demo",
      "Run a small RANDOM-WEIGHT model (no model family yet) sharded over the pod and check it "
      "against one rank");
  demo_cmd->add_option("--pod", demo.pod_path, "Pod file; default: all ranks form one TP group");
  demo_cmd->add_option("--layers", demo.layers, "MLP blocks")->check(CLI::Range(1, 4096));
  demo_cmd->add_option("--hidden", demo.hidden, "Model width")->check(CLI::Range(1, 1 << 16));
  demo_cmd->add_option("--ffn", demo.ffn, "MLP width")->check(CLI::Range(1, 1 << 18));
  demo_cmd->add_option("--rows", demo.rows, "Tokens per forward pass")
      ->check(CLI::Range(1, 1 << 16));
  demo_cmd->add_option("--steps", demo.steps, "Timed forward passes")
      ->check(CLI::Range(1, 1 << 20));
  demo_cmd->add_option("--seed", demo.seed, "Weight and input seed");
  demo_cmd->add_option("--weight-dtype", demo.weight_dtype, "bf16 or f32")
      ->check(CLI::IsMember({"bf16", "f32"}));
  demo_cmd
      ->add_option("--inject-failure-rank", demo.inject_failure_rank,
                   "Testing: this rank fails mid-run, to check the whole job ends")
      ->group("");  // hidden from --help

  CLI11_PARSE(app, argc, argv);

  try {
    if (*info_cmd) return RunInfo();
    if (*plan_cmd) return RunPlan(plan);
    if (*launch_cmd) return RunLaunch(launch, SelfExecutable(argv[0]));
    if (*demo_cmd) return RunDemo(demo, &argc, &argv);
  } catch (const Error& e) {
    const int rank = LauncherRank();
    if (rank >= 0) {
      std::fprintf(stderr, "gemmapod: rank %d: error: %s\n", rank, e.what());
    } else {
      std::fprintf(stderr, "gemmapod: error: %s\n", e.what());
    }
    return 1;
  }
  return 0;
}
