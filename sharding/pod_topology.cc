#include "sharding/pod_topology.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "runtime/config/yaml_reader.h"
#include "runtime/error.h"

namespace gemmapod {

const char* DeviceTypeName(DeviceType t) {
  switch (t) {
    case DeviceType::kCpu:
      return "cpu";
    case DeviceType::kGpu:
      return "gpu";
    case DeviceType::kTpu:
      return "tpu";
  }
  return "?";
}

const char* StackPartName(StackPart p) {
  switch (p) {
    case StackPart::kDecoder:
      return "decoder";
    case StackPart::kEncoder:
      return "encoder";
  }
  return "?";
}

int PodTopology::world_size() const {
  int world = 0;
  for (const PodNode& node : nodes) world += node.devices;
  return world;
}

DeviceType PodTopology::device_type() const {
  return nodes.empty() ? DeviceType::kCpu : nodes.front().kind;
}

int PodTopology::node_of_rank(int rank) const {
  GEMMAPOD_CHECK(rank >= 0 && rank < world_size(), source, ": rank ", rank,
                 " is outside the pod, which has ", world_size(), " device(s)");
  int first_rank_of_node = 0;
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (rank < first_rank_of_node + nodes[i].devices) return static_cast<int>(i);
    first_rank_of_node += nodes[i].devices;
  }
  return -1;  // unreachable: the range check above covers every rank
}

int PodTopology::local_device_of_rank(int rank) const {
  const int node = node_of_rank(rank);
  int first_rank_of_node = 0;
  for (int i = 0; i < node; ++i) first_rank_of_node += nodes[i].devices;
  return rank - first_rank_of_node;
}

namespace {

constexpr int kPodFileVersion = 1;

DeviceType DeviceTypeFromName(const std::string& name) {
  if (name == "gpu") return DeviceType::kGpu;
  if (name == "tpu") return DeviceType::kTpu;
  return DeviceType::kCpu;
}

double ReadPositiveNumber(const YamlValue& value) {
  const double number = value.AsNumber();
  if (number <= 0) value.Fail(StrCat("must be > 0, got ", value.scalar_text()));
  return number;
}

// A node as read, with where it was written, for messages about relationships between nodes.
struct NodeEntry {
  PodNode node;
  YamlValue where;
  YamlValue kind_where;
  YamlValue host_where;
};

NodeEntry ParseNode(const YamlValue& value) {
  const YamlMap map =
      value.AsMap({"host", "devices", "kind", "model", "memory_gib", "device_memory_gib"});
  PodNode node;
  const YamlValue host = map.Require("host");
  node.host = host.AsString();
  if (node.host.empty()) host.Fail("must not be empty");
  // The name reaches mpirun's command line and hostfiles: a host name or address only.
  const bool name_ok = node.host.front() != '-' &&
                       node.host.find_first_not_of(
                           "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:") ==
                           std::string::npos;
  if (!name_ok) host.Fail("'" + node.host + "' is not a host name or address");

  const YamlValue devices = map.Require("devices");
  node.devices = devices.AsInt();
  if (node.devices < 1) devices.Fail(StrCat("must be >= 1, got ", node.devices));

  const YamlValue kind = map.Require("kind");
  node.kind = DeviceTypeFromName(kind.AsChoice({"cpu", "gpu", "tpu"}));

  if (auto model = map.Find("model")) node.model = model->AsString();
  if (auto memory = map.Find("memory_gib")) node.memory_gib = ReadPositiveNumber(*memory);
  if (auto device_memory = map.Find("device_memory_gib")) {
    if (node.kind == DeviceType::kCpu) {
      device_memory->Fail("applies to gpu and tpu nodes only; a cpu node's memory is memory_gib");
    }
    node.device_memory_gib = ReadPositiveNumber(*device_memory);
  }
  return {std::move(node), value, kind, host};
}

std::vector<NodeEntry> ParseNodes(const YamlValue& value) {
  std::vector<NodeEntry> entries;
  for (const YamlValue& item : value.AsList()) entries.push_back(ParseNode(item));
  if (entries.empty()) value.Fail("must list at least one node");
  // Ranks are ints (MPI's too); a world that does not fit one is a typo in some `devices`.
  long long world = 0;
  for (const NodeEntry& entry : entries) {
    world += entry.node.devices;
    if (world > std::numeric_limits<int>::max()) {
      entry.where.Fail(StrCat("the nodes up to this one hold ", world,
                              " devices, more than an MPI job can have"));
    }
  }

  for (size_t i = 0; i < entries.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (entries[i].node.host == entries[j].node.host) {
        entries[i].host_where.Fail(StrCat("duplicate host '", entries[i].node.host,
                                          "' (first listed at line ",
                                          entries[j].host_where.position().line, ")"));
      }
    }
    // One job runs one backend; a pod that mixes kinds cannot form a single communicator.
    const PodNode& first = entries.front().node;
    if (entries[i].node.kind != first.kind) {
      entries[i].kind_where.Fail(
          StrCat("kind '", DeviceTypeName(entries[i].node.kind), "' differs from kind '",
                 DeviceTypeName(first.kind), "' of node '", first.host, "' (line ",
                 entries.front().where.position().line, "); all nodes must share one device kind"));
    }
  }
  return entries;
}

