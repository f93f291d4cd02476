#include "serving/engine/gemma_stage_model.h"

#include "runtime/error.h"
#include "sharding/process_grid.h"

namespace gemmapod {
namespace {

class GemmaStageModel final : public StageModel {
 public:
  GemmaStageModel(GemmaStage stage, int64_t max_sequences, int64_t max_context, const KvPool& pool)
      : stage_(std::move(stage)),
        max_context_(max_context > 0 ? max_context : stage_.config().max_position_embeddings),
        pool_(pool),
        cache_(stage_.NewCache(max_sequences, max_context_, pool)) {}

  int64_t hidden_size() const override { return stage_.config().hidden_size; }
  int64_t vocab_size() const override { return stage_.config().vocab_size; }
  int64_t max_sequences() const override { return cache_.num_sequences(); }
  int64_t max_context() const override { return max_context_; }
  int64_t length(int64_t sequence) const override { return cache_.length(sequence); }
  void Reset(int64_t sequence) override { cache_.Reset(sequence); }
  KvPool kv_pool() const override { return pool_; }
  void AssignKv(int64_t sequence, KvGroup group, int64_t first,
                std::span<const int32_t> blocks) override {
    cache_.Assign(sequence, group, first, blocks);
  }
  void PlaceKv(int64_t sequence, int64_t length) override { cache_.Place(sequence, length); }

  void Check(std::span<const SequenceChunk> chunks) const override {
    std::vector<int32_t> tokens;
    LayOutBatch(chunks, cache_, tokens);
  }
  Tensor Embed(std::span<const int32_t> tokens) const override { return stage_.Embed(tokens); }
  void Forward(Tensor& h, std::span<const SequenceChunk> chunks) override {
    std::vector<int32_t> tokens;
    const BatchLayout layout = LayOutBatch(chunks, cache_, tokens);
    stage_.RunLayers(h, layout, cache_);
    for (const SequenceChunk& c : chunks) {
      cache_.Advance(c.sequence, static_cast<int64_t>(c.tokens.size()));
    }
  }
  Tensor LogitShard(const Tensor& rows) const override { return stage_.LogitShard(rows); }
  int64_t vocab_begin() const override { return stage_.shard().vocab_begin; }
  Tensor GatherLogits(const Tensor& shard) const override { return stage_.GatherLogits(shard); }

 private:
  GemmaStage stage_;
  int64_t max_context_;
  KvPool pool_;
  KvCache cache_;
};

}  // namespace

std::unique_ptr<StageModel> MakeGemmaStageModel(const ProcessGrid& grid, GemmaStage stage,
                                                int64_t max_sequences, int64_t max_context,
                                                const KvPool& pool) {
  const GemmaShard& s = stage.shard();
  GEMMAPOD_CHECK(s.tp == grid.shape().tp && s.tp_rank == grid.coords().tp &&
                     s.has_embedding == grid.is_first_stage() && s.has_head == grid.is_last_stage(),
                 "pipeline: the stage's shard (tp rank ", s.tp_rank, " of ", s.tp,
                 ") is not this rank's place in the grid (tp rank ", grid.coords().tp, " of ",
                 grid.shape().tp, ", stage ", grid.coords().pp, " of ", grid.shape().pp, ")");
  return std::make_unique<GemmaStageModel>(std::move(stage), max_sequences, max_context, pool);
}

}  // namespace gemmapod
