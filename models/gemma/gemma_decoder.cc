#include "models/gemma/gemma_decoder.h"

namespace gemmapod {

GemmaDecoder::GemmaDecoder(ModelConfig config, GemmaWeights weights)
    : stage_(config, WholeGemma(config), std::move(weights), nullptr) {}

Tensor GemmaDecoder::Forward(std::span<const SequenceChunk> batch, KvCache& cache, LogitRows rows) {
  std::vector<int32_t> tokens;
  const BatchLayout layout = LayOutBatch(batch, cache, tokens);
  Tensor h = stage_.Embed(tokens);
  stage_.RunLayers(h, layout, cache);
  for (const SequenceChunk& chunk : batch) {
    cache.Advance(chunk.sequence, static_cast<int64_t>(chunk.tokens.size()));
  }
  return stage_.LogitShard(rows == LogitRows::kAllTokens ? h : LastTokenRows(h, layout));
}

}  // namespace gemmapod
