// What the `gemmapod train` tests read back from a run directory: its metrics by step and key,
// and whether two checkpoints hold the same bytes.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "runtime/checkpoint/hdf5_checkpoint.h"

namespace gemmapod {

using RunMetrics = std::map<std::pair<int64_t, std::string>, double>;

// Every number of every line of a metrics.jsonl by (step, key), but "step" and the keys `skip`
// names (timings, which no two runs share).
inline RunMetrics ReadRunMetrics(const std::filesystem::path& file,
                                 const std::function<bool(const std::string&)>& skip) {
  RunMetrics out;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    for (const auto& [key, value] : j.items()) {
      if (value.is_number() && key != "step" && !skip(key)) {
        out[{j["step"].get<int64_t>(), key}] = value.get<double>();
      }
    }
  }
  return out;
}

// Two checkpoints hold the same tensors, byte for byte.
inline void ExpectSameCheckpoints(const std::filesystem::path& a, const std::filesystem::path& b) {
  const auto ra = Hdf5CheckpointReader::Open(a.string());
  const auto rb = Hdf5CheckpointReader::Open(b.string());
  ASSERT_EQ(ra->List().size(), rb->List().size());
  for (const TensorInfo& info : ra->List()) {
    const Tensor x = ra->Read(info.name), y = rb->Read(info.name);
    ASSERT_EQ(x.nbytes(), y.nbytes()) << info.name;
    EXPECT_EQ(std::memcmp(x.raw(), y.raw(), x.nbytes()), 0) << info.name << " differs";
  }
}

}  // namespace gemmapod
