#include "training/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "runtime/error.h"

namespace gemmapod {

void LrSchedule::Validate() const {
  GEMMAPOD_CHECK(peak > 0 && std::isfinite(peak), "schedule: peak learning rate ", peak,
                 " must be positive");
  GEMMAPOD_CHECK(total_steps >= 1 && warmup_steps >= 0 && warmup_steps <= total_steps,
                 "schedule: ", warmup_steps, " warm-up steps of ", total_steps,
                 " (need 0 <= warm-up <= steps, steps >= 1)");
  GEMMAPOD_CHECK(min_ratio >= 0 && min_ratio <= 1, "schedule: min_ratio ", min_ratio,
                 " must be in [0, 1]");
}

double LrSchedule::At(int64_t step) const {
  if (warmup_steps > 0 && step <= warmup_steps) {
    return peak * static_cast<double>(step) / static_cast<double>(warmup_steps);
  }
  if (decay == Decay::kConstant || total_steps <= warmup_steps) return peak;
  // Progress through the decay: 0 just after warm-up, 1 at the last step.
  const double span = static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  const double t = std::clamp(static_cast<double>(step - warmup_steps) / span, 0.0, 1.0);
  const double shape = decay == Decay::kCosine ? 0.5 * (1 + std::cos(std::numbers::pi * t)) : 1 - t;
  return peak * (min_ratio + (1 - min_ratio) * shape);
}

}  // namespace gemmapod
