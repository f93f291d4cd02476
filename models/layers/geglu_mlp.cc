#include "models/layers/geglu_mlp.h"

#include "runtime/cpu/ops.h"
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

}  // namespace gemmapod
