#include "launch/rank_map.h"

#include <fmt/format.h>

#include "sharding/process_grid.h"

namespace gemmapod {

namespace {

std::string DeviceLabel(DeviceType kind, int local) {
  switch (kind) {
    case DeviceType::kCpu:
      return fmt::format("cpu:{}", local);
    case DeviceType::kGpu:
      return fmt::format("cuda:{}", local);
    case DeviceType::kTpu:
      return fmt::format("tpu:{}", local);
  }
  return "?";
}

std::string StageLabel(const PodTopology& pod, int stage) {
  const PipelineLayout& p = pod.pipeline;
  if (!p.automatic) {
    const StageLayout& s = p.stages.at(stage);
    return fmt::format("{} layers {}-{}", StackPartName(s.part), s.first_layer, s.last_layer);
  }
  const bool encoder = stage < p.encoder_stages;
  return fmt::format("{} layers auto", p.encoder_stages > 0 && encoder ? "encoder" : "decoder");
}

std::string LinkLabel(const Link& link) {
  if (link.type.empty()) return "unspecified";
  return link.gbps > 0 ? fmt::format("{} {} Gb/s", link.type, link.gbps) : link.type;
}

}  // namespace

std::string RenderPodSummary(const PodTopology& pod) {
  std::string out =
      fmt::format("pod {}{}: {} node(s), {} {} device(s); tp={} pp={} dp={}\n", pod.source,
                  pod.name.empty() ? "" : " (" + pod.name + ")", pod.nodes.size(), pod.world_size(),
                  DeviceTypeName(pod.device_type()), pod.tp, pod.pp, pod.dp);
  out +=
      fmt::format("interconnect: intra-node {}, inter-node {}\n",
                  LinkLabel(pod.interconnect.intra_node), LinkLabel(pod.interconnect.inter_node));
  out += pod.pipeline.automatic
             ? "pipeline: auto (layer ranges are balanced by parameter bytes once a model is "
               "given)\n"
             : "pipeline: explicit layer ranges\n";
  return out;
}

std::string RenderRankMap(const PodTopology& pod) {
  const GridShape shape{pod.tp, pod.pp, pod.dp};
  size_t host_width = 4;
  for (const PodNode& n : pod.nodes) host_width = std::max(host_width, n.host.size());
  std::string out = fmt::format("{:>4}  {:<{}}  {:<8}  {:>2}  {:>2}  {:>2}  {}\n", "rank", "host",
                                host_width, "device", "dp", "pp", "tp", "stage");
  for (int r = 0; r < pod.world_size(); ++r) {
    GridCoords c;
    if (pod.encoder_tp > 0) {
      // Encoder stages of encoder_tp ranks, then decoder stages of tp ranks; one replica.
      int first = 0;
      for (int stage = 0; stage < pod.pp; ++stage) {
        const int size = stage < pod.pipeline.encoder_stages ? pod.encoder_tp : pod.tp;
        if (r < first + size) {
          c = {0, stage, r - first};
          break;
        }
        first += size;
      }
    } else {
      c = shape.CoordsOf(r);
    }
    const PodNode& node = pod.nodes.at(pod.node_of_rank(r));
    out += fmt::format("{:>4}  {:<{}}  {:<8}  {:>2}  {:>2}  {:>2}  {}: {}\n", r, node.host,
                       host_width, DeviceLabel(node.kind, pod.local_device_of_rank(r)), c.dp, c.pp,
                       c.tp, c.pp, StageLabel(pod, c.pp));
  }
  return out;
}

}  // namespace gemmapod
