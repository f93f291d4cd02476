#include "models/layers/geglu_mlp.h"

#include "models/layers/device_tensors.h"
#include "runtime/ops/grad_ops.h"
#include "runtime/ops/ops.h"

namespace gemmapod {

void GegluMlpForward(const Tensor& x, const GegluMlpWeights& w, Communicator* tp, Tensor& gate,
                     Tensor& up, Tensor& hidden, Tensor& out, cpu::MatmulPrecision precision) {
  ColumnParallelLinear(w.gate_proj).Forward(x, gate, precision);
  ColumnParallelLinear(w.up_proj).Forward(x, up, precision);
  ops::GeluTanh(gate, hidden);
  ops::Mul(hidden, up, hidden);
  RowParallelLinear(w.down_proj, tp).Forward(hidden, out, precision);
}

GegluMlpGrads GegluMlpGrads::ZerosFor(const GegluMlpWeights& w) {
  return {LinearGrad::ZerosFor(w.gate_proj), LinearGrad::ZerosFor(w.up_proj),
          LinearGrad::ZerosFor(w.down_proj)};
}

void GegluMlpBackward(const Tensor& x, const GegluMlpWeights& w, const Tensor& gate,
                      const Tensor& up, const Tensor& hidden, const Tensor& dout, Communicator* tp,
                      Tensor& dx, GegluMlpGrads& grads) {
  const int64_t T = gate.dim(0), ffn = gate.dim(1);
  // out = down(hidden), hidden = gelu(gate) * up.
  Tensor d_hidden = ActivationLike(gate, {T, ffn});
  RowParallelLinear(w.down_proj, tp).Backward(hidden, dout, &d_hidden, grads.down_proj);
  Tensor d_up = ActivationLike(gate, {T, ffn}), d_gate = ActivationLike(gate, {T, ffn});
  ops::GeluTanh(gate, d_up);       // gelu(gate), recomputed: cheaper than keeping it
  ops::Mul(d_hidden, d_up, d_up);  // d_up = d_hidden * gelu(gate)
  ops::Mul(d_hidden, up, d_gate);  // d(gelu(gate)) = d_hidden * up
  ops::GeluTanhBackward(gate, d_gate, d_gate);
  Tensor dx_up = ActivationLike(x, x.shape());
  ColumnParallelLinear(w.gate_proj).Backward(x, d_gate, &dx, grads.gate_proj);
  ColumnParallelLinear(w.up_proj).Backward(x, d_up, &dx_up, grads.up_proj);
  ops::Add(dx, dx_up, dx);
  AllReduceSum(tp, dx);
}

}  // namespace gemmapod
