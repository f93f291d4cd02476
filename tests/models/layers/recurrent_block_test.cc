// Griffin's recurrent block, backward over a chunk that carries a convolution history and an
// RG-LRU state in and holds a document start, against central differences of the block written
// out in double: the input's gradient and every parameter's (both branches' projections, the
// convolution, both gate blocks, Λ, the out projection).
#include "models/layers/recurrent_block.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "tests/gradient_check.h"

namespace gemmapod {
namespace {

constexpr int64_t T = 5, d = 4, C = 6, H = 2, bw = 3, width = 4;

struct Params {
  Doubles x, wy, by, wx, bx, taps, cb, lambda, wgx, bgx, wga, bga, wo, bo;
};

double Sigmoid(double v) { return 1 / (1 + std::exp(-v)); }

Doubles Linear(const Doubles& in, const Doubles& w, const Doubles& b, int64_t k, int64_t n) {
  Doubles out(static_cast<size_t>(T * n));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < n; ++j) {
      double s = b[j];
      for (int64_t i = 0; i < k; ++i) s += in[t * k + i] * w[j * k + i];
      out[t * n + j] = s;
    }
  }
  return out;
}

Doubles BlockDiagonal(const Doubles& in, const Doubles& w, const Doubles& b) {
  Doubles out(static_cast<size_t>(T * C));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t j = 0; j < bw; ++j) {
        double s = b[h * bw + j];
        for (int64_t i = 0; i < bw; ++i) s += in[t * C + h * bw + i] * w[(h * bw + i) * bw + j];
        out[t * C + h * bw + j] = s;
      }
    }
  }
  return out;
}

double Loss(const Params& p, const Doubles& history, const Doubles& state,
            const std::vector<int32_t>& reach, const std::vector<int32_t>& pos, const Doubles& r) {
  const Doubles y_pre = Linear(p.x, p.wy, p.by, d, C), u = Linear(p.x, p.wx, p.bx, d, C);
  Doubles conv(static_cast<size_t>(T * C));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t c = 0; c < C; ++c) {
      double o = p.cb[c];
      for (int64_t back = 0; back <= reach[t]; ++back) {
        const double in =
            t - back >= 0 ? u[(t - back) * C + c] : history[(width - 1 - (back - t)) * C + c];
        o += p.taps[c * width + width - 1 - back] * in;
      }
      conv[t * C + c] = o;
    }
  }
  const Doubles gx = BlockDiagonal(conv, p.wgx, p.bgx), ga = BlockDiagonal(conv, p.wga, p.bga);
  Doubles prod(static_cast<size_t>(T * C));
  for (int64_t c = 0; c < C; ++c) {
    double h = state[c];
    const double sp = std::log1p(std::exp(p.lambda[c]));
    for (int64_t t = 0; t < T; ++t) {
      const double log_a = -8 * Sigmoid(ga[t * C + c]) * sp;
      const double gated = Sigmoid(gx[t * C + c]) * conv[t * C + c];
      h = pos[t] == 0 ? gated : std::exp(log_a) * h + std::sqrt(1 - std::exp(2 * log_a)) * gated;
      const double v = y_pre[t * C + c];
      const double y = 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
      prod[t * C + c] = y * h;
    }
  }
  const Doubles out = Linear(prod, p.wo, p.bo, C, d);
  double total = 0;
  for (size_t i = 0; i < out.size(); ++i) total += out[i] * r[i];
  return total;
}

