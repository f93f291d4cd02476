#include "models/import/json_file.h"

#include <fstream>

#include "runtime/error.h"

namespace gemmapod {

nlohmann::json ReadJsonFile(const std::string& path) {
  std::ifstream in(path);
  GEMMAPOD_CHECK(in.good(), path, ": cannot open the Hugging Face config");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(StrCat(path, ": not valid JSON: ", e.what()));
  }
}

}  // namespace gemmapod
