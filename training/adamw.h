// AdamW as PyTorch's torch.optim.AdamW computes it (decoupled weight decay, bias-corrected
// moments), with what fine-tuning needs around it: f32 master weights and moments whatever the
// model's weights are (a bf16 weight is refreshed from its master after each step), weight decay
// only where the caller asks (not on norms and biases), and global-norm gradient clipping. The
// update runs through the device seam (ops::AdamWUpdate) on the parameters' device.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace gemmapod {

struct AdamWOptions {
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
};

// One of a parameter's optimizer tensors (checkpoints move them one at a time, in this order).
enum class AdamWPart { kMaster, kFirstMoment, kSecondMoment };
inline constexpr AdamWPart kAdamWParts[] = {AdamWPart::kMaster, AdamWPart::kFirstMoment,
                                            AdamWPart::kSecondMoment};

class AdamW {
 public:
  explicit AdamW(AdamWOptions options);

  // Registers a parameter: the model's weight (f32 or bf16; updated in place) and its f32
  // gradient of the same shape, both kept alive by the caller. `decay`: whether weight decay
  // applies (false for norms and biases). Names are unique; errors name the parameter.
  void Add(const std::string& name, Tensor& weight, Tensor& grad, bool decay);

  // The global L2 norm of every registered gradient (of the elements this rank updates, when the
  // state is sharded).
  double GradNorm() const;
  // Sum of the squares of the gradient elements this rank updates (every element unsharded).
  double OwnedGradSquares() const;
  // One step at learning rate `lr`: gradients scaled down so their global norm is at most
  // `max_grad_norm` (<= 0: no clipping), then the AdamW update. Returns the norm before clipping.
  double Step(float lr, double max_grad_norm);
  // The same with the global norm given: with sharded state each rank holds only its elements'
  // summed gradients, and the replicas add their OwnedGradSquares to find it.
  double Step(float lr, double max_grad_norm, double grad_norm);

  // ZeRO-1: keeps master weights and moments only for elements [begin, end) of the registered
  // parameters laid end to end in registration order, and updates only those; the caller sums
  // their gradients over the replicas before a step and shares the updated values after it
  // (training/data_parallel.h). Called once, after every Add and before Restore or a step.
  void KeepStateOf(int64_t begin, int64_t end);
  bool sharded() const { return sharded_; }
  // Tensor parallelism: a replicated parameter's gradient counts in the global norm on one rank
  // of the group only; the others leave it out of OwnedGradSquares.
  void LeaveOutOfNorm(const std::string& name);
  // The elements [first, second) of a parameter (flattened) whose state this rank keeps.
  std::pair<int64_t, int64_t> owned(const std::string& name) const;
  // Zeros every gradient (after a step, or to drop an accumulated micro-batch).
  void ZeroGrad();

  int64_t steps() const { return steps_; }
  const AdamWOptions& options() const { return options_; }
  // The model's tensor and its gradient registered under `name`.
  const Tensor& weight(const std::string& name) const;
  const Tensor& grad(const std::string& name) const;
  // The registered parameters' names, in registration order.
  std::vector<std::string> names() const;
  // Every registered gradient and weight, in registration order (data parallelism sums the
  // former over the replicas and checks that the latter agree).
  std::vector<Tensor*> gradients();
  std::vector<const Tensor*> weights() const;
  std::vector<Tensor*> weights();
  // Resuming a run: a parameter's saved f32 master values and moments (its shape; a bf16 weight is
  // refreshed from the master), and how many steps were taken (the bias correction's count).
  void Restore(const std::string& name, const Tensor& master, const Tensor& first_moment,
               const Tensor& second_moment);
  void set_steps(int64_t steps);
  // A parameter's f32 master values and moments, by name (checkpoints; tests): the whole
  // parameter's, shaped as it is, or with sharded state its owned elements, 1-D.
  const Tensor& master(const std::string& name) const;
  const Tensor& first_moment(const std::string& name) const;
  const Tensor& second_moment(const std::string& name) const;
  const Tensor& state(const std::string& name, AdamWPart part) const;

 private:
  struct Parameter {
    std::string name;
    Tensor* weight;
    Tensor* grad;
    Tensor master;  // f32 (the weight itself when it is f32)
    Tensor m, v;
    bool decay;
    int64_t own_begin = 0, own_end = 0;  // the owned elements (all of them unsharded)
    bool in_norm = true;
  };
  const Parameter& Find(const std::string& name) const;
  // Allocates what state is missing: the moments (zeros) and the masters, whole or this rank's
  // elements.
  void AllocateState();

  AdamWOptions options_;
  std::vector<Parameter> params_;
  int64_t steps_ = 0;
  bool sharded_ = false;
};

}  // namespace gemmapod
