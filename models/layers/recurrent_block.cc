#include "models/layers/recurrent_block.h"

#include "models/layers/device_tensors.h"
#include "models/layers/parallel.h"
#include "runtime/ops/ops.h"

namespace gemmapod {

void RecurrentBlockForward(const Tensor& x, const RecurrentBlockWeights& w,
                           const RecurrentBlockInputs& at, RecurrentBlockState& state,
                           Communicator* tp, MatmulPrecision precision, Tensor& out,
                           ActivationStore* store, int64_t layer) {
  const int64_t T = x.dim(0), lru = w.linear_x.weight.dim(0);
  auto make = [&] { return ActivationLike(x, {T, lru}); };
  Tensor y = make(), u = make(), conv = make(), gate_x = make(), gate_a = make(), h = make();
  ColumnParallelLinear(w.linear_y).Forward(x, y, precision);
  SaveActivation(store, layer, "y_pre_gelu", y);
  ops::GeluTanh(y, y);
  ColumnParallelLinear(w.linear_x).Forward(x, u, precision);
  SaveActivation(store, layer, "conv_input", u);
  SaveActivation(store, layer, "conv_history_before", state.conv_history);
  ops::CausalConv1d(u, w.conv_weight, w.conv_bias, at.conv_reach, state.conv_history, conv);
  SaveActivation(store, layer, "conv_output", conv);
  ops::BlockDiagonalMatMul(conv, w.input_gate_weight, w.input_gate_bias, gate_x);
  ops::BlockDiagonalMatMul(conv, w.recurrent_gate_weight, w.recurrent_gate_bias, gate_a);
  SaveActivation(store, layer, "gate_x", gate_x);
  SaveActivation(store, layer, "gate_a", gate_a);
  SaveActivation(store, layer, "lru_state_before", state.lru);
  ops::RgLru(conv, gate_x, gate_a, w.recurrent_param, at.positions, state.lru, h);
  SaveActivation(store, layer, "lru_output", h);
  ops::Mul(y, h, y);  // the GELU branch gates the recurrence's output
  RowParallelLinear(w.linear_out, tp).Forward(y, out, precision);
}

}  // namespace gemmapod
