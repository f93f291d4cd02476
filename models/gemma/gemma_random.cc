#include "models/gemma/gemma_random.h"

#include <cmath>

#include "runtime/error.h"

namespace gemmapod {
namespace {

// The splitmix64 finaliser: a well-mixed hash of a 64-bit counter.
uint64_t Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t NameHash(const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (unsigned char ch : name) h = (h ^ ch) * 0x100000001b3ull;
  return h;
}

}  // namespace

Tensor RandomParameterSlice(const GemmaParameter& p, const ParameterSlice& slice,
                            DType matrix_dtype, uint64_t seed) {
  const float stddev = p.is_norm ? 0.1f : 1.0f / std::sqrt(static_cast<float>(p.shape.back()));
  // Uniform on [-a, a] with a = sqrt(3) * stddev has the wanted standard deviation.
  const float a = std::sqrt(3.0f) * stddev;
  const uint64_t key = Mix(seed + 0x9e3779b97f4a7c15ull) ^ NameHash(p.name);
  const Shape shape = SliceShape(p, slice);
  Tensor t = Tensor::Zeros(shape, DType::kF32);
  float* v = t.data<float>();
  // As a matrix [rows, cols] of the full tensor's [full_rows, full_cols]; 1-D is one row.
  const int64_t full_cols = p.shape.size() == 2 ? p.shape[1] : p.shape[0];
  const int64_t cols = shape.size() == 2 ? shape[1] : shape[0];
  const int64_t rows = shape.size() == 2 ? shape[0] : 1;
  const int64_t row0 = slice.dim == 0 ? slice.begin : 0;
  const int64_t col0 = slice.dim == 1 ? slice.begin : 0;
  // Rows past the real ones (vocabulary padding) stay zero.
  const int64_t real_rows = slice.dim == 0 ? slice.end - slice.begin : rows;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < real_rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      const uint64_t index = static_cast<uint64_t>((row0 + i) * full_cols + col0 + j);
      const uint64_t z = Mix(key + index * 0x9e3779b97f4a7c15ull);
      const float u = static_cast<float>(z >> 40) * (1.0f / 16777216.0f);  // [0, 1)
      v[i * cols + j] = (2.0f * u - 1.0f) * a;
    }
  }
  return p.is_norm || matrix_dtype == DType::kF32 ? t : t.To(matrix_dtype);
}

GemmaWeights RandomGemmaShard(const ModelConfig& config, const GemmaShard& shard,
                              DType matrix_dtype, uint64_t seed) {
  // A row's int8 scale depends on the whole row, which a rank holding a column slice never makes.
  GEMMAPOD_CHECK(config.quantization == WeightQuantization::kNone,
                 "random weights are f32 or bf16; write them with random-checkpoint and quantize "
                 "with `gemmapod convert --quantize int8`");
  GemmaWeights w;
  ForEachShardParameter(config, shard, w,
                        [&](const GemmaParameter& p, const ParameterSlice& slice, Tensor& slot) {
                          slot = RandomParameterSlice(p, slice, matrix_dtype, seed);
                        });
  return w;
}

GemmaWeights RandomGemmaWeights(const ModelConfig& config, DType matrix_dtype, uint64_t seed) {
  return RandomGemmaShard(config, WholeGemma(config), matrix_dtype, seed);
}

}  // namespace gemmapod
