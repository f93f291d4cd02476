#include "sharding/recurrent_gemma_layout.h"

#include "runtime/error.h"

namespace gemmapod {

std::vector<std::pair<int64_t, int64_t>> RecurrentStageLayers(int64_t num_layers, int pp) {
  GEMMAPOD_CHECK(pp >= 1 && pp <= num_layers, "pipeline: ", pp, " stages for ", num_layers,
                 " layers");
  std::vector<std::pair<int64_t, int64_t>> out;
  int64_t begin = 0;
  for (int s = 0; s < pp; ++s) {
    const int64_t n = num_layers / pp + (s < num_layers % pp ? 1 : 0);
    out.emplace_back(begin, begin + n);
    begin += n;
  }
  return out;
}

RecurrentGemmaShard RecurrentGemmaShardAt(const RecurrentGemmaConfig& config,
                                          const ProcessGrid& grid) {
  const auto stages = RecurrentStageLayers(config.num_layers, grid.shape().pp);
  const auto& [first, end] = stages[static_cast<size_t>(grid.coords().pp)];
  return MakeRecurrentGemmaShard(config, grid.shape().tp, grid.coords().tp, first, end,
                                 grid.is_first_stage(), grid.is_last_stage());
}

}  // namespace gemmapod