Link ParseLink(const YamlValue& value) {
  const YamlMap map = value.AsMap({"type", "gbps"});
  Link link;
  link.type = map.Require("type").AsChoice(
      {"shared-memory", "nvlink", "pcie", "ici", "infiniband", "ethernet", "dcn", "none"});
  if (auto gbps = map.Find("gbps")) link.gbps = ReadPositiveNumber(*gbps);
  return link;
}

bool IsEnvironmentName(const std::string& name) {
  if (name.empty() || (name[0] >= '0' && name[0] <= '9')) return false;
  for (char c : name) {
    const bool ok =
        (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) return false;
  }
  return true;
}

Interconnect ParseInterconnect(const YamlValue& value) {
  const YamlMap map = value.AsMap({"intra_node", "inter_node", "env"});
  Interconnect interconnect;
  if (auto intra = map.Find("intra_node")) interconnect.intra_node = ParseLink(*intra);
  if (auto inter = map.Find("inter_node")) interconnect.inter_node = ParseLink(*inter);
  if (auto env = map.Find("env")) {
    const YamlMap variables = env->AsOpenMap();
    for (const YamlMap::Entry& e : variables.entries()) {
      if (!IsEnvironmentName(e.key)) {
        FailAt(value.source(), e.key_position, e.value.key_path(),
               "not a valid environment variable name (letters, digits and _)");
      }
      interconnect.env[e.key] = e.value.AsString();
    }
  }
  return interconnect;
}

// The degrees as written, with where each was written (absent keys keep their defaults).
struct Degrees {
  int tp = 1;
  int pp = 1;
  int dp = -1;         // -1: whatever world / (tp * pp) leaves
  int encoder_tp = 0;  // 0: tp
  std::optional<YamlValue> tp_where, pp_where, dp_where, encoder_tp_where;
};

Degrees ParseParallelism(const YamlValue& value) {
  const YamlMap map = value.AsMap({"tp", "pp", "dp", "encoder_tp"});
  Degrees d;
  if ((d.encoder_tp_where = map.Find("encoder_tp"))) {
    d.encoder_tp = d.encoder_tp_where->AsInt();
    if (d.encoder_tp < 1) d.encoder_tp_where->Fail(StrCat("must be >= 1, got ", d.encoder_tp));
  }
  if ((d.tp_where = map.Find("tp"))) {
    d.tp = d.tp_where->AsInt();
    if (d.tp < 1) d.tp_where->Fail(StrCat("must be >= 1, got ", d.tp));
  }
  if ((d.pp_where = map.Find("pp"))) {
    d.pp = d.pp_where->AsInt();
    if (d.pp < 1) d.pp_where->Fail(StrCat("must be >= 1, got ", d.pp));
  }
  if ((d.dp_where = map.Find("dp"))) {
    d.dp = d.dp_where->AsInt();
    if (d.dp < 1 && d.dp != -1) {
      d.dp_where->Fail(StrCat("must be >= 1, or -1 to fill the rest of the pod; got ", d.dp));
    }
  }
  return d;
}

