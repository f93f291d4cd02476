#include "models/gemma_random.h"

#include <cmath>
#include <cstring>

namespace gemmapod {
namespace {

// splitmix64: a fast, well-mixed generator; billions of weights fill in seconds.
uint64_t Next(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

GemmaWeights RandomGemmaWeights(const ModelConfig& config, DType matrix_dtype, uint64_t seed) {
  GemmaWeights w;
  uint64_t state = seed;
  ForEachGemmaParameter(config, w, [&](const GemmaParameter& p, Tensor& slot) {
    const float stddev = p.is_norm ? 0.1f : 1.0f / std::sqrt(static_cast<float>(p.shape.back()));
    // Uniform on [-a, a] with a = sqrt(3) * stddev has the wanted standard deviation.
    const float a = std::sqrt(3.0f) * stddev;
    Tensor t = Tensor::Empty(p.shape, DType::kF32);
    float* v = t.data<float>();
    const int64_t n = t.numel();
    for (int64_t i = 0; i < n; ++i) {
      const float u = static_cast<float>(Next(state) >> 40) * (1.0f / 16777216.0f);  // [0, 1)
      v[i] = (2.0f * u - 1.0f) * a;
    }
    slot = p.is_norm || matrix_dtype == DType::kF32 ? std::move(t) : t.To(matrix_dtype);
  });
  return w;
}

}  // namespace gemmapod
