#include "sharding/process_grid.h"

#include "runtime/error.h"
#include "sharding/pod_topology.h"

namespace gemmapod {

GridCoords GridShape::CoordsOf(int rank) const {
  GEMMAPOD_CHECK(rank >= 0 && rank < world_size(), "rank ", rank, " outside a grid of ",
                 world_size());
  GridCoords c;
  c.tp = rank % tp;
  c.dp = (rank / tp) % dp;
  c.pp = rank / (tp * dp);
  return c;
}

int GridShape::RankOf(GridCoords c) const { return c.tp + tp * (c.dp + dp * c.pp); }

std::vector<int> GridShape::TpGroupOf(int rank) const {
  GridCoords c = CoordsOf(rank);
  std::vector<int> group;
  for (c.tp = 0; c.tp < tp; ++c.tp) group.push_back(RankOf(c));
  return group;
}

std::vector<int> GridShape::PpGroupOf(int rank) const {
  GridCoords c = CoordsOf(rank);
  std::vector<int> group;
  for (c.pp = 0; c.pp < pp; ++c.pp) group.push_back(RankOf(c));
  return group;
}

std::vector<int> GridShape::DpGroupOf(int rank) const {
  GridCoords c = CoordsOf(rank);
  std::vector<int> group;
  for (c.dp = 0; c.dp < dp; ++c.dp) group.push_back(RankOf(c));
  return group;
}

ProcessGrid ProcessGrid::Create(Communicator& world, GridShape shape) {
  GEMMAPOD_CHECK(shape.tp >= 1 && shape.pp >= 1 && shape.dp >= 1,
                 "grid degrees must be >= 1: tp=", shape.tp, " pp=", shape.pp, " dp=", shape.dp);
  GEMMAPOD_CHECK(shape.world_size() == world.size(), "grid tp=", shape.tp, " x pp=", shape.pp,
                 " x dp=", shape.dp, " needs ", shape.world_size(), " ranks, the job has ",
                 world.size());
  ProcessGrid grid;
  grid.shape_ = shape;
  grid.world_ = &world;
  grid.coords_ = shape.CoordsOf(world.rank());
  const GridCoords& c = grid.coords_;
  // Colours number the groups; keys order ranks inside a group by their coordinate on the axis.
  grid.tp_ = world.Split(c.dp + shape.dp * c.pp, c.tp);
  grid.dp_ = world.Split(c.tp + shape.tp * c.pp, c.dp);
  grid.pp_ = world.Split(c.tp + shape.tp * c.dp, c.pp);
  return grid;
}

void CheckPodFitsJob(const PodTopology& pod, int world_size) {
  GEMMAPOD_CHECK(pod.world_size() == world_size, pod.source, ": the pod has ", pod.world_size(),
                 " devices (one rank each) but this job has ", world_size,
                 " rank(s); start it with `gemmapod launch --pod ", pod.source,
                 " -- <command>` or `mpirun -np ", pod.world_size(), " ...`");
  GEMMAPOD_CHECK(pod.device_type() != DeviceType::kTpu, pod.source,
                 ": tpu pods can be planned but not run: this build has no TPU backend");
}

ProcessGrid ProcessGrid::Create(Communicator& world, const PodTopology& pod) {
  CheckPodFitsJob(pod, world.size());
  ProcessGrid grid = Create(world, GridShape{pod.tp, pod.pp, pod.dp});
  const int local = pod.local_device_of_rank(world.rank());
  grid.device_ = pod.device_type() == DeviceType::kGpu ? Device::Cuda(local) : Device::Cpu();
  return grid;
}

}  // namespace gemmapod
