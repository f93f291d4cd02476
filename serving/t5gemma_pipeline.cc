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

std::vector<LayerRange> EvenRanges(int64_t layers, int stages, const std::string& what) {
  GEMMAPOD_CHECK(stages >= 1 && stages <= layers, what, ": ", stages, " stage(s) for ", layers,
                 " layers");
  std::vector<LayerRange> out;
  int64_t begin = 0;
  for (int s = 0; s < stages; ++s) {
    const int64_t n = layers / stages + (s < layers % stages ? 1 : 0);
    out.push_back({begin, begin + n});
    begin += n;
  }
  return out;
}

void CheckTp(const ModelConfig& stack, int tp, const std::string& what) {
  if (auto problem = TensorParallelProblem(stack, tp)) throw Error(StrCat(what, ": ", *problem));
}

}  // namespace

int T5GemmaLayout::world_size() const {
  int n = 0;
  for (const T5GemmaStagePlan& s : stages) n += s.tp;
  return n;
}

int T5GemmaLayout::StageOf(int rank) const {
  for (size_t i = 0; i < stages.size(); ++i) {
    if (rank >= stages[i].first_rank && rank < stages[i].first_rank + stages[i].tp) {
      return static_cast<int>(i);
    }
  }
  throw Error(StrCat("T5Gemma layout: rank ", rank, " is outside its ", world_size(), " ranks"));
}

int T5GemmaLayout::first_decoder_stage() const {
  for (size_t i = 0; i < stages.size(); ++i) {
    if (stages[i].decoder) return static_cast<int>(i);
  }
  throw Error("T5Gemma layout: no decoder stage");
}

std::string T5GemmaLayout::Describe() const {
  if (stages.size() == 1) return StrCat("encoder and decoder on one stage, tp ", stages[0].tp);
  const int decoder_stages = static_cast<int>(stages.size()) - first_decoder_stage();
  const int encoder_stages = first_decoder_stage();
  return StrCat("encoder tp ", stages.front().tp, " x ", encoder_stages, " stage(s) | decoder tp ",
                stages.back().tp, " x ", decoder_stages, " stage(s)");
}

T5GemmaLayout MakeT5GemmaLayout(const T5GemmaConfig& config, int encoder_tp, int encoder_stages,
                                int decoder_tp, int decoder_stages) {
  CheckTp(config.decoder, decoder_tp, "decoder tp");
  T5GemmaLayout layout;
  if (encoder_stages == 0) {
    GEMMAPOD_CHECK(decoder_stages == 1, "T5Gemma layout: without encoder stages of their own, ",
                   "one stage holds both stacks; got ", decoder_stages, " decoder stages");
    GEMMAPOD_CHECK(encoder_tp == decoder_tp, "T5Gemma layout: encoder tp ", encoder_tp,
                   " differs from decoder tp ", decoder_tp,
                   " but they share one stage; give the encoder stages of its own");
    CheckTp(config.encoder, encoder_tp, "encoder tp");
    layout.stages.push_back({true,
                             true,
                             {0, config.encoder.num_layers},
                             {0, config.decoder.num_layers},
                             decoder_tp,
                             0});
    return layout;
  }
  CheckTp(config.encoder, encoder_tp, "encoder tp");
  int rank = 0;
  for (const LayerRange& r : EvenRanges(config.encoder.num_layers, encoder_stages, "encoder")) {
    layout.stages.push_back({true, false, r, {}, encoder_tp, rank});
    rank += encoder_tp;
  }
  for (const LayerRange& r : EvenRanges(config.decoder.num_layers, decoder_stages, "decoder")) {
    layout.stages.push_back({false, true, {}, r, decoder_tp, rank});
    rank += decoder_tp;
  }
  return layout;
}

T5GemmaReplicaRank T5GemmaReplicaOf(const PodTopology* pod, int world_rank) {
  if (pod == nullptr || pod->dp == 1) return {0, world_rank};
  const GridShape shape{pod->tp, pod->pp, pod->dp};
  const GridCoords at = shape.CoordsOf(world_rank);
  return {at.dp, at.pp * pod->tp + at.tp};
}