// Checks the degrees against the nodes and returns dp with -1 resolved.
int ResolveDegrees(const Degrees& d, const std::vector<NodeEntry>& nodes, int world,
                   const YamlValue& root) {
  // TP exchanges activations every layer, so its group must not leave a node's fast link.
  for (const NodeEntry& entry : nodes) {
    if (entry.node.devices % d.tp != 0) {
      d.tp_where->Fail(StrCat("tp (", d.tp, ") does not divide the ", entry.node.devices,
                              " devices of node '", entry.node.host, "' (line ",
                              entry.where.position().line,
                              "); a tensor-parallel group must stay inside one node"));
    }
  }
  const long long model_parallel = static_cast<long long>(d.tp) * d.pp;
  if (d.dp == -1) {
    if (world % model_parallel != 0) {
      // tp divides every node, so pp is what breaks the division when dp is left out.
      const YamlValue& where = d.dp_where ? *d.dp_where : d.pp_where ? *d.pp_where : root;
      where.Fail(StrCat("dp -1 cannot fill the pod: the nodes hold ", world,
                        " devices, not a multiple of tp (", d.tp, ") x pp (", d.pp,
                        ") = ", model_parallel));
    }
    return static_cast<int>(world / model_parallel);
  }
  if (model_parallel * d.dp != world) {
    d.dp_where->Fail(StrCat("tp (", d.tp, ") x pp (", d.pp, ") x dp (", d.dp, ") = ",
                            model_parallel * d.dp, " but the nodes hold ", world, " devices"));
  }
  return d.dp;
}

StageLayout ParseStage(const YamlValue& value) {
  const YamlMap map = value.AsMap({"part", "layers"});
  StageLayout stage;
  if (auto part = map.Find("part")) {
    stage.part = part->AsChoice({"encoder", "decoder"}) == "encoder" ? StackPart::kEncoder
                                                                     : StackPart::kDecoder;
  }
  const YamlValue layers = map.Require("layers");
  if (!layers.is_list()) {
    layers.Fail("expected [first, last] (two layer indices, inclusive), got " + layers.Describe());
  }
  if (layers.AsList().size() != 2) {
    layers.Fail(StrCat("expected [first, last] (two layer indices, inclusive), got a list of ",
                       layers.AsList().size()));
  }
  const std::vector<YamlValue> bounds = layers.AsList();
  stage.first_layer = bounds[0].AsInt();
  stage.last_layer = bounds[1].AsInt();
  for (const YamlValue& bound : bounds) {
    if (bound.AsInt() < 0) bound.Fail(StrCat("layer indices must be >= 0, got ", bound.AsInt()));
  }
  if (stage.first_layer > stage.last_layer) {
    layers.Fail(StrCat("first layer (", stage.first_layer, ") is after last layer (",
                       stage.last_layer, ")"));
  }
  return stage;
}

// Encoder stages come first and each part's stages cover its layers 0..n without gaps or overlaps.
void CheckStageOrder(const std::vector<StageLayout>& stages, const std::vector<YamlValue>& items) {
  int next_layer[2] = {0, 0};  // per part: the first layer the next stage of that part must hold
  int last_stage[2] = {-1, -1};
  for (size_t i = 0; i < stages.size(); ++i) {
    const StageLayout& s = stages[i];
    const int part = static_cast<int>(s.part);
    const YamlMap map = items[i].AsMap({"part", "layers"});
    if (s.part == StackPart::kEncoder && last_stage[static_cast<int>(StackPart::kDecoder)] >= 0) {
      const YamlValue where = map.Find("part") ? *map.Find("part") : items[i];
      where.Fail(StrCat("encoder stage after decoder stage ",
                        last_stage[static_cast<int>(StackPart::kDecoder)],
                        "; encoder stages must come first (the decoder consumes the encoder's "
                        "output)"));
    }
    if (s.first_layer != next_layer[part]) {
      const YamlValue layers = map.Require("layers");
      if (last_stage[part] < 0) {
        layers.Fail(StrCat("the first ", StackPartName(s.part),
                           " stage must start at layer 0, got ", s.first_layer));
      }
      layers.Fail(StrCat(StackPartName(s.part), " layers must continue at layer ", next_layer[part],
                         " after stage ", last_stage[part], ", got ", s.first_layer, " (",
                         s.first_layer > next_layer[part] ? "a gap" : "an overlap", ")"));
    }
    next_layer[part] = s.last_layer + 1;
    last_stage[part] = static_cast<int>(i);
  }
}