TEST(RecurrentBlockBackward, MatchesFiniteDifferences) {
  RecurrentBlockWeights w;
  w.linear_y = {RandomTensor({C, d}, 1, 0.6f), {}, RandomTensor({C}, 2, 0.3f)};
  w.linear_x = {RandomTensor({C, d}, 3, 0.6f), {}, RandomTensor({C}, 4, 0.3f)};
  w.linear_out = {RandomTensor({d, C}, 5, 0.6f), {}, RandomTensor({d}, 6, 0.3f)};
  w.conv_weight = RandomTensor({C, 1, width}, 7, 0.5f);
  w.conv_bias = RandomTensor({C}, 8, 0.3f);
  w.recurrent_param = RandomTensor({C}, 9, 1.0f);
  w.input_gate_weight = RandomTensor({H, bw, bw}, 10, 0.6f);
  w.input_gate_bias = RandomTensor({H, bw}, 11, 0.3f);
  w.recurrent_gate_weight = RandomTensor({H, bw, bw}, 12, 0.6f);
  w.recurrent_gate_bias = RandomTensor({H, bw}, 13, 0.3f);
  const Tensor x = RandomTensor({T, d}, 14, 1.0f), r = RandomTensor({T, d}, 15, 1.0f);
  const Tensor history = RandomTensor({width - 1, C}, 16, 1.0f),
               state = RandomTensor({C}, 17, 1.0f);
  const std::vector<int32_t> pos = {3, 4, 0, 1, 2};  // continues a document, then a new one
  const std::vector<int32_t> reach = {3, 3, 0, 1, 2};
  RecurrentBlockState st{history.Clone(), state.Clone()};
  ActivationStore store;
  Tensor out = Tensor::Empty({T, d}, DType::kF32);
  RecurrentBlockForward(x, w, {reach, pos}, st, nullptr, MatmulPrecision::kExact, out, &store, 0);
  RecurrentBlockGrads grads = RecurrentBlockGrads::ZerosFor(w);
  Tensor dx = Tensor::Empty({T, d}, DType::kF32);
  RecurrentBlockBackward(x, w, {reach, pos}, store, 0, r, nullptr, dx, grads);

  const Params p{ToDoubles(x),
                 ToDoubles(w.linear_y.weight),
                 ToDoubles(w.linear_y.bias),
                 ToDoubles(w.linear_x.weight),
                 ToDoubles(w.linear_x.bias),
                 ToDoubles(w.conv_weight),
                 ToDoubles(w.conv_bias),
                 ToDoubles(w.recurrent_param),
                 ToDoubles(w.input_gate_weight),
                 ToDoubles(w.input_gate_bias),
                 ToDoubles(w.recurrent_gate_weight),
                 ToDoubles(w.recurrent_gate_bias),
                 ToDoubles(w.linear_out.weight),
                 ToDoubles(w.linear_out.bias)};
  const Doubles hv = ToDoubles(history), sv = ToDoubles(state), rv = ToDoubles(r);
  const auto wrt = [&](Doubles Params::*field) {
    Params q = p;
    Doubles& v = q.*field;
    Doubles g(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      const double keep = v[i];
      v[i] = keep + 1e-5;
      const double up = Loss(q, hv, sv, reach, pos, rv);
      v[i] = keep - 1e-5;
      const double down = Loss(q, hv, sv, reach, pos, rv);
      v[i] = keep;
      g[i] = (up - down) / 2e-5;
    }
    return g;
  };
  EXPECT_LT(MaxRelativeError(dx, wrt(&Params::x)), 1e-5);
  EXPECT_LT(MaxRelativeError(grads.linear_y.weight, wrt(&Params::wy)), 1e-5);
  EXPECT_LT(MaxRelativeError(grads.linear_y.bias, wrt(&Params::by)), 1e-5);
  EXPECT_LT(MaxRelativeError(grads.linear_x.weight, wrt(&Params::wx)), 1e-5);
  EXPECT_LT(MaxRelativeError(grads.linear_x.bias, wrt(&Params::bx)), 1e-5);
  EXPECT_LT(MaxRelativeError(grads.conv_weight, wrt(&Params::taps)), 1e-5);
  EXPECT_LT(MaxRelativeError(grads.conv_bias, wrt(&Params::cb)), 1e-5);
  EXPECT_LT(MaxRelativeError(grads.recurrent_param, wrt(&Params::lambda)), 1e-5);
  EXPECT_LT(MaxRelativeError(grads.input_gate_weight, wrt(&Params::wgx)), 1e-5);
  EXPECT_LT(MaxRelativeError(grads.input_gate_bias, wrt(&Params::bgx)), 1e-5);
  EXPECT_LT(MaxRelativeError(grads.recurrent_gate_weight, wrt(&Params::wga)), 1e-5);
  EXPECT_LT(MaxRelativeError(grads.recurrent_gate_bias, wrt(&Params::bga)), 1e-5);
  EXPECT_LT(MaxRelativeError(grads.linear_out.weight, wrt(&Params::wo)), 1e-5);
  EXPECT_LT(MaxRelativeError(grads.linear_out.bias, wrt(&Params::bo)), 1e-5);
}

}  // namespace
}  // namespace gemmapod