T5GemmaLayout T5GemmaLayoutFromPod(const PodTopology& pod, const T5GemmaConfig& config) {
  const int encoder_tp = pod.encoder_tp > 0 ? pod.encoder_tp : pod.tp;
  const PipelineLayout& p = pod.pipeline;
  if (p.automatic) {
    // Auto: with pp > 1 and no split given, the encoder takes stages in proportion to its
    // bytes (at least one, leaving at least one to the decoder).
    int encoder_stages = p.encoder_stages;
    if (encoder_stages == 0 && pod.pp > 1) {
      const double share = static_cast<double>(config.encoder.ParameterCount()) /
                           static_cast<double>(config.ParameterCount());
      encoder_stages = std::clamp(static_cast<int>(share * pod.pp + 0.5), 1, pod.pp - 1);
    }
    return MakeT5GemmaLayout(config, encoder_tp, encoder_stages, pod.tp,
                             encoder_stages == 0 ? 1 : pod.pp - encoder_stages);
  }
  // Explicit stages: their parts and inclusive layer ranges, checked to cover each stack.
  T5GemmaLayout layout;
  int rank = 0;
  int64_t next[2] = {0, 0};
  for (size_t i = 0; i < p.stages.size(); ++i) {
    const StageLayout& s = p.stages[i];
    const bool encoder = s.part == StackPart::kEncoder;
    const ModelConfig& stack = encoder ? config.encoder : config.decoder;
    const LayerRange r{s.first_layer, static_cast<int64_t>(s.last_layer) + 1};
    GEMMAPOD_CHECK(r.first == next[encoder] && r.end <= stack.num_layers, pod.source,
                   ": pipeline.stages[", i, "]: layers [", s.first_layer, ", ", s.last_layer,
                   "] of the ", StackPartName(s.part), " (", stack.num_layers,
                   " layers) must start at ", next[encoder]);
    next[encoder] = r.end;
    const int tp = encoder ? encoder_tp : pod.tp;
    layout.stages.push_back(
        {encoder, !encoder, encoder ? r : LayerRange{}, encoder ? LayerRange{} : r, tp, rank});
    rank += tp;
  }
  GEMMAPOD_CHECK(next[1] == config.encoder.num_layers && next[0] == config.decoder.num_layers &&
                     p.encoder_stages >= 1,
                 pod.source, ": pipeline.stages must cover the encoder's ",
                 config.encoder.num_layers, " layers and the decoder's ", config.decoder.num_layers,
                 " layers, encoder stages first");
  CheckTp(config.encoder, encoder_tp, "encoder tp");
  CheckTp(config.decoder, pod.tp, "decoder tp");
  return layout;
}

T5GemmaShard T5GemmaShardOf(const T5GemmaConfig& config, const T5GemmaLayout& layout, int rank) {
  const int index = layout.StageOf(rank);
  const T5GemmaStagePlan& s = layout.stages[static_cast<size_t>(index)];
  const int tp_rank = rank - s.first_rank;
  const int first_decoder = layout.first_decoder_stage();
  const bool first_stage = index == 0;
  const bool last_encoder = s.encoder && (s.decoder || index + 1 == first_decoder);
  const bool first_decoder_stage = index == first_decoder;
  const bool last_stage = index + 1 == static_cast<int>(layout.stages.size());
  T5GemmaShard shard;
  shard.has_encoder = s.encoder;
  shard.has_decoder = s.decoder;
  if (s.encoder) {
    shard.encoder = MakeGemmaShard(config.encoder, s.tp, tp_rank, s.encoder_layers.first,
                                   s.encoder_layers.end, first_stage, last_encoder);
  }
  if (s.decoder) {
    shard.decoder = MakeGemmaShard(config.decoder, s.tp, tp_rank, s.decoder_layers.first,
                                   s.decoder_layers.end, first_decoder_stage, last_stage);
  }
  return shard;
}

// T5Gemma's decoder stages as the engine drives them: the model is the pipeline's, the state
// (self-attention caches and cross-attention memory) this object's own, filled by Encode.
class T5GemmaDecoderStage final : public StageModel {
 public:
  T5GemmaDecoderStage(T5Gemma& model, int64_t max_sequences, int64_t max_context)
      : model_(model),
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

 private:
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
    auto decoder = std::make_unique<T5GemmaDecoderStage>(*model_, max_sequences, max_context);
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

void T5GemmaPipeline::Encode(const std::vector<std::vector<int32_t>>& prompts) {
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
      // The encoder's output goes once to every rank of every decoder stage.
      if (!me.decoder && leader) {
        for (int s = first_decoder; s < static_cast<int>(layout_.stages.size()); ++s) {
          SendToStage(memory, s, kTagMemory);
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
    model_->SetEncoderMemory(memory, batch, decoder_->state());
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
