// ProcessGrid: the job's ranks arranged as dp x pp x tp, with one communicator per axis.
// Rank order puts TP innermost, then DP, then PP (Megatron's order): the ranks of a TP group are
// consecutive, so they share a node (pod files require tp to divide every node's devices), and
// pipeline stages are the outermost blocks, so stages map to nodes when pp spans nodes.
//   rank = tp_rank + tp * (dp_rank + dp * pp_rank)
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "runtime/comm/communicator.h"
#include "runtime/device.h"

namespace gemmapod {

struct PodTopology;

struct GridCoords {
  int dp = 0;
  int pp = 0;
  int tp = 0;
  bool operator==(const GridCoords&) const = default;
};

// The arithmetic of the layout, without any communication (used by `gemmapod plan` too).
struct GridShape {
  int tp = 1;
  int pp = 1;
  int dp = 1;

  int world_size() const { return tp * pp * dp; }
  GridCoords CoordsOf(int rank) const;
  int RankOf(GridCoords c) const;
  // World ranks of the groups that contain `rank`, in group-rank order.
  std::vector<int> TpGroupOf(int rank) const;
  std::vector<int> PpGroupOf(int rank) const;
  std::vector<int> DpGroupOf(int rank) const;
};

// Throws gemmapod::Error (naming the pod file and how to start the job) unless a job of
// `world_size` ranks can run `pod`: one rank per device, and a backend for its device kind.
void CheckPodFitsJob(const PodTopology& pod, int world_size);

class ProcessGrid {
 public:
  // Collective over `world`. Checks that the job has as many ranks as the pod has devices and
  // picks this rank's device (CPU ranks use the CPU; GPU ranks use their node-local index).
  static ProcessGrid Create(Communicator& world, const PodTopology& pod);
  // Collective over `world`, for a shape without a pod file (tests, tools); devices are CPU.
  static ProcessGrid Create(Communicator& world, GridShape shape);

  const GridShape& shape() const { return shape_; }
  const GridCoords& coords() const { return coords_; }
  int world_rank() const { return world_->rank(); }
  int world_size() const { return world_->size(); }
  Device device() const { return device_; }

  Communicator& world() const { return *world_; }
  Communicator& tp() const { return *tp_; }
  Communicator& pp() const { return *pp_; }
  Communicator& dp() const { return *dp_; }

  bool is_first_stage() const { return coords_.pp == 0; }
  bool is_last_stage() const { return coords_.pp == shape_.pp - 1; }

 private:
  ProcessGrid() = default;

  GridShape shape_;
  GridCoords coords_;
  Device device_;
  Communicator* world_ = nullptr;
  std::shared_ptr<Communicator> tp_, pp_, dp_;
};

}  // namespace gemmapod
