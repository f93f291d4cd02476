// The engine that runs a pipeline schedule's instructions (training/pipeline_schedule.h) on one
// stage: forwards and backwards through the stage's TrainableModel, activations and gradients
// through the pipeline group (stage s is its rank s). Sends start and return at once and are
// awaited at the end of the list, so a stage never blocks on a peer that is itself sending to
// it; receives wait. Every message is tagged with its micro-batch and direction, so nothing
// depends on the order in which two stages' sends arrive.
#pragma once

#include <cstdint>
#include <vector>

#include "training/gemma_lm.h"
#include "training/pipeline_schedule.h"
#include "training/trainable_model.h"

namespace gemmapod {

class Communicator;
struct TrainingExample;

struct PipelineStepResult {
  LossSum loss;       // the last stage's sum over the micro-batches; zero on the others
  double busy_s = 0;  // time in this stage's forwards and backwards
};

// `micro_batches[m]` are micro-batch m's examples (every stage has them all: the stages read the
// same data). With `gradient`, forwards keep their activations and gradients accumulate for
// its scale * the summed loss; without it the list must be forward only (evaluation). With
// `last_backward`, the model reports its layers to it during the list's last backward (after
// which the stage's gradients are final: data parallelism sums them meanwhile).
PipelineStepResult RunPipelineInstructions(
    const std::vector<PipelineInstruction>& instructions, Communicator& pipeline,
    TrainableModel& model, const std::vector<std::vector<const TrainingExample*>>& micro_batches,
    const TrainableModel::StageGradient* gradient,
    const TrainableModel::LayerDone& last_backward = nullptr);

}  // namespace gemmapod
