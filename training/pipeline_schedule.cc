#include "training/pipeline_schedule.h"

#include <algorithm>

#include "runtime/error.h"

namespace gemmapod {
namespace {

void AddForward(int stages, int stage, int64_t micro, std::vector<PipelineInstruction>& out) {
  if (stage > 0) out.push_back({PipelineOp::kRecvActivation, micro});
  out.push_back({PipelineOp::kForward, micro});
  if (stage + 1 < stages) out.push_back({PipelineOp::kSendActivation, micro});
}

void AddBackward(int stages, int stage, int64_t micro, std::vector<PipelineInstruction>& out) {
  if (stage + 1 < stages) out.push_back({PipelineOp::kRecvGradient, micro});
  out.push_back({PipelineOp::kBackward, micro});
  if (stage > 0) out.push_back({PipelineOp::kSendGradient, micro});
}

void CheckStage(int stages, int stage, int64_t micro_batches) {
  GEMMAPOD_CHECK(stages >= 1 && 0 <= stage && stage < stages && micro_batches >= 1,
                 "pipeline: stage ", stage, " of ", stages, " with ", micro_batches,
                 " micro-batch(es)");
}

}  // namespace

const char* PipelineScheduleName(PipelineSchedule schedule) {
  return schedule == PipelineSchedule::kGPipe ? "gpipe" : "1f1b";
}

bool ParsePipelineSchedule(const std::string& name, PipelineSchedule& schedule) {
  if (name == "1f1b") {
    schedule = PipelineSchedule::kOneFOneB;
  } else if (name == "gpipe") {
    schedule = PipelineSchedule::kGPipe;
  } else {
    return false;
  }
  return true;
}

std::vector<PipelineInstruction> StageInstructions(PipelineSchedule schedule, int stages, int stage,
                                                   int64_t micro_batches) {
  CheckStage(stages, stage, micro_batches);
  std::vector<PipelineInstruction> out;
  if (schedule == PipelineSchedule::kGPipe) {
    for (int64_t m = 0; m < micro_batches; ++m) AddForward(stages, stage, m, out);
    for (int64_t m = 0; m < micro_batches; ++m) AddBackward(stages, stage, m, out);
    return out;
  }
  // 1F1B: the warm-up fills the pipeline below this stage; in the steady state each forward is
  // followed by the backward of the oldest micro-batch in flight; the cool-down drains them.
  const int64_t warmup = std::min<int64_t>(stages - 1 - stage, micro_batches);
  for (int64_t m = 0; m < warmup; ++m) AddForward(stages, stage, m, out);
  for (int64_t m = warmup; m < micro_batches; ++m) {
    AddForward(stages, stage, m, out);
    AddBackward(stages, stage, m - warmup, out);
  }
  for (int64_t m = micro_batches - warmup; m < micro_batches; ++m) {
    AddBackward(stages, stage, m, out);
  }
  return out;
}

std::vector<PipelineInstruction> ForwardInstructions(int stages, int stage, int64_t micro_batches) {
  CheckStage(stages, stage, micro_batches);
  std::vector<PipelineInstruction> out;
  for (int64_t m = 0; m < micro_batches; ++m) AddForward(stages, stage, m, out);
  return out;
}

int64_t PeakInFlight(const std::vector<PipelineInstruction>& instructions) {
  int64_t now = 0, peak = 0;
  for (const PipelineInstruction& i : instructions) {
    if (i.op == PipelineOp::kForward) peak = std::max(peak, ++now);
    if (i.op == PipelineOp::kBackward) --now;
  }
  return peak;
}

}  // namespace gemmapod
