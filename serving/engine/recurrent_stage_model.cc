#include "serving/engine/recurrent_stage_model.h"

#include <limits>
#include <set>

#include "runtime/error.h"

namespace gemmapod {
namespace {

class RecurrentStageModel final : public StageModel {
 public:
  RecurrentStageModel(RecurrentGemma model, int64_t max_sequences)
      : model_(std::move(model)), state_(model_.NewState(max_sequences)) {}

  int64_t hidden_size() const override { return model_.config().hidden_size; }
  int64_t vocab_size() const override { return model_.config().vocab_size; }
  int64_t max_sequences() const override { return state_.num_sequences(); }
  // A fixed state: no limit from the model.
  int64_t max_context() const override { return std::numeric_limits<int64_t>::max(); }
  int64_t length(int64_t sequence) const override { return state_.tokens_seen(sequence); }
  void Reset(int64_t sequence) override { state_.Reset(sequence); }

  void Check(std::span<const SequenceChunk> chunks) const override {
    GEMMAPOD_CHECK(!chunks.empty(), "forward: empty batch");
    std::set<int64_t> seen;
    for (const SequenceChunk& c : chunks) {
      GEMMAPOD_CHECK(c.sequence >= 0 && c.sequence < state_.num_sequences(), "forward: sequence ",
                     c.sequence, " outside the state's ", state_.num_sequences());
      GEMMAPOD_CHECK(seen.insert(c.sequence).second, "forward: sequence ", c.sequence,
                     " appears twice in one batch");
      model_.Place({c.sequence, c.tokens, {}}, state_);  // empty chunks and bad ids
    }
  }
  Tensor Embed(std::span<const int32_t> tokens) const override {
    return model_.Embed({tokens.begin(), tokens.end()});
  }
  void Forward(Tensor& h, std::span<const SequenceChunk> chunks) override {
    // One sequence at a time: the recurrence runs along each sequence's own tokens.
    int64_t row = 0;
    for (const SequenceChunk& c : chunks) {
      const int64_t n = static_cast<int64_t>(c.tokens.size());
      Tensor rows = h.Slice(row, row + n);  // a view: the layers write into h
      const RecurrentPlacement at = model_.Place({c.sequence, c.tokens, {}}, state_);
      model_.RunLayers(rows, at, state_);
      model_.Commit(at, state_);
      row += n;
    }
    GEMMAPOD_CHECK(row == h.dim(0), "forward: ", h.dim(0), " activation rows for ", row, " tokens");
  }
  Tensor LogitShard(const Tensor& rows) const override { return model_.LogitShard(rows); }
  int64_t vocab_begin() const override { return model_.shard().vocab_begin; }
  Tensor GatherLogits(const Tensor& shard) const override { return model_.GatherLogits(shard); }

 private:
  RecurrentGemma model_;
  RecurrentGemmaState state_;
};

}  // namespace

std::unique_ptr<StageModel> MakeRecurrentStageModel(RecurrentGemma model, int64_t max_sequences) {
  return std::make_unique<RecurrentStageModel>(std::move(model), max_sequences);
}

}  // namespace gemmapod
