// The human-readable plan of a pod: which host, device and (dp, pp, tp) coordinates each rank
// gets, and which layers each pipeline stage holds. Printed by `gemmapod plan`.
#pragma once

#include <string>

#include "sharding/pod_topology.h"

namespace gemmapod {

std::string RenderPodSummary(const PodTopology& pod);
std::string RenderRankMap(const PodTopology& pod);

}  // namespace gemmapod
