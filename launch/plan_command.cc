#include <cstdio>

#include "launch/commands.h"
#include "launch/rank_map.h"
#include "sharding/pod_topology.h"

namespace gemmapod {

int RunPlan(const PlanOptions& options) {
  const PodTopology pod = LoadPodTopology(options.pod_path);
  std::fputs(RenderPodSummary(pod).c_str(), stdout);
  std::fputs(RenderRankMap(pod).c_str(), stdout);
  return 0;
}

}  // namespace gemmapod