// An encoder-decoder pod whose encoder stages have their own tp: stages of different sizes, one
// replica. Returns dp (1).
int ResolveEncoderDegrees(const Degrees& d, const std::vector<NodeEntry>& nodes, int world,
                          int encoder_stages) {
  const YamlValue& where = *d.encoder_tp_where;
  if (encoder_stages < 1) {
    where.Fail(
        "needs encoder stages of their own (pipeline.encoder_stages, or stages with "
        "part: encoder); with none the encoder shares the decoder's ranks and tp");
  }
  if (d.dp_where && d.dp != 1 && d.dp != -1) {
    d.dp_where->Fail(StrCat("must be 1 (or -1) when encoder_tp differs from tp, got ", d.dp));
  }
  const int needed = encoder_stages * d.encoder_tp + (d.pp - encoder_stages) * d.tp;
  // Each stage's tensor-parallel group (consecutive ranks, encoder stages first) must stay inside
  // one node: it all-reduces on every layer.
  std::vector<int> node_of;
  for (size_t n = 0; n < nodes.size(); ++n)
    node_of.insert(node_of.end(), nodes[n].node.devices, static_cast<int>(n));
  for (int stage = 0, first = 0; stage < d.pp && needed == world; ++stage) {
    const int tp = stage < encoder_stages ? d.encoder_tp : d.tp;
    const int a = node_of[static_cast<size_t>(first)],
              b = node_of[static_cast<size_t>(first + tp - 1)];
    if (a != b) {
      const YamlValue& key = stage < encoder_stages || !d.tp_where ? where : *d.tp_where;
      key.Fail(StrCat("stage ", stage, "'s tensor-parallel group (ranks ", first, "-",
                      first + tp - 1, ") would span nodes '",
                      nodes[static_cast<size_t>(a)].node.host, "' and '",
                      nodes[static_cast<size_t>(b)].node.host,
                      "'; a tensor-parallel group must stay inside one node"));
    }
    first += tp;
  }
  if (needed != world) {
    where.Fail(StrCat(encoder_stages, " encoder stage(s) x encoder_tp ", d.encoder_tp, " + ",
                      d.pp - encoder_stages, " decoder stage(s) x tp ", d.tp, " = ", needed,
                      " ranks, but the nodes hold ", world, " devices"));
  }
  return 1;
}

PipelineLayout ParsePipeline(const YamlValue& value, int pp) {
  const YamlMap map = value.AsMap({"stages", "encoder_stages"});
  PipelineLayout layout;
  const std::optional<YamlValue> stages = map.Find("stages");
  if (stages && !(stages->is_scalar() && stages->scalar_text() == "auto")) {
    if (!stages->is_list()) {
      stages->Fail("expected auto or a list of stages, got " + stages->Describe());
    }
    layout.automatic = false;
    const std::vector<YamlValue> items = stages->AsList();
    for (const YamlValue& item : items) layout.stages.push_back(ParseStage(item));
    if (static_cast<int>(layout.stages.size()) != pp) {
      stages->Fail(StrCat("lists ", layout.stages.size(), " stage(s) but parallelism.pp is ", pp,
                          "; give one entry per pipeline stage"));
    }
    CheckStageOrder(layout.stages, items);
    for (const StageLayout& s : layout.stages) {
      if (s.part == StackPart::kEncoder) ++layout.encoder_stages;
    }
  }
  if (auto encoder_stages = map.Find("encoder_stages")) {
    if (!layout.automatic) {
      encoder_stages->Fail(
          "only applies to stages: auto; an explicit stage list gives each stage's part");
    }
    layout.encoder_stages = encoder_stages->AsInt();
    if (layout.encoder_stages < 0 || layout.encoder_stages >= pp) {
      encoder_stages->Fail(StrCat("must be in [0, pp) = [0, ", pp, "), got ", layout.encoder_stages,
                                  "; at least one stage must hold the decoder"));
    }
  }
  return layout;
}

