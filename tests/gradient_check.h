// What the numerical tests share: seeded random tensors, central differences of a loss written
// in double precision, and the error they bound (max |got - want| / max |want|).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "runtime/tensor.h"

namespace gemmapod {

using Doubles = std::vector<double>;

// f32, uniform in [-scale, scale), the same values for the same seed.
inline Tensor RandomTensor(Shape shape, uint32_t seed, float scale = 1.0f) {
  Tensor t = Tensor::Empty(std::move(shape), DType::kF32);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

// A host tensor's values (f32 or bf16) in double.
inline Doubles ToDoubles(const Tensor& t) {
  const Tensor f = t.dtype() == DType::kF32 ? t : t.To(DType::kF32);
  return Doubles(f.data<float>(), f.data<float>() + f.numel());
}

// dL/dp at `at` by central differences with step `step`.
inline Doubles CentralDifferences(const std::function<double(const Doubles&)>& loss, Doubles at,
                                  double step = 1e-5) {
  Doubles g(at.size());
  for (size_t i = 0; i < at.size(); ++i) {
    const double keep = at[i];
    at[i] = keep + step;
    const double up = loss(at);
    at[i] = keep - step;
    const double down = loss(at);
    at[i] = keep;
    g[i] = (up - down) / (2 * step);
  }
  return g;
}

// max |got - want| / max |want| over f32 `got` and `want` of one size.
inline double MaxRelativeError(const Tensor& got, const Doubles& want) {
  double worst = 0, scale = 1e-30;
  for (size_t i = 0; i < want.size(); ++i) {
    scale = std::max(scale, std::fabs(want[i]));
    worst = std::max(worst, std::fabs(got.data<float>()[i] - want[i]));
  }
  return worst / scale;
}

// A model's parameter gradient against central differences of its loss: each of the first
// `count` f32 entries of `param` is moved by +-step in place and `loss()` evaluated. Returns
// max |grad - numeric| and max |numeric| (the scale the error is judged against).
struct GradientAgreement {
  double worst = 0;
  double scale = 1e-30;
};
inline GradientAgreement CompareWithCentralDifferences(Tensor& param, const Tensor& grad,
                                                       int64_t count,
                                                       const std::function<double()>& loss,
                                                       float step = 1e-2f) {
  GradientAgreement a;
  for (int64_t i = 0; i < std::min(count, param.numel()); ++i) {
    float& v = param.data<float>()[i];
    const float keep = v;
    v = keep + step;
    const double up = loss();
    v = keep - step;
    const double down = loss();
    v = keep;
    const double numeric = (up - down) / (2.0 * step);
    a.scale = std::max(a.scale, std::fabs(numeric));
    a.worst = std::max(a.worst, std::fabs(grad.data<float>()[i] - numeric));
  }
  return a;
}

}  // namespace gemmapod
