// The YAML form of a ModelConfig (docs/model-config.md), for files that hold a Gemma stack inside
// a larger document (T5Gemma's encoder and decoder sections).
#pragma once

#include <string>

#include "models/gemma/model_config.h"

namespace gemmapod {

class YamlValue;

// `doc` is a map in the format of configs/models/gemma*.yaml. With `stack`, name and architecture
// may be left out (architecture then gemma2, the only one T5Gemma stacks use). Errors name
// path:line:column and the key; the result is validated.
ModelConfig ModelConfigFromYaml(const YamlValue& doc, const std::string& path, bool stack);

}  // namespace gemmapod
