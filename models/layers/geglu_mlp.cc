#include "models/layers/geglu_mlp.h"

#include "runtime/cpu/ops.h"

namespace gemmapod {

void GegluMlpForward(const Tensor& x, const GegluMlpWeights& w, Communicator* tp, Tensor& gate,
                     Tensor& up, Tensor& hidden, Tensor& out, cpu::MatmulPrecision precision) {
  ColumnParallelLinear(w.gate_proj).Forward(x, gate, precision);
  ColumnParallelLinear(w.up_proj).Forward(x, up, precision);
  cpu::GeluTanh(gate.data<float>(), hidden.data<float>(), gate.numel());
  cpu::Mul(hidden.data<float>(), up.data<float>(), hidden.data<float>(), hidden.numel());
  RowParallelLinear(w.down_proj, tp).Forward(hidden, out, precision);
}

}  // namespace gemmapod
