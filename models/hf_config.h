// Hugging Face config.json <-> ModelConfig, for `gemmapod convert` in both directions.
#pragma once

#include <string>

#include "models/model_config.h"

namespace gemmapod {

// Reads a Hugging Face config.json of a decoder-only Gemma (model_type gemma, gemma2,
// gemma3_text). Both spellings of Gemma 3's RoPE settings are understood (rope_theta +
// rope_local_base_freq + rope_scaling, or rope_parameters per attention kind). Errors name the
// file and the key.
ModelConfig ReadHfConfig(const std::string& path);

// The config.json a Hugging Face loader needs to rebuild the same model. `torch_dtype` is the
// dtype the weights are written in ("bfloat16" or "float32").
std::string HfConfigJson(const ModelConfig& config, const std::string& torch_dtype);

}  // namespace gemmapod
