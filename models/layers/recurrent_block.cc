#include "models/layers/recurrent_block.h"

#include "models/layers/device_tensors.h"
#include "models/layers/parallel.h"
#include "runtime/ops/grad_ops.h"
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

RecurrentBlockGrads RecurrentBlockGrads::ZerosFor(const RecurrentBlockWeights& w) {
  const auto zeros = [](const Tensor& like) { return ZerosOn(like.device(), like.shape()); };
  return {LinearGrad::ZerosFor(w.linear_x),
          LinearGrad::ZerosFor(w.linear_y),
          LinearGrad::ZerosFor(w.linear_out),
          zeros(w.conv_weight),
          zeros(w.conv_bias),
          zeros(w.recurrent_param),
          zeros(w.input_gate_weight),
          zeros(w.input_gate_bias),
          zeros(w.recurrent_gate_weight),
          zeros(w.recurrent_gate_bias)};
}

void RecurrentBlockBackward(const Tensor& x, const RecurrentBlockWeights& w,
                            const RecurrentBlockInputs& at, const ActivationStore& store,
                            int64_t layer, const Tensor& dout, Communicator* tp, Tensor& dx,
                            RecurrentBlockGrads& grads) {
  const Tensor& y_pre = store.Get(layer, "y_pre_gelu");
  const Tensor& h = store.Get(layer, "lru_output");
  const Tensor& conv = store.Get(layer, "conv_output");
  const int64_t T = y_pre.dim(0), lru = y_pre.dim(1);
  auto make = [&] { return ActivationLike(dout, {T, lru}); };
  // out = linear_out(gelu(y_pre) * h)
  Tensor y = make(), product = make();
  ops::GeluTanh(y_pre, y);
  ops::Mul(y, h, product);
  Tensor d_product = make();
  RowParallelLinear(w.linear_out, tp).Backward(product, dout, &d_product, grads.linear_out);
  Tensor dy = make(), dh = make();
  ops::Mul(d_product, h, dy);
  ops::Mul(d_product, y, dh);
  ops::GeluTanhBackward(y_pre, dy, dy);
  // h = rg_lru(conv, gate_x(conv), gate_a(conv)) from the state before the chunk.
  Tensor d_conv = make(), dgate_x = make(), dgate_a = make(), d_from_gate = make();
  Tensor dstate = ActivationLike(dout, {lru});
  ops::RgLruBackward(conv, store.Get(layer, "gate_x"), store.Get(layer, "gate_a"),
                     w.recurrent_param, at.positions, store.Get(layer, "lru_state_before"), h, dh,
                     d_conv, dgate_x, dgate_a, grads.recurrent_param, dstate);
  ops::BlockDiagonalMatMulBackward(conv, w.input_gate_weight, dgate_x, d_from_gate,
                                   grads.input_gate_weight, grads.input_gate_bias);
  ops::Add(d_conv, d_from_gate, d_conv);
  ops::BlockDiagonalMatMulBackward(conv, w.recurrent_gate_weight, dgate_a, d_from_gate,
                                   grads.recurrent_gate_weight, grads.recurrent_gate_bias);
  ops::Add(d_conv, d_from_gate, d_conv);
  // conv = conv1d(u), u = linear_x(x)
  const Tensor& history = store.Get(layer, "conv_history_before");
  Tensor du = make(), dhistory = ActivationLike(dout, history.shape());
  ops::CausalConv1dBackward(store.Get(layer, "conv_input"), w.conv_weight, history, at.conv_reach,
                            d_conv, du, dhistory, grads.conv_weight, grads.conv_bias);
  Tensor partial = ActivationLike(dout, x.shape());
  ColumnParallelLinear(w.linear_x).Backward(x, du, &dx, grads.linear_x);
  ColumnParallelLinear(w.linear_y).Backward(x, dy, &partial, grads.linear_y);
  ops::Add(dx, partial, dx);
  AllReduceSum(tp, dx);
}

}  // namespace gemmapod
