#include "sharding/gemma_layout.h"

#include "models/layers/kv_cache.h"
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
  b.last_extra =
      GemmaShardWeightBytes(config, MakeGemmaShard(config, tp, 0, 0, 0, false, true), matrix_bytes);
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

std::vector<LayerRange> GemmaTrainingStageLayers(const ModelConfig& config, int pp) {
  const GemmaStageBytes elements = GemmaBytesPerStagePart(config, 1, 1);
  return BalanceStages(elements.layers, pp, 0, config.vocab_size * config.hidden_size);
}

GemmaShard GemmaShardAt(const ModelConfig& config, const GridShape& shape, const GridCoords& at,
                        std::span<const LayerRange> stages) {
  GEMMAPOD_CHECK(static_cast<int>(stages.size()) == shape.pp, "layout: ", stages.size(),
                 " stage ranges for pp ", shape.pp);
  const LayerRange& r = stages[static_cast<size_t>(at.pp)];
  return MakeGemmaShard(config, shape.tp, at.tp, r.first, r.end, at.pp == 0, at.pp == shape.pp - 1);
}

GemmaPodPlan PlanGemmaOnPod(const PodTopology& pod, const ModelConfig& config, int64_t matrix_bytes,
                            int64_t batch, int64_t context) {
  GemmaPodPlan plan;
  if (auto problem = TensorParallelProblem(config, pod.tp)) {
    plan.problems.push_back(StrCat("parallelism.tp: ", *problem));
    return plan;
  }
  try {
    plan.stages = GemmaStageLayers(config, pod.tp, pod.pp, matrix_bytes, &pod);
  } catch (const Error& e) {
    plan.problems.push_back(e.what());
    return plan;
  }
  if (context > config.max_position_embeddings) {
    plan.problems.push_back(StrCat("a context of ", context, " tokens exceeds ", config.name,
                                   "'s max_position_embeddings ", config.max_position_embeddings));
  }
  const GridShape shape{pod.tp, pod.pp, pod.dp};
  for (int r = 0; r < shape.world_size(); ++r) {
    RankPlan rp;
    rp.rank = r;
    rp.at = shape.CoordsOf(r);
    rp.node = pod.node_of_rank(r);
    const GemmaShard shard = GemmaShardAt(config, shape, rp.at, plan.stages);
    rp.layers = plan.stages[static_cast<size_t>(rp.at.pp)];
    rp.embedding = shard.has_embedding;
    rp.head = shard.has_head;
    rp.weight_bytes = GemmaShardWeightBytes(config, shard, matrix_bytes);
    rp.kv_bytes = static_cast<int64_t>(KvCache::BytesFor(config, batch, context, shard.kv_heads,
                                                         shard.first_layer, shard.end_layer));
    plan.ranks.push_back(rp);
  }
  std::vector<int64_t> rank_bytes;
  for (const RankPlan& rp : plan.ranks) rank_bytes.push_back(rp.weight_bytes + rp.kv_bytes);
  for (std::string& p : MemoryProblems(pod, rank_bytes)) plan.problems.push_back(std::move(p));
  return plan;
}

}  // namespace gemmapod
