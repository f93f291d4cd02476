#include "models/t5gemma_random.h"

#include <cmath>
#include <string>

#include "models/gemma_random.h"
#include "runtime/error.h"

namespace gemmapod {
namespace {

// As in gemma_random.cc: the splitmix64 finaliser and FNV-1a of a tensor's name.
uint64_t Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t NameHash(const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : name) h = (h ^ ch) * 0x100000001b3ull;
  return h;
}

// The seed of one stack: distinct per stack, so equal shapes still get different weights.
uint64_t StackSeed(uint64_t seed, const std::string& stack) { return Mix(seed ^ NameHash(stack)); }

// `slice` of parameter `p`, uniform with the wanted standard deviation; f32 for norms, else
// `matrix_dtype`.
Tensor RandomSlice(const GemmaParameter& p, const ParameterSlice& slice, DType matrix_dtype,
                   uint64_t seed) {
  const float stddev = p.is_norm ? 0.1f : 1.0f / std::sqrt(static_cast<float>(p.shape.back()));
  const float a = std::sqrt(3.0f) * stddev;  // uniform on [-a, a]
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
  if (p.is_norm || matrix_dtype == DType::kF32) return t;
  return t.To(matrix_dtype);
}

}  // namespace

T5GemmaWeights RandomT5GemmaShard(const T5GemmaConfig& config, const T5GemmaShard& shard,
                                  DType matrix_dtype, uint64_t seed) {
  GEMMAPOD_CHECK(config.decoder.quantization == WeightQuantization::kNone &&
                     config.encoder.quantization == WeightQuantization::kNone,
                 "random weights are f32 or bf16");
  T5GemmaWeights w;
  if (shard.has_encoder) {
    // RandomGemmaShard makes the embedding on a last stage (for Gemma's tied head); the encoder's
    // last stage holds only its final norm, made below under the encoder's own name.
    GemmaShard layers = shard.encoder;
    layers.has_head = false;
    w.encoder =
        RandomGemmaShard(config.encoder, layers, matrix_dtype, StackSeed(seed, "model.encoder."));
  }
  if (shard.has_decoder) {
    w.decoder = RandomGemmaShard(config.decoder, shard.decoder, matrix_dtype,
                                 StackSeed(seed, "model.decoder."));
  }
  // The encoder's final norm and the cross-attention blocks; the stacks' other parameters are
  // already made (the visitor only sizes the layer vectors, which are the right size).
  ForEachT5GemmaShardParameter(
      config, shard, w, [&](const GemmaParameter& p, const ParameterSlice& slice, Tensor& slot) {
        if (p.name == "model.encoder.norm.weight" ||
            p.name.find("cross_attn") != std::string::npos) {
          slot = RandomSlice(p, slice, matrix_dtype, seed);
        }
      });
  return w;
}

T5GemmaWeights RandomT5GemmaWeights(const T5GemmaConfig& config, DType matrix_dtype,
                                    uint64_t seed) {
  return RandomT5GemmaShard(config, WholeT5Gemma(config), matrix_dtype, seed);
}

}  // namespace gemmapod
