// A Gemma model read from a GGUF file (llama.cpp's format): its config from the `<arch>.*`
// metadata, its tensors under our (Hugging Face) names, dequantized, with the GGUF converter's
// conventions undone, and its SentencePiece tokenizer rebuilt from the `tokenizer.ggml.*` arrays.
// `gemmapod convert model.gguf model.h5` writes all three into one checkpoint.
#pragma once

#include <memory>
#include <string>

#include "models/gemma/model_config.h"
#include "runtime/checkpoint/tensor_source.h"
#include "runtime/tokenizer/sentencepiece_builder.h"

namespace gemmapod {

class GgufFile;

struct GgufGemma {
  ModelConfig config;
  // Hugging Face names (model.layers.0.self_attn.q_proj.weight, ...), f32. A GGUF tensor with no
  // Gemma counterpart keeps its GGUF name, so the checks that follow name it.
  std::unique_ptr<TensorSource> tensors;
  std::string tokenizer_model;  // a serialized SentencePiece ModelProto
};

// Errors name the file and the metadata key or tensor.
GgufGemma OpenGgufGemma(const std::string& path);

// The parts, for tests.
ModelConfig GemmaConfigFromGguf(const GgufFile& file);
SentencePieceVocabulary GemmaVocabularyFromGguf(const GgufFile& file);
// The Hugging Face name of GGUF tensor `name` ("blk.3.attn_q.weight" ->
// "model.layers.3.self_attn.q_proj.weight"), or `name` itself when it has none.
std::string GemmaNameForGgufTensor(const std::string& name, Architecture architecture);

}  // namespace gemmapod
