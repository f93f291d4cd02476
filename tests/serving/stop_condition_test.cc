// Stop conditions: a stop string never reaches the user, even split over pushes; text held back
// because it might begin one is released once it cannot, or at Flush.
#include "serving/stop_condition.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "runtime/error.h"

namespace gemmapod {
namespace {

TEST(StopCondition, StopStringSplitAcrossPushesIsNeverShown) {
  StopCondition stop({}, {"</answer>"});
  bool stopped = false;
  EXPECT_EQ(stop.Push("The result is 4", &stopped), "The result is 4");
  EXPECT_EQ(stop.Push(".</ans", &stopped), ".");  // "</ans" might be the stop string
  EXPECT_FALSE(stopped);
  EXPECT_EQ(stop.Push("w", &stopped), "");
  EXPECT_FALSE(stopped);
  EXPECT_EQ(stop.Push("er> trailing", &stopped), "");
  EXPECT_TRUE(stopped);
}

TEST(StopCondition, HeldBackPrefixIsReleasedWhenItIsNotAStop) {
  StopCondition stop({}, {"STOP"});
  bool stopped = false;
  EXPECT_EQ(stop.Push("a ST", &stopped), "a ");
  EXPECT_EQ(stop.Push("ILL", &stopped), "STILL");
  EXPECT_EQ(stop.Push(" ST", &stopped), " ");
  EXPECT_EQ(stop.Push("O", &stopped), "");
  EXPECT_EQ(stop.Flush(), "STO");  // generation ended: nothing is withheld for good
  EXPECT_FALSE(stopped);
  EXPECT_EQ(stop.Flush(), "");
}

TEST(StopCondition, OverlappingPrefixesAreFoundAtTheirTrueStart) {
  StopCondition stop({}, {"aab"});
  bool stopped = false;
  EXPECT_EQ(stop.Push("xaa", &stopped), "x");
  EXPECT_EQ(stop.Push("a", &stopped), "a");  // "aaa": only the last "aa" can still start "aab"
  EXPECT_EQ(stop.Push("b!", &stopped), "");
  EXPECT_TRUE(stopped);
}

TEST(StopCondition, EarliestOfSeveralStopStringsWins) {
  StopCondition stop({7, 9}, {"\n\n", "User:"});
  bool stopped = false;
  EXPECT_EQ(stop.Push("one\ntwo User: x\n\n", &stopped), "one\ntwo ");
  EXPECT_TRUE(stopped);
  EXPECT_TRUE(stop.IsStopToken(9));
  EXPECT_TRUE(stop.IsStopToken(7));
  EXPECT_FALSE(stop.IsStopToken(8));
}

TEST(StopCondition, EachOfSeveralStopStringsIsHeldBack) {
  StopCondition stop({}, {"###", "Ende."});
  bool stopped = false;
  EXPECT_EQ(stop.Push("Grüße #", &stopped), "Grüße ");
  EXPECT_EQ(stop.Push("# En", &stopped), "## ");  // "##" + " " cannot be "###" any more
  EXPECT_EQ(stop.Push("de.", &stopped), "");
  EXPECT_TRUE(stopped);
}

TEST(StopCondition, WithoutStopStringsTextPassesStraightThrough) {
  StopCondition stop({1}, {});
  bool stopped = true;
  EXPECT_EQ(stop.Push("anything </s>", &stopped), "anything </s>");
  EXPECT_FALSE(stopped);
  EXPECT_EQ(stop.Flush(), "");
}

TEST(StopCondition, EmptyStopStringsAreRejected) {
  try {
    StopCondition({}, {"ok", ""});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("stop_strings[1] is empty"));
  }
}

}  // namespace
}  // namespace gemmapod
