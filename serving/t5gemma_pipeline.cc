#include "serving/t5gemma_pipeline.h"

#include <algorithm>

#include "runtime/comm/communicator.h"
#include "runtime/error.h"
#include "serving/engine/generate.h"
#include "sharding/pod_topology.h"
#include "sharding/process_grid.h"

namespace gemmapod {
namespace {

// Message tags: the encoder's activations between encoder stages, its output to the decoder
// ranks (the decoder stages talk through the engine's own communicator).
constexpr int kTagEncoder = 31;
constexpr int kTagMemory = 32;
constexpr int kTagEncodeJob = 33;  // serving: driver -> encoder ranks, a sequence's input (34)

}  // namespace

// T5Gemma's decoder stages as the engine drives them: the model is the pipeline's, the state
// (self-attention caches and cross-attention memory) this object's own, filled by Encode.
class T5GemmaDecoderStage final : public StageModel {
 public:
  T5GemmaDecoderStage(T5GemmaPipeline& pipeline, T5Gemma& model, int64_t max_sequences,
                      int64_t max_context)
      : pipeline_(pipeline),
        model_(model),
        max_context_(max_context),
        state_(model.NewDecodeState(max_sequences, max_context)) {}

  T5GemmaDecodeState& state() { return state_; }

  int64_t hidden_size() const override { return model_.config().decoder.hidden_size; }
  int64_t vocab_size() const override { return model_.config().decoder.vocab_size; }
  int64_t max_sequences() const override { return state_.num_sequences(); }
  int64_t max_context() const override { return max_context_; }
  int64_t length(int64_t sequence) const override { return state_.self->length(sequence); }
  void Reset(int64_t sequence) override { state_.self->Reset(sequence); }

  void Check(std::span<const SequenceChunk> chunks) const override {
    std::vector<int32_t> tokens;
    LayOutBatch(chunks, *state_.self, tokens);
    for (const SequenceChunk& c : chunks) {
      GEMMAPOD_CHECK(state_.cross[static_cast<size_t>(c.sequence)].length > 0, "T5Gemma: sequence ",
                     c.sequence, " has no encoder output (Encode first)");
    }
    for (size_t i = 0; i < tokens.size(); ++i) {
      GEMMAPOD_CHECK(tokens[i] >= 0 && tokens[i] < vocab_size(), "decoder token ", tokens[i],
                     " is outside the vocabulary of ", vocab_size());
    }
  }
  Tensor Embed(std::span<const int32_t> tokens) const override {
    return model_.EmbedDecoder(tokens);
  }
  void Forward(Tensor& h, std::span<const SequenceChunk> chunks) override {
    std::vector<int32_t> tokens;
    const BatchLayout layout = LayOutBatch(chunks, *state_.self, tokens);
    model_.RunDecoderLayers(h, layout, state_);
    for (const SequenceChunk& c : chunks) {
      state_.self->Advance(c.sequence, static_cast<int64_t>(c.tokens.size()));
    }
  }
  Tensor LogitShard(const Tensor& rows) const override { return model_.LogitShard(rows); }
  int64_t vocab_begin() const override { return model_.shard().decoder.vocab_begin; }
  Tensor GatherLogits(const Tensor& shard) const override { return model_.GatherLogits(shard); }
  void BeginSequence(int64_t sequence, std::span<const int32_t> encoder_tokens) override {
    pipeline_.BeginSequence(sequence, encoder_tokens);
  }
  void Finish() override { pipeline_.FinishEncoders(); }

