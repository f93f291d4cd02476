// PodTopology: the pod YAML file as plain data. A pod is a list of nodes (hosts with devices),
// how they are connected, the parallel degrees and the pipeline stage layout. Parsing validates
// everything that can be checked without a model; every error names file:line:column and key.
// The file format is documented in docs/pod-file.md.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace gemmapod {

enum class DeviceType { kCpu, kGpu, kTpu };
const char* DeviceTypeName(DeviceType t);

struct PodNode {
  std::string host;
  int devices = 0;
  DeviceType kind = DeviceType::kCpu;
  std::string model;             // e.g. "H100-80GB"; informational
  double memory_gib = 0;         // host memory of the node (0: unknown)
  double device_memory_gib = 0;  // memory per accelerator (gpu/tpu); 0 for cpu or unknown
};

struct Link {
  std::string type;  // shared-memory, nvlink, pcie, ici, infiniband, ethernet, dcn, none
  double gbps = 0;   // per-direction bandwidth per device, gigabits per second (0: unknown)
};

struct Interconnect {
  Link intra_node;
  Link inter_node;
  std::map<std::string, std::string> env;  // exported to every rank (e.g. NCCL_IB_HCA)
};

enum class StackPart { kDecoder, kEncoder };
const char* StackPartName(StackPart p);

// One pipeline stage: which part of the model it runs and which of that part's layers
// (inclusive range, as written in the pod file).
struct StageLayout {
  StackPart part = StackPart::kDecoder;
  int first_layer = 0;
  int last_layer = 0;
};

struct PipelineLayout {
  bool automatic = true;  // "auto": balanced by parameter bytes once the model is known
  // Encoder-decoder models: stages [0, n) hold the encoder. Given with "auto"; for an explicit
  // list, the number of its encoder stages (which come first).
  int encoder_stages = 0;
  std::vector<StageLayout> stages;  // explicit layout: exactly pp entries, encoder stages first
};

struct LaunchOptions {
  bool oversubscribe = false;            // more ranks than cores (tests, small machines)
  std::vector<std::string> mpirun_args;  // appended verbatim to the mpirun command line
  // Seconds a rank may wait in one collective or transfer before the job ends naming it
  // (runtime/comm/comm_watchdog.h); -1: not set here (the command line's --timeout, the
  // environment's GEMMAPOD_COMM_TIMEOUT, or the default).
  double timeout_s = -1;
};

struct PodTopology {
  std::string source;  // the file it came from, for messages
  std::string name;
  std::vector<PodNode> nodes;
  Interconnect interconnect;
  int tp = 1;
  int pp = 1;
  int dp = 1;  // resolved: never -1 after parsing
  // Encoder-decoder models: the tp of the encoder stages when it differs from `tp` (the
  // decoder's); 0 when the encoder uses `tp` too. The pod then has encoder_stages x encoder_tp +
  // (pp - encoder_stages) x tp devices and one replica.
  int encoder_tp = 0;
  PipelineLayout pipeline;
  LaunchOptions launch;

  int world_size() const;          // sum of devices over nodes
  DeviceType device_type() const;  // every node has the same kind (checked at parse)
  // Node index and local device index of global rank r (ranks fill nodes in file order).
  // Throw gemmapod::Error when r is not in [0, world_size()).
  int node_of_rank(int rank) const;
  int local_device_of_rank(int rank) const;
};

// Whether each node can hold what its ranks need (`rank_bytes[r]`: rank r's weights and caches),
// one line per problem naming the node (or rank) and the pod key. The model computes on the host
// today, so a node's ranks share its host memory whatever its kind; an accelerator must also hold
// its own rank's part, for when it runs there.
std::vector<std::string> MemoryProblems(const PodTopology& pod,
                                        const std::vector<int64_t>& rank_bytes);

// Parses and validates a pod file. Throws gemmapod::Error("path:line:col: key: message").
PodTopology LoadPodTopology(const std::string& path);
// Same, from YAML text; `source` names it in messages.
PodTopology ParsePodTopology(const std::string& yaml_text, const std::string& source);

}  // namespace gemmapod
