// Pipeline-parallel training schedules as lists of instructions (DeepSpeed's shape): each stage
// gets its own list of what to do, micro-batch by micro-batch, and one engine
// (training/pipeline_engine.h) interprets any list. A schedule is then data that a test can
// check without running a model: every send meets its receive, nothing waits forever, and how
// many activations a stage holds at once.
//
//   GPipe: every micro-batch's forward, then every backward. Stage s holds the activations of all
//          m micro-batches; the bubble is (p - 1) / (m + p - 1) of the step.
//   1F1B:  stage s runs p - 1 - s forwards ahead (the warm-up), then alternates one forward and
//          one backward, then drains the backwards (Megatron's non-interleaved schedule). The
//          same bubble, but a stage holds at most p - s micro-batches' activations.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gemmapod {

enum class PipelineOp {
  kRecvActivation,  // the previous stage's output for micro-batch `micro`
  kForward,
  kSendActivation,  // this stage's output, to the next stage
  kRecvGradient,    // the next stage's gradient of this stage's output
  kBackward,
  kSendGradient,  // the gradient of this stage's input, to the previous stage
};

struct PipelineInstruction {
  PipelineOp op;
  int64_t micro;
  bool operator==(const PipelineInstruction&) const = default;
};

enum class PipelineSchedule { kOneFOneB, kGPipe };

// The name a job file uses ("1f1b", "gpipe"), and back (nothing for an unknown name).
const char* PipelineScheduleName(PipelineSchedule schedule);
bool ParsePipelineSchedule(const std::string& name, PipelineSchedule& schedule);

// Stage `stage` of `stages`' instructions for a step of `micro_batches` micro-batches. The
// first stage receives nothing and sends no gradient; the last sends no activation and receives
// no gradient (its forward ends in the loss, whose gradient it starts the backward from).
std::vector<PipelineInstruction> StageInstructions(PipelineSchedule schedule, int stages, int stage,
                                                   int64_t micro_batches);

// Forward only (evaluation): receive, forward, send, micro-batch after micro-batch.
std::vector<PipelineInstruction> ForwardInstructions(int stages, int stage, int64_t micro_batches);

// The most micro-batches whose activations a stage holds at once under `instructions`.
int64_t PeakInFlight(const std::vector<PipelineInstruction>& instructions);

}  // namespace gemmapod
