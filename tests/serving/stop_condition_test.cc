#include "serving/stop_condition.h"

#include <gtest/gtest.h>

namespace gemmapod {
namespace {

TEST(StopCondition, StopStringSplitAcrossPushesIsNeverShown) {
  StopCondition stop({}, {"</answer>"});
  bool stopped = false;
  EXPECT_EQ(stop.Push("The result is 4", &stopped), "The result is 4");
  EXPECT_EQ(stop.Push(".</ans", &stopped), ".");  // "</ans" might be the stop string
  EXPECT_FALSE(stopped);
  EXPECT_EQ(stop.Push("wer> trailing", &stopped), "");
  EXPECT_TRUE(stopped);
}

TEST(StopCondition, HeldBackPrefixIsReleasedWhenItIsNotAStop) {
  StopCondition stop({}, {"STOP"});
  bool stopped = false;
  EXPECT_EQ(stop.Push("a ST", &stopped), "a ");
  EXPECT_EQ(stop.Push("ILL", &stopped), "STILL");
  EXPECT_EQ(stop.Push(" ST", &stopped), " ");
  EXPECT_EQ(stop.Flush(), "ST");  // generation ended: nothing is withheld for good
  EXPECT_FALSE(stopped);
}

TEST(StopCondition, EarliestOfSeveralStopStringsWins) {
  StopCondition stop({7, 9}, {"\n\n", "User:"});
  bool stopped = false;
  EXPECT_EQ(stop.Push("one\ntwo User: x\n\n", &stopped), "one\ntwo ");
  EXPECT_TRUE(stopped);
  EXPECT_TRUE(stop.IsStopToken(9));
  EXPECT_FALSE(stop.IsStopToken(8));
}

}  // namespace
}  // namespace gemmapod
