#include "training/pipeline_engine.h"

#include <chrono>
#include <map>
#include <memory>

#include "runtime/comm/communicator.h"
#include "runtime/error.h"
#include "training/trainable_model.h"

namespace gemmapod {
namespace {

// Micro-batch m's activation travels with tag kFirstTag + 2 m, its gradient with the next one.
constexpr int kFirstTag = 9000;
int ActivationTag(int64_t micro) { return kFirstTag + 2 * static_cast<int>(micro); }
int GradientTag(int64_t micro) { return ActivationTag(micro) + 1; }

}  // namespace

PipelineStepResult RunPipelineInstructions(
    const std::vector<PipelineInstruction>& instructions, Communicator& pipeline,
    TrainableModel& model, const std::vector<std::vector<const TrainingExample*>>& micro_batches,
    const TrainableModel::StageGradient* gradient, const TrainableModel::LayerDone& last_backward) {
  using Clock = std::chrono::steady_clock;
  const int stage = pipeline.rank();
  PipelineStepResult result;
  std::map<int64_t, Tensor> inputs, outputs, doutputs, dinputs;
  std::vector<std::unique_ptr<PendingTransfer>> sends;
  const auto take = [](std::map<int64_t, Tensor>& from, int64_t micro, const char* what) {
    const auto it = from.find(micro);
    GEMMAPOD_CHECK(it != from.end(), "pipeline: no ", what, " of micro-batch ", micro,
                   " at this point of the schedule");
    Tensor t = std::move(it->second);
    from.erase(it);
    return t;
  };
  size_t last_backward_at = instructions.size();
  for (size_t k = 0; k < instructions.size(); ++k) {
    if (instructions[k].op == PipelineOp::kBackward) last_backward_at = k;
  }
  for (size_t k = 0; k < instructions.size(); ++k) {
    const PipelineInstruction& i = instructions[k];
    GEMMAPOD_CHECK(i.micro >= 0 && i.micro < static_cast<int64_t>(micro_batches.size()),
                   "pipeline: micro-batch ", i.micro, " of ", micro_batches.size());
    const std::vector<const TrainingExample*>& examples =
        micro_batches[static_cast<size_t>(i.micro)];
    switch (i.op) {
      case PipelineOp::kRecvActivation: {
        Tensor in = Tensor::Empty(model.InputBoundary(examples), DType::kF32);
        pipeline.Recv(in, stage - 1, ActivationTag(i.micro));
        inputs[i.micro] = std::move(in);
        break;
      }
      case PipelineOp::kForward: {
        const Clock::time_point begin = Clock::now();
        LossSum loss;
        const Tensor in = inputs.count(i.micro) > 0 ? take(inputs, i.micro, "input") : Tensor();
        Tensor out = model.StageForward(i.micro, examples, in, gradient, loss);
        result.loss.sum += loss.sum;
        result.loss.targets += loss.targets;
        if (out.defined()) outputs[i.micro] = std::move(out);
        result.busy_s += std::chrono::duration<double>(Clock::now() - begin).count();
        break;
      }
      case PipelineOp::kSendActivation: {
        const Tensor out = take(outputs, i.micro, "output");
        GEMMAPOD_CHECK(out.dtype() == DType::kF32, "pipeline: a stage output in ",
                       std::string(DTypeName(out.dtype())), "; stages exchange f32 activations");
        sends.push_back(pipeline.SendAsync(out, stage + 1, ActivationTag(i.micro)));
        break;
      }
      case PipelineOp::kRecvGradient: {
        Tensor d = Tensor::Empty(model.OutputBoundary(examples), DType::kF32);
        pipeline.Recv(d, stage + 1, GradientTag(i.micro));
        doutputs[i.micro] = std::move(d);
        break;
      }
      case PipelineOp::kBackward: {
        GEMMAPOD_CHECK(gradient != nullptr, "pipeline: a backward in a forward-only schedule");
        const Clock::time_point begin = Clock::now();
        const Tensor d =
            doutputs.count(i.micro) > 0 ? take(doutputs, i.micro, "gradient") : Tensor();
        // The stage's last backward leaves each layer's gradients final as it goes: data
        // parallelism starts summing them (`last_backward`).
        if (k == last_backward_at && last_backward) model.SetLayerDone(last_backward);
        Tensor din = model.StageBackward(i.micro, d);
        if (k == last_backward_at && last_backward) model.SetLayerDone(nullptr);
        if (din.defined()) dinputs[i.micro] = std::move(din);
        result.busy_s += std::chrono::duration<double>(Clock::now() - begin).count();
        break;
      }
      case PipelineOp::kSendGradient:
        sends.push_back(pipeline.SendAsync(take(dinputs, i.micro, "input gradient"), stage - 1,
                                           GradientTag(i.micro)));
        break;
    }
    // Finished sends free their tensors as the schedule goes.
    while (!sends.empty() && sends.front()->Done()) sends.erase(sends.begin());
  }
  for (const std::unique_ptr<PendingTransfer>& s : sends) s->Wait();
  GEMMAPOD_CHECK(outputs.empty() && dinputs.empty() && inputs.empty() && doutputs.empty(),
                 "pipeline: the schedule left tensors unsent or unused");
  return result;
}

}  // namespace gemmapod
