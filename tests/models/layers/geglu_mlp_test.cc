// The GeGLU MLP's backward (and so the linear layers' backward it is made of) against central
// finite differences of the MLP written out in double precision: every projection's weight and
// bias gradient and the input gradient, for Gemma's MLP (no biases) and Griffin's (biases), f32
// and bf16 weights.
#include "models/layers/geglu_mlp.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "tests/gradient_check.h"

namespace gemmapod {
namespace {

struct Params {
  Doubles x, gate_w, gate_b, up_w, up_b, down_w, down_b;
};

// L = sum(down(gelu(gate(x)) * up(x)) * r), in double.
double Loss(const Params& p, const Doubles& r, int64_t T, int64_t d, int64_t ffn) {
  const auto linear = [](const Doubles& in, const Doubles& w, const Doubles& b, int64_t rows,
                         int64_t k, int64_t n) {
    Doubles out(static_cast<size_t>(rows * n));
    for (int64_t t = 0; t < rows; ++t) {
      for (int64_t j = 0; j < n; ++j) {
        double s = b.empty() ? 0.0 : b[j];
        for (int64_t i = 0; i < k; ++i) s += in[t * k + i] * w[j * k + i];
        out[t * n + j] = s;
      }
    }
    return out;
  };
  const Doubles gate = linear(p.x, p.gate_w, p.gate_b, T, d, ffn);
  const Doubles up = linear(p.x, p.up_w, p.up_b, T, d, ffn);
  Doubles hidden(gate.size());
  for (size_t i = 0; i < gate.size(); ++i) {
    const double v = gate[i];
    hidden[i] = 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))) * up[i];
  }
  const Doubles out = linear(hidden, p.down_w, p.down_b, T, ffn, d);
  double total = 0;
  for (size_t i = 0; i < out.size(); ++i) total += out[i] * r[i];
  return total;
}

class GegluMlpBackwardTest : public ::testing::TestWithParam<std::pair<bool, DType>> {};

TEST_P(GegluMlpBackwardTest, MatchesFiniteDifferences) {
  const auto [biases, wt] = GetParam();
  const int64_t T = 3, d = 6, ffn = 10;
  Linear gate_proj{RandomTensor({ffn, d}, 1, 0.5f).To(wt), {}, {}};
  Linear up_proj{RandomTensor({ffn, d}, 2, 0.5f).To(wt), {}, {}};
  Linear down_proj{RandomTensor({d, ffn}, 3, 0.5f).To(wt), {}, {}};
  if (biases) {
    gate_proj.bias = RandomTensor({ffn}, 4, 0.3f);
    up_proj.bias = RandomTensor({ffn}, 5, 0.3f);
    down_proj.bias = RandomTensor({d}, 6, 0.3f);
  }
  const GegluMlpWeights w{gate_proj, up_proj, down_proj};
  const Tensor x = RandomTensor({T, d}, 7, 1.0f), r = RandomTensor({T, d}, 8, 1.0f);
  Tensor gate = Tensor::Empty({T, ffn}, DType::kF32), up = Tensor::Empty({T, ffn}, DType::kF32),
         hidden = Tensor::Empty({T, ffn}, DType::kF32), out = Tensor::Empty({T, d}, DType::kF32);
  GegluMlpForward(x, w, nullptr, gate, up, hidden, out, MatmulPrecision::kExact);

  GegluMlpGrads grads = GegluMlpGrads::ZerosFor(w);
  Tensor dx = Tensor::Empty({T, d}, DType::kF32);
  GegluMlpBackward(x, w, gate, up, hidden, /*dout=*/r, nullptr, dx, grads);

  const auto bias = [&](const Linear& l) { return biases ? ToDoubles(l.bias) : Doubles{}; };
  const Params p{
      ToDoubles(x),  ToDoubles(gate_proj.weight), bias(gate_proj), ToDoubles(up_proj.weight),
      bias(up_proj), ToDoubles(down_proj.weight), bias(down_proj)};
  const Doubles rv = ToDoubles(r);
  const auto wrt = [&](Doubles Params::*field) {
    return CentralDifferences(
        [&](const Doubles& v) {
          Params q = p;
          q.*field = v;
          return Loss(q, rv, T, d, ffn);
        },
        p.*field);
  };
  // The weights' values are exact in double; only the f32 forward and backward round.
  EXPECT_LT(MaxRelativeError(dx, wrt(&Params::x)), 1e-5);
  EXPECT_LT(MaxRelativeError(grads.gate_proj.weight, wrt(&Params::gate_w)), 1e-5);
  EXPECT_LT(MaxRelativeError(grads.up_proj.weight, wrt(&Params::up_w)), 1e-5);
  EXPECT_LT(MaxRelativeError(grads.down_proj.weight, wrt(&Params::down_w)), 1e-5);
  if (biases) {
    EXPECT_LT(MaxRelativeError(grads.gate_proj.bias, wrt(&Params::gate_b)), 1e-5);
    EXPECT_LT(MaxRelativeError(grads.up_proj.bias, wrt(&Params::up_b)), 1e-5);
    EXPECT_LT(MaxRelativeError(grads.down_proj.bias, wrt(&Params::down_b)), 1e-5);
  } else {
    EXPECT_FALSE(grads.gate_proj.bias.defined() && grads.gate_proj.bias.numel() > 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Mlps, GegluMlpBackwardTest,
                         ::testing::Values(std::pair{false, DType::kF32},
                                           std::pair{true, DType::kF32},
                                           std::pair{false, DType::kBF16}),
                         [](const auto& info) {
                           return std::string(info.param.first ? "griffin_" : "gemma_") +
                                  std::string(DTypeName(info.param.second));
                         });

}  // namespace
}  // namespace gemmapod
