// Griffin's recurrent block (RecurrentGemma's temporal-mixing layer), as google-deepmind/
// recurrentgemma's RecurrentBlock reads:
//
//   y = gelu(linear_y(x))                     the gate branch
//   u = conv1d(linear_x(x))                   causal depthwise convolution over time
//   h = rg_lru(u, gate_x(u), gate_a(u))       the gated linear recurrence, in f32
//   out = linear_out(y * h)
//
// With tensor parallelism each rank holds whole heads of the recurrence width: linear_x and
// linear_y are column-parallel, the convolution, gates and recurrence are per channel (no
// communication), and linear_out is row-parallel (one all-reduce).
#pragma once

#include <span>

#include "models/layers/activation_store.h"
#include "models/layers/linear.h"
#include "runtime/precision.h"
#include "runtime/tensor.h"

namespace gemmapod {

class Communicator;

// The recurrent temporal block: two branches of width lru from the normed input; the x branch
// runs through a causal depthwise convolution and the RG-LRU, the y branch through GELU, and
// their product returns to width d.
struct RecurrentBlockWeights {
  Linear linear_x;               // [lru, d] + bias
  Linear linear_y;               // [lru, d] + bias
  Linear linear_out;             // [d, lru] + bias
  Tensor conv_weight;            // [lru, 1, width]: tap k multiplies u[t - (width - 1 - k)]
  Tensor conv_bias;              // [lru]
  Tensor recurrent_param;        // [lru]: Λ, a = exp(-8 * gate * softplus(Λ))
  Tensor input_gate_weight;      // [H, lru/H, lru/H]: block h maps its inputs i to outputs j
  Tensor input_gate_bias;        // [H, lru/H]
  Tensor recurrent_gate_weight;  // [H, lru/H, lru/H]
  Tensor recurrent_gate_bias;    // [H, lru/H]
};

// One sequence's state in one recurrent layer: views of the model's state tensors.
struct RecurrentBlockState {
  Tensor conv_history;  // [width - 1, lru]: the last width - 1 convolution inputs, oldest first
  Tensor lru;           // [lru] f32: the recurrence's h
};

// What the block's tokens may see: per token, how many earlier tokens of its document the
// convolution reads (< width), and its position in its document (0 resets the recurrence).
struct RecurrentBlockInputs {
  std::span<const int32_t> conv_reach;
  std::span<const int32_t> positions;
};

// x: the normed input [T, d] of one sequence's tokens; out [T, d], the whole sum on every rank of
// `tp` (null: the block runs whole). `state` advances past the T tokens. With a store, saves
// (under layer `layer`) what a backward reads: the branches' pre-activations, the state before
// the chunk, the convolution's output, both gates and the recurrence's output.
void RecurrentBlockForward(const Tensor& x, const RecurrentBlockWeights& w,
                           const RecurrentBlockInputs& at, RecurrentBlockState& state,
                           Communicator* tp, MatmulPrecision precision, Tensor& out,
                           ActivationStore* store = nullptr, int64_t layer = 0);

// The gradients of the block's parameters.
struct RecurrentBlockGrads {
  LinearGrad linear_x, linear_y, linear_out;
  Tensor conv_weight, conv_bias, recurrent_param;
  Tensor input_gate_weight, input_gate_bias, recurrent_gate_weight, recurrent_gate_bias;
  static RecurrentBlockGrads ZerosFor(const RecurrentBlockWeights& w);
};

// The backward over the chunk RecurrentBlockForward ran with `store` (every activation kept,
// under layer `layer`), from dout: dx (whole on every rank of tp: one all-reduce of the two
// column-parallel layers' partials) and grads accumulated. The state carried into the chunk gets
// no gradient (training runs whole sequences from a fresh state).
void RecurrentBlockBackward(const Tensor& x, const RecurrentBlockWeights& w,
                            const RecurrentBlockInputs& at, const ActivationStore& store,
                            int64_t layer, const Tensor& dout, Communicator* tp, Tensor& dx,
                            RecurrentBlockGrads& grads);

}  // namespace gemmapod
