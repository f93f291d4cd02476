// The grid's groups under mpiexec for every (tp, pp, dp) shape the world size allows: each
// rank checks its coordinates, and gathers the world ranks of every group it belongs to and
// compares them with the layout arithmetic. A collective inside each group must reach exactly
// those ranks.
#include "sharding/process_grid.h"

#include <gtest/gtest.h>

#include "runtime/comm/mpi_communicator.h"
#include "sharding/pod_topology.h"

namespace gemmapod {
namespace {

std::vector<int> GatherWorldRanks(Communicator& group, int world_rank) {
  Tensor mine = Tensor::Empty({1}, DType::kI32);
  mine.data<int32_t>()[0] = world_rank;
  Tensor all = Tensor::Empty({group.size()}, DType::kI32);
  group.AllGather(mine, all);
  return std::vector<int>(all.data<int32_t>(), all.data<int32_t>() + group.size());
}

std::vector<GridShape> ShapesFor(int world) {
  std::vector<GridShape> shapes;
  for (int tp = 1; tp <= world; ++tp) {
    for (int pp = 1; tp * pp <= world; ++pp) {
      if (world % (tp * pp) == 0) shapes.push_back({tp, pp, world / (tp * pp)});
    }
  }
  return shapes;
}

TEST(ProcessGrid, GroupsMatchTheLayoutForEveryShape) {
  auto world = MpiCommunicator::World();
  const int me = world->rank();
  for (const GridShape& shape : ShapesFor(world->size())) {
    SCOPED_TRACE(testing::Message()
                 << "tp=" << shape.tp << " pp=" << shape.pp << " dp=" << shape.dp);
    ProcessGrid grid = ProcessGrid::Create(*world, shape);
    const GridCoords c = grid.coords();
    EXPECT_EQ(me, c.tp + shape.tp * (c.dp + shape.dp * c.pp));
    EXPECT_EQ(grid.tp().rank(), c.tp);
    EXPECT_EQ(grid.pp().rank(), c.pp);
    EXPECT_EQ(grid.dp().rank(), c.dp);
    EXPECT_EQ(GatherWorldRanks(grid.tp(), me), shape.TpGroupOf(me));
    EXPECT_EQ(GatherWorldRanks(grid.pp(), me), shape.PpGroupOf(me));
    EXPECT_EQ(GatherWorldRanks(grid.dp(), me), shape.DpGroupOf(me));
    // TP groups are runs of consecutive ranks (so they stay on one node).
    const std::vector<int> tp_group = shape.TpGroupOf(me);
    for (size_t i = 1; i < tp_group.size(); ++i) EXPECT_EQ(tp_group[i], tp_group[i - 1] + 1);
    EXPECT_EQ(grid.is_first_stage(), c.pp == 0);
    EXPECT_EQ(grid.is_last_stage(), c.pp == shape.pp - 1);
  }
}

TEST(ProcessGrid, WrongWorldSizeIsAnError) {
  auto world = MpiCommunicator::World();
  EXPECT_THROW(ProcessGrid::Create(*world, GridShape{world->size() + 1, 1, 1}), Error);
}

TEST(ProcessGrid, FromPodFileUsesItsDegrees) {
  auto world = MpiCommunicator::World();
  if (world->size() != 4) GTEST_SKIP() << "configs/pods/local-4.yaml describes 4 ranks";
  const PodTopology pod = LoadPodTopology("configs/pods/local-4.yaml");
  ProcessGrid grid = ProcessGrid::Create(*world, pod);
  EXPECT_EQ(grid.shape().tp, pod.tp);
  EXPECT_EQ(grid.shape().pp, pod.pp);
  EXPECT_EQ(grid.shape().dp, pod.dp);
  EXPECT_TRUE(grid.device().is_cpu());
}

TEST(ProcessGrid, PodOfAnotherSizeNamesTheFileAndTheFix) {
  auto world = MpiCommunicator::World();
  const PodTopology pod = LoadPodTopology("configs/pods/2x8-h100.yaml");
  try {
    ProcessGrid::Create(*world, pod);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("2x8-h100.yaml"), std::string::npos) << msg;
    EXPECT_NE(msg.find("16 devices"), std::string::npos) << msg;
    EXPECT_NE(msg.find("gemmapod launch"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace gemmapod
