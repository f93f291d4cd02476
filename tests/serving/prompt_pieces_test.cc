// How the pipeline engine cuts a lone prompt for chunked prefill: whole when short or with one
// stage, otherwise pieces of at least kMinPromptPiece tokens, at most four per stage, covering the
// prompt in order.
#include <gtest/gtest.h>

#include <utility>
#include <vector>

#include "serving/engine/pipeline_engine.h"

namespace gemmapod {
namespace {

using Cuts = std::vector<std::pair<int64_t, int64_t>>;

TEST(PromptPieces, ShortPromptsAndSingleStagesGoWhole) {
  EXPECT_EQ(PromptPieces(24, 4), (Cuts{{0, 24}}));
  EXPECT_EQ(PromptPieces(2 * kMinPromptPiece - 1, 4), (Cuts{{0, 2 * kMinPromptPiece - 1}}));
  EXPECT_EQ(PromptPieces(100000, 1), (Cuts{{0, 100000}}));
  EXPECT_EQ(PromptPieces(1, 2), (Cuts{{0, 1}}));
}

TEST(PromptPieces, LongPromptsGoInPiecesOfAtLeastTheMinimum) {
  for (const auto& [tokens, stages] : std::vector<std::pair<int64_t, int>>{
           {128, 2}, {200, 2}, {1000, 2}, {1000, 4}, {100000, 3}}) {
    const Cuts cuts = PromptPieces(tokens, stages);
    SCOPED_TRACE(testing::Message() << tokens << " tokens, " << stages << " stages");
    EXPECT_GE(cuts.size(), 2u);
    EXPECT_LE(cuts.size(), 4u * static_cast<size_t>(stages));
    int64_t next = 0;
    for (const auto& [b, e] : cuts) {
      EXPECT_EQ(b, next);
      EXPECT_GE(e - b, kMinPromptPiece);
      next = e;
    }
    EXPECT_EQ(next, tokens);
  }
  EXPECT_EQ(PromptPieces(200, 2), (Cuts{{0, 66}, {66, 133}, {133, 200}}));
  EXPECT_EQ(PromptPieces(100000, 3).size(), 12u);
}

}  // namespace
}  // namespace gemmapod
