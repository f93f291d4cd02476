// Hugging Face config.json <-> ModelConfig, for `gemmapod convert` in both directions.
#pragma once

#include <string>

#include "models/gemma/model_config.h"

namespace gemmapod {

// Reads a Hugging Face config.json of a decoder-only Gemma (model_type gemma, gemma2,
// gemma3_text). Both spellings of Gemma 3's RoPE settings are understood (rope_theta +
// rope_local_base_freq + rope_scaling, or rope_parameters per attention kind). Errors name the
// file and the key.
ModelConfig ReadHfConfig(const std::string& path);
// The same from the text of a JSON object; `path` names it in errors (a file, or a file and the
// key it sits under). A non-empty `model_type_override` is used instead of the object's
// model_type (T5Gemma's encoder and decoder sections are Gemma 2 stacks).
ModelConfig HfConfigFromJsonText(const std::string& text, const std::string& path,
                                 const std::string& model_type_override);

// The config.json a Hugging Face loader needs to rebuild the same model. `torch_dtype` is the
// dtype the weights are written in ("bfloat16" or "float32").
std::string HfConfigJson(const ModelConfig& config, const std::string& torch_dtype);

}  // namespace gemmapod
