#include <gtest/gtest.h>

#include "sharding/process_grid.h"

namespace gemmapod {
namespace {

TEST(GridShape, CoordinatesRoundTripWithTpInnermost) {
  const GridShape shape{2, 2, 2};
  EXPECT_EQ(shape.world_size(), 8);
  for (int r = 0; r < 8; ++r) EXPECT_EQ(shape.RankOf(shape.CoordsOf(r)), r);
  EXPECT_EQ(shape.CoordsOf(1), (GridCoords{0, 0, 1}));  // dp, pp, tp
  EXPECT_EQ(shape.CoordsOf(2), (GridCoords{1, 0, 0}));
  EXPECT_EQ(shape.CoordsOf(4), (GridCoords{0, 1, 0}));
  EXPECT_EQ(shape.TpGroupOf(5), (std::vector<int>{4, 5}));
  EXPECT_EQ(shape.DpGroupOf(5), (std::vector<int>{5, 7}));
  EXPECT_EQ(shape.PpGroupOf(5), (std::vector<int>{1, 5}));
  EXPECT_THROW(shape.CoordsOf(8), Error);
}

}  // namespace
}  // namespace gemmapod
