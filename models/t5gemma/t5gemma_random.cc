#include "models/t5gemma/t5gemma_random.h"

#include "models/gemma/gemma_random.h"
#include "runtime/error.h"

namespace gemmapod {

T5GemmaWeights RandomT5GemmaShard(const T5GemmaConfig& config, const T5GemmaShard& shard,
                                  DType matrix_dtype, uint64_t seed) {
  GEMMAPOD_CHECK(config.decoder.quantization == WeightQuantization::kNone &&
                     config.encoder.quantization == WeightQuantization::kNone,
                 "random weights are f32 or bf16");
  // Gemma's element function under T5Gemma's names: the stacks' names differ, so an encoder and
  // a decoder of the same shape get different weights.
  T5GemmaWeights w;
  ForEachT5GemmaShardParameter(
      config, shard, w, [&](const GemmaParameter& p, const ParameterSlice& slice, Tensor& slot) {
        slot = RandomParameterSlice(p, slice, matrix_dtype, seed);
      });
  return w;
}

T5GemmaWeights RandomT5GemmaWeights(const T5GemmaConfig& config, DType matrix_dtype,
                                    uint64_t seed) {
  return RandomT5GemmaShard(config, WholeT5Gemma(config), matrix_dtype, seed);
}

}  // namespace gemmapod
