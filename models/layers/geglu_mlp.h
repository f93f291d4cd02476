// The GeGLU MLP of every Gemma: out = down(gelu_tanh(gate(x)) * up(x)).
#pragma once

#include "models/layers/linear.h"
#include "models/layers/parallel.h"
#include "runtime/cpu/matmul.h"
#include "runtime/tensor.h"

namespace gemmapod {

struct GegluMlpWeights {
  const Linear& gate_proj;  // [ffn, d]
  const Linear& up_proj;    // [ffn, d]
  const Linear& down_proj;  // [d, ffn]
};

// x: f32 [T, d]; out: f32 [T, d]. The caller's buffers gate, up and hidden ([T, ffn]) are left
// holding gate(x) before the activation, up(x), and their GeGLU product: what a backward pass
// needs (the activation's derivative at gate(x), and both factors) without recomputing.
// With tensor parallelism (`tp`, may be null) the weights are this rank's slices: gate and up
// column-parallel, down row-parallel, so `out` is the whole sum on every rank. Biases, where a
// family has them (RecurrentGemma), are added as the parallel layers add them.
void GegluMlpForward(const Tensor& x, const GegluMlpWeights& w, Communicator* tp, Tensor& gate,
                     Tensor& up, Tensor& hidden, Tensor& out, cpu::MatmulPrecision precision);

// The gradients of the three projections.
struct GegluMlpGrads {
  LinearGrad gate_proj, up_proj, down_proj;
  static GegluMlpGrads ZerosFor(const GegluMlpWeights& w);
};

// The backward of GegluMlpForward from what it left (x, gate, up, hidden) and dout = dL/dout:
// dx = dL/dx, whole on every rank of `tp` (the column-parallel layers' partial input gradients
// summed in one all-reduce); grads accumulate this rank's slices.
void GegluMlpBackward(const Tensor& x, const GegluMlpWeights& w, const Tensor& gate,
                      const Tensor& up, const Tensor& hidden, const Tensor& dout, Communicator* tp,
                      Tensor& dx, GegluMlpGrads& grads);

}  // namespace gemmapod
