#include "serving/gemma_layout.h"

#include "runtime/error.h"

namespace gemmapod {

GemmaStageBytes GemmaBytesPerStagePart(const ModelConfig& config, int tp, int64_t matrix_bytes) {
  GemmaStageBytes b;
  for (int64_t l = 0; l < config.num_layers; ++l) {
    b.layers.push_back(GemmaShardWeightBytes(
        config, MakeGemmaShard(config, tp, 0, l, l + 1, false, false), matrix_bytes));
  }
  const GemmaShard none = MakeGemmaShard(config, tp, 0, 0, 0, false, false);
  const int64_t embedding =
      GemmaShardWeightBytes(config, MakeGemmaShard(config, tp, 0, 0, 0, true, false),
                            matrix_bytes) -
      GemmaShardWeightBytes(config, none, matrix_bytes);
  b.first_extra = embedding;
  b.last_extra = GemmaShardWeightBytes(config, MakeGemmaShard(config, tp, 0, 0, 0, false, true),
                                       matrix_bytes);
  return b;
}

std::vector<LayerRange> GemmaStageLayers(const ModelConfig& config, int tp, int pp,
                                         int64_t matrix_bytes, const PodTopology* pod) {
  const GemmaStageBytes b = GemmaBytesPerStagePart(config, tp, matrix_bytes);
  if (pod != nullptr) {
    GEMMAPOD_CHECK(pod->pp == pp, pod->source, ": pp ", pod->pp, " but the grid has ", pp);
    return DecoderStages(*pod, config.name, b.layers, b.first_extra, b.last_extra);
  }
  return BalanceStages(b.layers, pp, b.first_extra, b.last_extra);
}

GemmaShard GemmaShardAt(const ModelConfig& config, const GridShape& shape, const GridCoords& at,
                        std::span<const LayerRange> stages) {
  GEMMAPOD_CHECK(static_cast<int>(stages.size()) == shape.pp, "layout: ", stages.size(),
                 " stage ranges for pp ", shape.pp);
  const LayerRange& r = stages[static_cast<size_t>(at.pp)];
  return MakeGemmaShard(config, shape.tp, at.tp, r.first, r.end, at.pp == 0,
                        at.pp == shape.pp - 1);
}

}  // namespace gemmapod
