// Reading a JSON file (a Hugging Face config.json), with errors that name the file. nlohmann's
// header is heavy: include this only from .cc files that work with the JSON.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace gemmapod {

// The file's JSON value; throws gemmapod::Error naming `path` when it cannot be opened or is not
// valid JSON.
nlohmann::json ReadJsonFile(const std::string& path);

}  // namespace gemmapod
