// The subcommands of the `gemmapod` binary as plain functions over option structs, so the CLI
// parser (CLI11, a heavy header) stays in main.cc alone. Each returns the process exit code and
// reports user errors by throwing gemmapod::Error.
#pragma once

#include <string>
#include <vector>

#include "runtime/cpu/matmul.h"

namespace gemmapod {

inline constexpr const char* kGemmapodVersion = "0.1.0";

// Build and machine facts: version, CPU kernel family, threads, MPI library, CUDA devices.
int RunInfo();

struct PlanOptions {
  std::string pod_path;
};
int RunPlan(const PlanOptions& options);

struct LaunchCommandOptions {
  std::string pod_path;
  std::vector<std::string> command;
  std::string hostfile;  // write the pod's nodes here and pass it to mpirun as --hostfile
  bool dry_run = false;
};
int RunLaunch(const LaunchCommandOptions& options, const std::string& self_exe);

// A small random-weight model (no model family yet): a stack of Gemma-style RMSNorm + GeGLU MLP
// blocks, sharded by the pod's tp/pp/dp, checked against the same model on one rank.
struct DemoOptions {
  std::string pod_path;  // empty: every rank of the job is one TP group
  int layers = 4;
  int hidden = 512;
  int ffn = 2048;
  int rows = 8;  // tokens per forward pass (per data-parallel replica)
  int steps = 20;
  uint64_t seed = 1;
  std::string weight_dtype = "bf16";
  int inject_failure_rank = -1;  // testing: this world rank fails on the second step
};
int RunDemo(const DemoOptions& options, int* argc, char*** argv);

}  // namespace gemmapod
