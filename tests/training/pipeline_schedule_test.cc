// The pipeline schedules as data: every stage's list is run in a simulated pipeline where sends
// return at once and receives wait (the engine's rules), one time unit per forward and per
// backward. Every schedule must finish (no stage waits forever), run each micro-batch's forward
// and backward once on every stage in order, take 2 (m + p - 1) units (the bubble
// (p - 1) / (m + p - 1)), and 1F1B must hold no more than p - s micro-batches on stage s.
#include "training/pipeline_schedule.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

namespace gemmapod {
namespace {

struct Simulated {
  bool finished = false;
  int64_t makespan = 0;  // time units until the last stage's last instruction
};

// Runs every stage's list. A message (op, micro, from, to) is available to its receiver from the
// time its sender issued it; a stage's clock advances by one unit per forward or backward and
// jumps to a message's time when it waits for it.
Simulated Simulate(const std::vector<std::vector<PipelineInstruction>>& lists) {
  const int stages = static_cast<int>(lists.size());
  std::vector<size_t> next(stages, 0);
  std::vector<int64_t> clock(stages, 0);
  // (is_gradient, micro, receiver) -> the time it was sent.
  std::map<std::tuple<bool, int64_t, int>, int64_t> sent;
  bool progress = true;
  while (progress) {
    progress = false;
    for (int s = 0; s < stages; ++s) {
      while (next[s] < lists[s].size()) {
        const PipelineInstruction& i = lists[s][next[s]];
        if (i.op == PipelineOp::kRecvActivation || i.op == PipelineOp::kRecvGradient) {
          const auto it = sent.find({i.op == PipelineOp::kRecvGradient, i.micro, s});
          if (it == sent.end()) break;  // waits
          clock[s] = std::max(clock[s], it->second);
          sent.erase(it);
        } else if (i.op == PipelineOp::kSendActivation) {
          EXPECT_TRUE(sent.emplace(std::make_tuple(false, i.micro, s + 1), clock[s]).second);
        } else if (i.op == PipelineOp::kSendGradient) {
          EXPECT_TRUE(sent.emplace(std::make_tuple(true, i.micro, s - 1), clock[s]).second);
        } else {
          ++clock[s];
        }
        ++next[s];
        progress = true;
      }
    }
  }
  Simulated out;
  out.finished = sent.empty();
  for (int s = 0; s < stages; ++s) {
    out.finished = out.finished && next[s] == lists[s].size();
    out.makespan = std::max(out.makespan, clock[s]);
  }
  return out;
}

TEST(PipelineSchedule, EverySchedulePipelinesEveryMicroBatchWithTheTheoreticalBubble) {
  for (const PipelineSchedule schedule : {PipelineSchedule::kOneFOneB, PipelineSchedule::kGPipe}) {
    for (int p = 1; p <= 4; ++p) {
      for (int64_t m = 1; m <= 8; ++m) {
        SCOPED_TRACE(::testing::Message()
                     << PipelineScheduleName(schedule) << " p " << p << " m " << m);
        std::vector<std::vector<PipelineInstruction>> lists;
        for (int s = 0; s < p; ++s) {
          lists.push_back(StageInstructions(schedule, p, s, m));
          // Each micro-batch forwarded once and then backwarded once, in micro-batch order.
          std::vector<int64_t> forwards, backwards;
          std::set<int64_t> open;
          for (const PipelineInstruction& i : lists.back()) {
            if (i.op == PipelineOp::kForward) {
              forwards.push_back(i.micro);
              open.insert(i.micro);
            }
            if (i.op == PipelineOp::kBackward) {
              EXPECT_EQ(open.erase(i.micro), 1u) << "backward before forward";
              backwards.push_back(i.micro);
            }
          }
          std::vector<int64_t> all(static_cast<size_t>(m));
          for (int64_t k = 0; k < m; ++k) all[static_cast<size_t>(k)] = k;
          EXPECT_EQ(forwards, all);
          EXPECT_EQ(backwards, all);
          const int64_t peak = PeakInFlight(lists.back());
          if (schedule == PipelineSchedule::kGPipe) {
            EXPECT_EQ(peak, m);
          } else {
            EXPECT_EQ(peak, std::min<int64_t>(m, p - s));
          }
        }
        const Simulated run = Simulate(lists);
        ASSERT_TRUE(run.finished) << "a stage waits forever";
        EXPECT_EQ(run.makespan, 2 * (m + p - 1));
      }
    }
  }
}

TEST(PipelineSchedule, OneFOneBWarmsUpThenAlternates) {
  // Stage 0 of 3, 4 micro-batches: two forwards ahead, then F B pairs, then the drain.
  std::vector<PipelineOp> compute;
  std::vector<int64_t> micro;
  for (const PipelineInstruction& i : StageInstructions(PipelineSchedule::kOneFOneB, 3, 0, 4)) {
    if (i.op == PipelineOp::kForward || i.op == PipelineOp::kBackward) {
      compute.push_back(i.op);
      micro.push_back(i.micro);
    }
  }
  using enum PipelineOp;
  EXPECT_EQ(compute, (std::vector<PipelineOp>{kForward, kForward, kForward, kBackward, kForward,
                                              kBackward, kBackward, kBackward}));
  EXPECT_EQ(micro, (std::vector<int64_t>{0, 1, 2, 0, 3, 1, 2, 3}));
  // The first stage receives no activation and sends no gradient; the last the reverse.
  for (const PipelineInstruction& i : StageInstructions(PipelineSchedule::kOneFOneB, 3, 0, 4)) {
    EXPECT_NE(i.op, kRecvActivation);
    EXPECT_NE(i.op, kSendGradient);
  }
  for (const PipelineInstruction& i : StageInstructions(PipelineSchedule::kOneFOneB, 3, 2, 4)) {
    EXPECT_NE(i.op, kSendActivation);
    EXPECT_NE(i.op, kRecvGradient);
  }
}

TEST(PipelineSchedule, ForwardOnlyAndNames) {
  const auto list = ForwardInstructions(2, 1, 3);
  EXPECT_EQ(list.size(), 6u);
  EXPECT_EQ(list[0], (PipelineInstruction{PipelineOp::kRecvActivation, 0}));
  EXPECT_EQ(list[1], (PipelineInstruction{PipelineOp::kForward, 0}));
  PipelineSchedule s{};
  EXPECT_TRUE(ParsePipelineSchedule("gpipe", s));
  EXPECT_EQ(s, PipelineSchedule::kGPipe);
  EXPECT_TRUE(ParsePipelineSchedule(PipelineScheduleName(PipelineSchedule::kOneFOneB), s));
  EXPECT_EQ(s, PipelineSchedule::kOneFOneB);
  EXPECT_FALSE(ParsePipelineSchedule("interleaved", s));
  EXPECT_THROW(StageInstructions(PipelineSchedule::kGPipe, 2, 2, 1), std::exception);
  EXPECT_THROW(StageInstructions(PipelineSchedule::kGPipe, 2, 0, 0), std::exception);
}

}  // namespace
}  // namespace gemmapod
