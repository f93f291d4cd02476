// google-deepmind/recurrentgemma's PyTorch state dict (`Griffin.state_dict()` saved as
// safetensors) read as a RecurrentGemma checkpoint under Hugging Face names (MODEL_SPEC §4.8):
// `embedder.input_embedding` -> `model.embed_tokens.weight`, `blocks.i.recurrent_block.conv_1d.w`
// [width, lru] -> `...temporal_block.conv_1d.weight` [lru, 1, width], `mlp_block.ffw_up.w`
// [2, d, ffn] -> `gate_proj.weight` (index 0, the GELU branch) and `up_proj.weight`, transposed.
#pragma once

#include <memory>
#include <string>

#include "models/recurrent_gemma/recurrent_gemma_config.h"
#include "runtime/checkpoint/tensor_source.h"

namespace gemmapod {

// Whether `source` holds DeepMind's names (it has `embedder.input_embedding`).
bool IsDeepMindRecurrentGemma(const TensorSource& source);

struct DeepMindRecurrentGemma {
  // From the tensor shapes; what they do not show takes the published models' values (attention
  // window 2048, RoPE base 10000 on half of each head, soft-cap 30), `name` from the file.
  RecurrentGemmaConfig config;
  std::unique_ptr<TensorSource> tensors;  // Hugging Face names and shapes
};

// `given` (optional) replaces the config read from the shapes; the tensors are checked against it.
DeepMindRecurrentGemma OpenDeepMindRecurrentGemma(std::unique_ptr<TensorSource> source,
                                                  const RecurrentGemmaConfig* given = nullptr);

}  // namespace gemmapod
