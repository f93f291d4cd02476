// How f32 activations meet bf16 weights in a matrix product: a property of a run (the CLI's
// --precision), the same on every device.
#pragma once

namespace gemmapod {

enum class MatmulPrecision {
  // Products carry (close to) f32 precision of the activations. For bf16 weights the activations
  // are split into two bf16 halves (x = hi + lo), so the error per product is about 2^-16
  // relative instead of bf16's 2^-9. The default: what golden tests against f32 references need.
  kExact,
  // Activations rounded to bf16 once (as PyTorch bf16 inference does): twice the GEMM throughput.
  kFastBF16,
};

}  // namespace gemmapod
