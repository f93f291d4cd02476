#include "models/layers/geglu_mlp.h"

#include "runtime/cpu/ops.h"

namespace gemmapod {

void GegluMlpForward(const Tensor& x, const GegluMlpWeights& w, Tensor& gate, Tensor& up,
                     Tensor& hidden, Tensor& out, cpu::MatmulPrecision precision) {
  LinearForward(x, w.gate_proj, gate, precision);
  LinearForward(x, w.up_proj, up, precision);
  cpu::GeluTanh(gate.data<float>(), hidden.data<float>(), gate.numel());
  cpu::Mul(hidden.data<float>(), up.data<float>(), hidden.data<float>(), hidden.numel());
  LinearForward(hidden, w.down_proj, out, precision);
}

}  // namespace gemmapod