LaunchOptions ParseLaunch(const YamlValue& value) {
  const YamlMap map = value.AsMap({"oversubscribe", "mpirun_args", "timeout_s"});
  LaunchOptions launch;
  if (auto timeout = map.Find("timeout_s")) {
    launch.timeout_s = timeout->AsNumber();
    if (launch.timeout_s < 0) timeout->Fail("seconds >= 0 (0: no deadline)");
  }
  if (auto oversubscribe = map.Find("oversubscribe"))
    launch.oversubscribe = oversubscribe->AsBool();
  if (auto args = map.Find("mpirun_args")) {
    for (const YamlValue& arg : args->AsList()) launch.mpirun_args.push_back(arg.AsString());
  }
  return launch;
}

PodTopology ParseDocument(const YamlValue& root) {
  if (root.is_null()) {
    root.Fail("the pod file is empty; it needs at least `version: 1` and `nodes:`");
  }
  const YamlMap map =
      root.AsMap({"version", "name", "nodes", "interconnect", "parallelism", "pipeline", "launch"});
  PodTopology pod;
  pod.source = root.source();

  const YamlValue version = map.Require("version");
  if (version.AsInt() != kPodFileVersion) {
    version.Fail(StrCat("unsupported pod file version ", version.AsInt(), "; this runtime reads ",
                        "version ", kPodFileVersion));
  }
  if (auto name = map.Find("name")) pod.name = name->AsString();

  const std::vector<NodeEntry> nodes = ParseNodes(map.Require("nodes"));
  for (const NodeEntry& entry : nodes) pod.nodes.push_back(entry.node);

  if (auto interconnect = map.Find("interconnect")) {
    pod.interconnect = ParseInterconnect(*interconnect);
  }

  Degrees degrees;
  if (auto parallelism = map.Find("parallelism")) degrees = ParseParallelism(*parallelism);
  pod.tp = degrees.tp;
  pod.pp = degrees.pp;
  if (auto pipeline = map.Find("pipeline")) pod.pipeline = ParsePipeline(*pipeline, pod.pp);
  if (degrees.encoder_tp_where && degrees.encoder_tp != degrees.tp) {
    pod.encoder_tp = degrees.encoder_tp;
    pod.dp = ResolveEncoderDegrees(degrees, nodes, pod.world_size(), pod.pipeline.encoder_stages);
  } else {
    pod.dp = ResolveDegrees(degrees, nodes, pod.world_size(), root);
  }
  if (auto launch = map.Find("launch")) pod.launch = ParseLaunch(*launch);
  return pod;
}

}  // namespace

std::vector<std::string> MemoryProblems(const PodTopology& pod,
                                        const std::vector<int64_t>& rank_bytes) {
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
  std::vector<std::string> problems;
  for (size_t n = 0; n < pod.nodes.size(); ++n) {
    const PodNode& node = pod.nodes[n];
    int64_t node_bytes = 0, ranks = 0;
    for (size_t r = 0; r < rank_bytes.size(); ++r) {
      if (pod.node_of_rank(static_cast<int>(r)) != static_cast<int>(n)) continue;
      const int64_t bytes = rank_bytes[r];
      node_bytes += bytes;
      ++ranks;
      if (node.kind != DeviceType::kCpu && node.device_memory_gib > 0 &&
          static_cast<double>(bytes) > node.device_memory_gib * kGiB) {
        problems.push_back(StrCat("rank ", r, " on ", node.host, " needs ",
                                  static_cast<double>(bytes) / kGiB, " GiB but its ",
                                  DeviceTypeName(node.kind), " has ", node.device_memory_gib,
                                  " GiB (nodes[", n, "].device_memory_gib)"));
      }
    }
    if (node.memory_gib > 0 && static_cast<double>(node_bytes) > node.memory_gib * kGiB) {
      problems.push_back(StrCat(
          "node ", node.host, " needs ", static_cast<double>(node_bytes) / kGiB, " GiB for its ",
          ranks, " ranks but has ", node.memory_gib, " GiB (nodes[", n, "].memory_gib)"));
    }
  }
  return problems;
}

PodTopology ParsePodTopology(const std::string& yaml_text, const std::string& source) {
  return ParseDocument(ParseYamlDocument(yaml_text, source));
}

PodTopology LoadPodTopology(const std::string& path) {
  return ParsePodTopology(ReadConfigText(path, "pod file"), path);
}

}  // namespace gemmapod