 private:
  T5GemmaPipeline& pipeline_;
  T5Gemma& model_;
  int64_t max_context_;
  T5GemmaDecodeState state_;
};

T5GemmaPipeline::T5GemmaPipeline(Communicator& world, T5GemmaLayout layout,
                                 const T5GemmaConfig& config, const TensorSource& source,
                                 int64_t max_sequences, int64_t max_context,
                                 const PipelineOptions& options)
    : world_(world), layout_(std::move(layout)) {
  GEMMAPOD_CHECK(world.size() == layout_.world_size(), "T5Gemma: the layout (", layout_.Describe(),
                 ") needs ", layout_.world_size(), " ranks, the job has ", world.size());
  GEMMAPOD_CHECK(max_sequences >= 1 && max_context >= 1, "T5Gemma: ", max_sequences,
                 " sequences of ", max_context, " tokens");
  stage_ = layout_.StageOf(world.rank());
  tp_ = world.Split(stage_, world.rank());
  const T5GemmaShard shard = T5GemmaShardOf(config, layout_, world.rank());
  model_ = std::make_unique<T5Gemma>(config, shard,
                                     LoadT5GemmaShard(config, shard, source, tp_.get()), tp_.get());
  // Rank j of every decoder stage, in stage order (encoder ranks form groups of their own).
  const T5GemmaStagePlan& me = layout_.stages[static_cast<size_t>(stage_)];
  const int tp_rank = world.rank() - me.first_rank;
  decoder_pp_ = world.Split(me.decoder ? tp_rank : world.size() + world.rank(), stage_);
  if (me.decoder) {
    auto decoder =
        std::make_unique<T5GemmaDecoderStage>(*this, *model_, max_sequences, max_context);
    decoder_ = decoder.get();
    engine_ = std::make_unique<PipelineEngine>(*tp_, *decoder_pp_, std::move(decoder), options);
  }
}

T5GemmaPipeline::~T5GemmaPipeline() = default;

int T5GemmaPipeline::driver_rank() const {
  return layout_.stages[static_cast<size_t>(layout_.first_decoder_stage())].first_rank;
}

void T5GemmaPipeline::SendToStage(const Tensor& t, int stage, int tag) const {
  const T5GemmaStagePlan& s = layout_.stages[static_cast<size_t>(stage)];
  for (int r = s.first_rank; r < s.first_rank + s.tp; ++r) world_.Send(t, r, tag);
}

void T5GemmaPipeline::Encode(const std::vector<std::vector<int32_t>>& prompts,
                             std::span<const int64_t> sequences) {
  const T5GemmaConfig& c = model_->config();
  const T5GemmaShard& shard = model_->shard();
  const T5GemmaStagePlan& me = layout_.stages[static_cast<size_t>(stage_)];
  const bool leader = world_.rank() == me.first_rank;
  std::vector<int32_t> tokens;
  const EncoderBatch batch = LayOutEncoderBatch(prompts, c.encoder.pad_id, tokens);
  for (size_t i = 0; i < tokens.size(); ++i) {
    GEMMAPOD_CHECK(tokens[i] >= 0 && tokens[i] < c.encoder.vocab_size, "encoder token ", tokens[i],
                   " (position ", i, ") is outside the vocabulary of ", c.encoder.vocab_size);
  }
  const int first_decoder = layout_.first_decoder_stage();
  Tensor memory;
  if (me.encoder) {
    Tensor h = shard.encoder.has_embedding
                   ? model_->EmbedEncoder(tokens)
                   : Tensor::Empty({batch.rows(), c.encoder.hidden_size}, DType::kF32);
    if (!shard.encoder.has_embedding) {
      world_.Recv(h, layout_.stages[static_cast<size_t>(stage_ - 1)].first_rank, kTagEncoder);
    }
    model_->RunEncoderLayers(h, batch);
    if (!shard.encoder.has_head) {
      if (leader) SendToStage(h, stage_ + 1, kTagEncoder);
    } else {
      memory = model_->FinishEncoder(h);
      // The encoder's output goes once to every rank of every decoder stage, without waiting:
      // a later decoder stage takes it only when the sequence's first chunk reaches it, and
      // while a server's driver is encoding the next sequence of the same micro-batch, the
      // encoder must be free to take that one.
      if (!me.decoder && leader) {
        while (!memory_sends_.empty() && memory_sends_.front()->Done()) memory_sends_.pop_front();
        for (int s = first_decoder; s < static_cast<int>(layout_.stages.size()); ++s) {
          const T5GemmaStagePlan& to = layout_.stages[static_cast<size_t>(s)];
          for (int r = to.first_rank; r < to.first_rank + to.tp; ++r) {
            memory_sends_.push_back(world_.SendAsync(memory, r, kTagMemory));
          }
        }
      }
    }
  }
  if (me.decoder) {
    if (!me.encoder) {
      memory = Tensor::Empty({batch.rows(), c.encoder.hidden_size}, DType::kF32);
      world_.Recv(memory, layout_.stages[static_cast<size_t>(first_decoder - 1)].first_rank,
                  kTagMemory);
    }
    model_->SetEncoderMemory(memory, batch, decoder_->state(), sequences);
  }
}

bool T5GemmaPipeline::has_encoder_ranks() const { return layout_.first_decoder_stage() > 0; }

void T5GemmaPipeline::BeginSequence(int64_t sequence, std::span<const int32_t> tokens) {
  GEMMAPOD_CHECK(serving_, "T5Gemma: encoder input inside the pipeline outside serving");
  GEMMAPOD_CHECK(!tokens.empty() && static_cast<int64_t>(tokens.size()) <=
                                        model_->config().encoder.max_position_embeddings,
                 "T5Gemma: an encoder input of ", tokens.size(),
                 " tokens (the encoder's max_position_embeddings is ",
                 model_->config().encoder.max_position_embeddings, ")");
  // The encoder's own ranks learn of the sequence from the driver; every decoder rank takes its
  // part below (the stage's tp group makes the same calls, later stages when the chunk reaches
  // them, all in the order the sequences started, which is the order the encoder sends in).
  if (has_encoder_ranks() && world_.rank() == driver_rank()) {
    Tensor header = Tensor::Empty({1}, DType::kI32);
    header.data<int32_t>()[0] = static_cast<int32_t>(tokens.size());
    const Tensor payload = Tensor::Borrow(const_cast<int32_t*>(tokens.data()),
                                          {static_cast<int64_t>(tokens.size())}, DType::kI32);
    for (int s = 0; s < layout_.first_decoder_stage(); ++s) {
      SendToStage(header, s, kTagEncodeJob);
      SendToStage(payload, s, kTagEncodeJob + 1);
    }
  }
  const int64_t slot[1] = {sequence};
  Encode({std::vector<int32_t>(tokens.begin(), tokens.end())}, slot);
}

void T5GemmaPipeline::FinishEncoders() {
  if (!serving_ || !has_encoder_ranks() || world_.rank() != driver_rank()) return;
  Tensor header = Tensor::Empty({1}, DType::kI32);
  header.data<int32_t>()[0] = 0;
  for (int s = 0; s < layout_.first_decoder_stage(); ++s) SendToStage(header, s, kTagEncodeJob);
}

void T5GemmaPipeline::ServeEncoder() {
  GEMMAPOD_CHECK(engine_ == nullptr, "T5Gemma: a decoder rank serves through its engine");
  for (;;) {
    Tensor header = Tensor::Empty({1}, DType::kI32);
    WaitForMessage(world_, driver_rank(), kTagEncodeJob);
    world_.Recv(header, driver_rank(), kTagEncodeJob);
    const int64_t n = header.data<int32_t>()[0];
    if (n == 0) return;
    GEMMAPOD_CHECK(n > 0, "T5Gemma encoder: a job of ", n, " tokens");
    std::vector<int32_t> tokens(static_cast<size_t>(n));
    Tensor payload = Tensor::Borrow(tokens.data(), {n}, DType::kI32);
    world_.Recv(payload, driver_rank(), kTagEncodeJob + 1);
    Encode({tokens});
  }
}

Tensor T5GemmaPipeline::Decode(std::span<const SequenceChunk> chunks, bool all_logits) {
  int64_t total = 0;
  for (const SequenceChunk& chunk : chunks) total += static_cast<int64_t>(chunk.tokens.size());
  Tensor logits = Tensor::Empty({all_logits ? total : static_cast<int64_t>(chunks.size()),
                                 model_->config().decoder.vocab_size},
                                DType::kF32);
  if (engine_ != nullptr) {
    // The first decoder stage drives and ends up with the logits; the others serve.
    Tensor got = engine_->Forward(chunks, all_logits);
    if (engine_->is_driver()) logits = std::move(got);
  }
  if (layout_.stages.size() > 1) world_.Broadcast(logits, driver_rank());
  return logits;
}

std::vector<GenerationResult> T5GemmaPipeline::Generate(
    const Tokenizer& tokenizer, std::span<const GenerationRequest> requests,
    const std::function<void(size_t, std::string_view)>& on_text) {
  if (engine_ == nullptr) return {};
  if (!engine_->is_driver()) {
    engine_->Serve();
    return {};
  }
  std::vector<GenerationResult> results = GeneratePipelined(*engine_, tokenizer, requests, on_text);
  return world_.rank() == driver_rank() ? results : std::vector<GenerationResult>{};
}

}  // namespace gemmapod
