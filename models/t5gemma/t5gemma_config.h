// T5GemmaConfig: an encoder-decoder built from two Gemma 2 stacks, as plain data. The encoder
// runs its stack bidirectionally over the prompt; the decoder runs its own (of any size: the
// released 9B-2B pair has a 42-layer encoder 3584 wide and a 26-layer decoder 2304 wide) with a
// cross-attention block in every layer whose keys and values are projected from the encoder's
// output width. Configs come from configs/models/t5gemma-*.yaml, a Hugging Face config.json with
// model_type t5gemma, or a checkpoint's attributes; every path ends in Validate().
#pragma once

#include <cstdint>
#include <string>

#include "models/gemma/model_config.h"

namespace gemmapod {

struct T5GemmaConfig {
  std::string name;
  ModelConfig encoder;  // its own embedding; final norm; no head
  ModelConfig decoder;  // its embedding is tied to the output head; tokens (bos, eos, pad) decode

  // Parameters of both stacks and the decoder's cross-attention, the tied head counted once.
  int64_t ParameterCount() const;
  // Parameters of one decoder layer's cross-attention block (projections and its two norms).
  int64_t CrossAttentionParameters() const;
};

// Checks both stacks and what ties them together; messages start with `where`.
void Validate(const T5GemmaConfig& config, const std::string& where);

// Checkpoint attributes: architecture "t5gemma", the name, and each stack's attributes under
// "encoder." and "decoder.".
Attributes ToAttributes(const T5GemmaConfig& config);
T5GemmaConfig T5GemmaFromAttributes(const Attributes& attributes, const std::string& where);
// Whether checkpoint attributes describe a T5Gemma.
bool IsT5GemmaAttributes(const Attributes& attributes);

// configs/models/t5gemma-*.yaml: name, architecture t5gemma, and `encoder` and `decoder` maps in
// the format of a Gemma 2 config (docs/model-config.md). Errors name file:line:column and key.
T5GemmaConfig LoadT5GemmaConfigYaml(const std::string& path);
// Whether a YAML model config says architecture t5gemma (false on any error).
bool IsT5GemmaYaml(const std::string& path);

// A Hugging Face config.json of model_type t5gemma; errors name the file and the key.
T5GemmaConfig ReadHfT5GemmaConfig(const std::string& path);
// The config.json transformers' T5GemmaForConditionalGeneration needs to rebuild the model.
std::string T5GemmaHfConfigJson(const T5GemmaConfig& config, const std::string& torch_dtype);

}  // namespace gemmapod
