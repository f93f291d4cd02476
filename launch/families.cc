#include "launch/families.h"

#include <fstream>
#include <variant>

#include "launch/model_files.h"
#include "launch/recurrent_commands.h"
#include "launch/t5gemma_commands.h"
#include "models/t5gemma/t5gemma_config.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/error.h"

namespace gemmapod {
namespace {

bool IsYaml(const std::string& path) {
  const auto ends = [&](std::string_view tail) {
    return path.size() >= tail.size() &&
           path.compare(path.size() - tail.size(), tail.size(), tail.data(), tail.size()) == 0;
  };
  return ends(".yaml") || ends(".yml");
}

// The value of a top-level `key: value` line of a YAML file ("" when absent).
std::string TopLevelYamlValue(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) != 0) continue;
    std::string value = line.substr(key.size() + 1);
    const size_t b = value.find_first_not_of(" \t\"'"), e = value.find_last_not_of(" \t\"'\r");
    return b == std::string::npos ? "" : value.substr(b, e - b + 1);
  }
  return "";
}

const ModelFamily kGemma{"gemma",
                         false,
                         GenerateGemmaOnRanks,
                         LogitsGemmaOnRanks,
                         PrintGemmaPlan,
                         ServeGemmaOnRanks,
                         RandomGemmaCheckpoint};
const ModelFamily kRecurrentGemma{"recurrent_gemma",
                                  false,
                                  GenerateRecurrentOnRanks,
                                  LogitsRecurrentOnRanks,
                                  PrintRecurrentPlan,
                                  ServeRecurrentOnRanks,
                                  RandomRecurrentGemmaCheckpoint};
const ModelFamily kT5Gemma{"t5gemma",
                           true,
                           GenerateT5GemmaOnRanks,
                           LogitsT5GemmaOnRanks,
                           PrintT5GemmaPlan,
                           ServeT5GemmaOnRanks,
                           RandomT5GemmaCheckpoint};

}  // namespace

const ModelFamily& FamilyOf(const std::string& path) {
  try {
    if (IsYaml(path)) {
      if (TopLevelYamlValue(path, "architecture") == "recurrent_gemma") return kRecurrentGemma;
      if (IsT5GemmaYaml(path)) return kT5Gemma;
      return kGemma;
    }
    const Attributes a = CheckpointFile(path).config();
    const auto it = a.find("architecture");
    const auto* architecture = it == a.end() ? nullptr : std::get_if<std::string>(&it->second);
    if (architecture != nullptr && *architecture == "recurrent_gemma") return kRecurrentGemma;
    if (IsT5GemmaAttributes(a)) return kT5Gemma;
  } catch (const Error&) {
    // Unreadable: the Gemma path reports it.
  }
  return kGemma;
}

}  // namespace gemmapod
