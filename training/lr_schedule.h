// The learning rate over a run: linear warm-up from 0 to the peak, then cosine or linear decay to
// min_ratio * peak at the last step (or constant), as Megatron-LM and Hugging Face schedule it.
#pragma once

#include <cstdint>

namespace gemmapod {

struct LrSchedule {
  enum class Decay { kCosine, kLinear, kConstant };
  double peak = 1e-4;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  Decay decay = Decay::kCosine;
  double min_ratio = 0.0;  // the final rate as a fraction of the peak

  // The rate of step `step` (1-based: the first optimizer step is 1). Errors name impossible
  // settings (Validate).
  double At(int64_t step) const;
  void Validate() const;
};

}  // namespace gemmapod
