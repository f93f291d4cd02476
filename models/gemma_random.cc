#include "models/gemma_random.h"

#include <cmath>
#include <random>

namespace gemmapod {

GemmaWeights RandomGemmaWeights(const ModelConfig& config, DType matrix_dtype, uint64_t seed) {
  GemmaWeights w;
  std::mt19937_64 rng(seed);
  ForEachGemmaParameter(config, w, [&](const GemmaParameter& p, Tensor& slot) {
    const float stddev = p.is_norm ? 0.1f : 1.0f / std::sqrt(static_cast<float>(p.shape.back()));
    std::normal_distribution<float> normal(0.0f, stddev);
    Tensor t = Tensor::Empty(p.shape, DType::kF32);
    float* v = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i) v[i] = normal(rng);
    slot = p.is_norm || matrix_dtype == DType::kF32 ? std::move(t) : t.To(matrix_dtype);
  });
  return w;
}

}  // namespace gemmapod
