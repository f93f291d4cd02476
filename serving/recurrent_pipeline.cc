#include "serving/recurrent_pipeline.h"

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

Tensor ForwardOnGrid(RecurrentGemma& stage, const ProcessGrid& grid, const RecurrentChunk& chunk,
                     RecurrentGemmaState& state, bool all_logits) {
  const RecurrentGemmaConfig& c = stage.config();
  const int64_t T = static_cast<int64_t>(chunk.tokens.size());
  const RecurrentPlacement at = stage.Place(chunk, state);
  const int pp_rank = grid.coords().pp, pp = grid.shape().pp;
  Tensor h = grid.is_first_stage() ? stage.Embed(chunk.tokens)
                                   : Tensor::Empty({T, c.hidden_size}, DType::kF32);
  if (!grid.is_first_stage()) grid.pp().Recv(h, pp_rank - 1);
  stage.RunLayers(h, at, state);
  stage.Commit(at, state);
  if (!grid.is_last_stage()) grid.pp().Send(h, pp_rank + 1);
  Tensor logits = grid.is_last_stage()
                      ? stage.Logits(h, all_logits)
                      : Tensor::Empty({all_logits ? T : 1, c.vocab_size}, DType::kF32);
  if (pp > 1) grid.pp().Broadcast(logits, pp - 1);
  return logits;
}

}  // namespace gemmapod
