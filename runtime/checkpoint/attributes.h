// Attributes: the small typed key/value data a checkpoint carries beside its tensors (the model
// config, format version). The runtime knows nothing of models: models/ maps its config to and
// from this.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

namespace gemmapod {

using AttributeValue = std::variant<int64_t, double, std::string, std::vector<int64_t>,
                                    std::vector<double>, std::vector<std::string>>;
using Attributes = std::map<std::string, AttributeValue>;

}  // namespace gemmapod
