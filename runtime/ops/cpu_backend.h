// The CPU's operations backend: today's kernels (runtime/cpu) behind the seam. Built in.
#pragma once

#include "runtime/ops/backend.h"

namespace gemmapod::ops {

Backend& CpuBackend();

}  // namespace gemmapod::ops
