#include "training/trainable_model.h"

#include <algorithm>
#include <map>

#include "models/gemma/gemma_decoder.h"
#include "models/gemma/gemma_shard.h"
#include "models/layers/device_tensors.h"
#include "models/layers/parallel.h"
#include "models/recurrent_gemma/recurrent_gemma.h"
#include "models/recurrent_gemma/recurrent_gemma_config.h"
#include "models/recurrent_gemma/recurrent_gemma_shard.h"
#include "models/recurrent_gemma/recurrent_gemma_weights.h"
#include "models/t5gemma/t5gemma_config.h"
#include "models/t5gemma/t5gemma_weights.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/comm/communicator.h"
#include "runtime/error.h"
#include "sharding/gemma_layout.h"
#include "sharding/recurrent_gemma_layout.h"
#include "sharding/t5gemma_layout.h"
#include "training/adamw.h"
#include "training/data.h"
#include "training/exact_match.h"
#include "training/lora.h"
#include "training/model_parallel.h"
#include "training/recurrent_gemma_lm.h"
#include "training/t5gemma_lm.h"

namespace gemmapod {

Tensor TrainableModel::WholeOf(const std::string& name, const Tensor& mine) const {
  const ModelParallelParameters* parts = model_parallel();
  if (parts == nullptr) return mine;
  // Optimizer tensors are f32 wherever they are held.
  return parts->Whole(name, mine.defined() ? &mine : nullptr, DType::kF32);
}

void TrainableModel::SendPartOf(const std::string& name, const Tensor& mine) const {
  if (const ModelParallelParameters* tp = model_parallel()) tp->Send(name, mine);
}

Tensor TrainableModel::PartOf(const std::string& name, const Tensor& whole) const {
  const ModelParallelParameters* tp = model_parallel();
  return tp != nullptr ? tp->PartOf(name, whole) : whole;
}

std::vector<std::string> TrainableModel::ParameterNames(const AdamW& optimizer) const {
  const ModelParallelParameters* parts = model_parallel();
  return parts != nullptr ? parts->names() : optimizer.names();
}

namespace {

[[noreturn]] void NoPipelineStages(const std::string& family) {
  throw Error(StrCat("parallel.pp: ", family, " has no pipeline stages"));
}

// The tokens of a micro-batch's examples (decoder side), and of their encoder inputs.
int64_t TokensOf(const std::vector<const TrainingExample*>& examples) {
  int64_t tokens = 0;
  for (const TrainingExample* e : examples) tokens += static_cast<int64_t>(e->tokens.size());
  return tokens;
}
int64_t EncoderTokensOf(const std::vector<const TrainingExample*>& examples) {
  int64_t tokens = 0;
  for (const TrainingExample* e : examples) {
    tokens += static_cast<int64_t>(e->encoder_tokens.size());
  }
  return tokens;
}

// The ranks of a replica's model group that hold the same rows of a tied embedding on its two
// ends (the stage with the lookup, `first`, and the last stage with the head), as one group;
// every other rank alone. Null when one stage holds both. Collective over `model`.
std::unique_ptr<Communicator> TiedEmbeddingGroup(Communicator& model, int stages, int first,
                                                 int stage) {
  const int tp = model.size() / stages, rank = model.rank();
  const bool end = stage == first || stage == stages - 1;
  std::unique_ptr<Communicator> group = model.Split(end ? rank % tp : tp + rank, rank);
  if (first == stages - 1 || !end) return nullptr;
  return group;
}

// GRPO's rollout engines run a whole model (CheckModelParallelJob refuses such jobs first).
void RefuseModelParallelRollouts(bool model_parallel) {
  GEMMAPOD_CHECK(!model_parallel,
                 "objective: grpo: rollouts over a model-parallel training group are not built "
                 "yet; remove parallel.tp / parallel.pp (data-parallel replicas share the "
                 "prompts)");
}

}  // namespace

LossSum TrainableModel::LossAndGradients(const std::vector<const TrainingExample*>& examples,
                                         double scale, bool recompute) {
  const StageGradient gradient{scale, recompute};
  LossSum loss;
  StageForward(0, examples, Tensor(), &gradient, loss);
  StageBackward(0, Tensor());
  return loss;
}

LossSum TrainableModel::Loss(const std::vector<const TrainingExample*>& examples) {
  LossSum loss;
  StageForward(0, examples, Tensor(), nullptr, loss);
  return loss;
}

Shape TrainableModel::InputBoundary(const std::vector<const TrainingExample*>&) const {
  NoPipelineStages(family());
}

Shape TrainableModel::OutputBoundary(const std::vector<const TrainingExample*>&) const {
  NoPipelineStages(family());
}

Tensor TrainableModel::StageForward(int64_t, const std::vector<const TrainingExample*>&,
                                    const Tensor&, const StageGradient*, LossSum&) {
  NoPipelineStages(family());
}

Tensor TrainableModel::StageBackward(int64_t, const Tensor&) { NoPipelineStages(family()); }

void TrainableModel::AddScoreHead() {
  throw Error(StrCat("objective: reward: the scoring head is built for decoder-only Gemma so far; ",
                     family(), " trains with sft or dpo"));
}

std::vector<Rollout> TrainableModel::Rollouts(const Tokenizer&,
                                              const std::vector<std::vector<int32_t>>&,
                                              const std::vector<uint64_t>&, const RolloutOptions&) {
  throw Error(
      StrCat("objective: grpo: rollouts are built on the generation loops of decoder-only "
             "Gemma and RecurrentGemma so far; ",
             family(), " trains with sft or dpo"));
}

bool ModelParallelism::active() const { return model != nullptr && model->size() > 1; }

namespace {

// What every family's stage hooks share: one stage loss kept across a step's micro-batches (it
// holds their activations between forward and backward), made on first use, with the layer hook
// handed to it.
template <typename StageLoss>
class StagedTrainable : public TrainableModel {
 public:
  void SetLayerDone(LayerDone hook) override {
    layer_done_ = std::move(hook);
    if (stage_) stage_->layer_done = layer_done_;
  }
  Tensor StageBackward(int64_t micro, const Tensor& doutput) override {
    GEMMAPOD_CHECK(stage_ != nullptr, "pipeline: a backward before any forward");
    return stage_->Backward(micro, doutput);
  }

 protected:
  // The stage loss, made by `make` the first time or again when `remake`.
  template <typename Make>
  StageLoss& Stage(const Make& make, bool remake = false) {
    if (!stage_ || remake) {
      stage_ = make();
      stage_->layer_done = layer_done_;
    }
    return *stage_;
  }
  // The stage loss's form of the engine's gradient request (null: forward only).
  static const GemmaStageLoss::GradientScale* ScaleOf(const StageGradient* gradient,
                                                      GemmaStageLoss::GradientScale& storage) {
    if (gradient == nullptr) return nullptr;
    storage.scale = gradient->scale;
    return &storage;
  }

 private:
  std::unique_ptr<StageLoss> stage_;
  LayerDone layer_done_;
};

// Decoder-only Gemma, whole or as one rank's part of a model group: a shard of a tensor-parallel
// group (Megatron's parallel layers over it) of a pipeline stage (its layers, with the embedding
// on the first stage and the tied head on the last). Checkpoints gather whole tensors.
class GemmaTrainable final : public StagedTrainable<GemmaStageLoss> {
 public:
  GemmaTrainable(ModelConfig config, GemmaWeights weights)
      : config_(std::move(config)), weights_(std::move(weights)), shard_(WholeGemma(config_)) {}
  GemmaTrainable(ModelConfig config, GemmaWeights weights, std::vector<LayerRange> stages,
                 const ModelParallelism& parallel)
      : config_(std::move(config)),
        weights_(std::move(weights)),
        stages_(std::move(stages)),
        parallel_groups_(parallel),
        tp_(parallel.tp != nullptr && parallel.tp->size() > 1 ? parallel.tp : nullptr),
        parameters_(parallel.model, Holdings()) {
    shard_ = ShardOfModelRank(parallel.model->rank());
    embedding_group_ = TiedEmbeddingGroup(*parallel.model, parallel.stages, 0, parallel.stage);
    parallel_.tp = tp_;
    parallel_.vocab = {config_.vocab_size, shard_.vocab_begin, shard_.vocab_rows,
                       shard_.vocab_valid};
    // Ranks that share a key/value head (fewer heads than ranks) sum its gradient among them.
    if (tp_ != nullptr && config_.num_kv_heads < shard_.tp) {
      kv_group_ = tp_->Split(static_cast<int>(shard_.kv_head_begin), shard_.tp_rank);
    }
  }

  std::string family() const override { return "gemma"; }
  int64_t vocab_size() const override { return config_.vocab_size; }
  int64_t max_context() const override { return config_.max_position_embeddings; }
  void AttachLora(const LoraOptions& options, uint64_t seed) override {
    GEMMAPOD_CHECK(!parameters_.active(),
                   "lora: adapters are built for one rank per replica so far; remove lora: or "
                   "parallel.tp / parallel.pp");
    gemmapod::AttachLora(config_, weights_, options, seed);
  }
  void RegisterParameters(AdamW& optimizer) override {
    grads_ = GemmaGrads::ZerosFor(config_, weights_);
    if (freeze_score_) grads_.score = Tensor();
    AddGemmaParameters(optimizer, config_, weights_, grads_);
    // A parameter held by several ranks (replicated norms, a shared key/value head, the tied
    // embedding of the last stage) counts in the gradient norm once.
    if (parameters_.active()) parameters_.CountEachElementOnce(optimizer);
  }
  Shape InputBoundary(const std::vector<const TrainingExample*>& examples) const override {
    return {TokensOf(examples), config_.hidden_size};
  }
  Shape OutputBoundary(const std::vector<const TrainingExample*>& examples) const override {
    return {TokensOf(examples), config_.hidden_size};
  }
  Tensor StageForward(int64_t micro, const std::vector<const TrainingExample*>& examples,
                      const Tensor& input, const StageGradient* gradient, LossSum& loss) override {
    const bool recompute = gradient != nullptr && gradient->recompute;
    GemmaStageLoss& stage = Stage(
        [&] {
          return std::make_unique<GemmaStageLoss>(config_, weights_, grads_, shard_, recompute,
                                                  parallel_);
        },
        recompute != stage_recompute_);
    stage_recompute_ = recompute;
    GemmaStageLoss::GradientScale scale{};
    PackedBatch batch = PackExamples(examples);
    batch.objective = ObjectiveFor(examples);
    batch.score_objective = ScoreObjectiveFor(examples);
    return stage.Forward(micro, std::move(batch), input, ScaleOf(gradient, scale), loss);
  }
  void FreezeScoreHead() override { freeze_score_ = true; }
  void AddScoreHead() override {
    if (config_.num_labels > 0) return;  // a reward model already
    GEMMAPOD_CHECK(!HasAdapters(weights_), "reward: a scoring head trains in full; remove lora:");
    config_.num_labels = 1;
    // Zero: every sequence scores 0 until the first step, which moves the head alone.
    if (shard_.has_head) {
      weights_.score.weight = ZerosOn(weights_.final_norm.device(), {1, config_.hidden_size});
      if (weights_.embed_tokens.weight.dtype() == DType::kBF16) {
        weights_.score.weight = weights_.score.weight.To(DType::kBF16);
      }
    }
    if (parameters_.active())
      parameters_ = ModelParallelParameters(parallel_groups_.model, Holdings());
  }
  void SyncGradients() override {
    // The tied embedding: the first stage's gradient from the lookups, the last stage's from the
    // head; both ranks take the sum, and so the same step.
    if (embedding_group_ != nullptr) AllReduceSum(embedding_group_.get(), grads_.embed_tokens);
    if (tp_ == nullptr) return;
    // Each rank's shard feeds a replicated parameter differently: the qk-norm weights see only
    // this rank's heads, and a key/value head shared by several ranks only their query heads.
    for (GemmaLayerGrads& layer : grads_.layers) {
      if (!layer.attn_norm.defined()) continue;  // on another stage
      for (Tensor* norm : {&layer.attention.q_norm, &layer.attention.k_norm}) {
        if (norm->defined()) AllReduceSum(tp_, *norm);
      }
      if (kv_group_) {
        AllReduceSum(kv_group_.get(), layer.attention.k_proj.weight);
        AllReduceSum(kv_group_.get(), layer.attention.v_proj.weight);
      }
    }
  }
  void WriteModel(Hdf5CheckpointWriter& writer,
                  const std::function<void(const std::string&, DType)>& wrote) override {
    writer.SetConfig(ToAttributes(config_));
    if (parameters_.active()) {
      // Whole tensors from the model group's parts, this rank's own among them; a parameter
      // held only on other stages comes in the dtype its kind trains in.
      const DType matrices = weights_.embed_tokens.weight.dtype();
      ForEachGemmaParameter(config_, weights_, [&](const GemmaParameter& p, Tensor& slot) {
        const DType dtype = slot.defined() ? slot.dtype() : p.is_norm ? DType::kF32 : matrices;
        writer.Write(p.name, parameters_.Whole(p.name, slot.defined() ? &slot : nullptr, dtype));
        if (wrote) wrote(p.name, dtype);
      });
      return;
    }
    // LoRA: the merged matrices (new tensors; the training weights keep their adapters).
    GemmaWeights model = MergedLoraWeights(config_, weights_);
    ForEachGemmaParameter(config_, model, [&](const GemmaParameter& p, Tensor& slot) {
      writer.Write(p.name, slot);
      if (wrote) wrote(p.name, slot.dtype());
    });
  }
  void SendModel() override {
    ForEachShardParameter(config_, shard_, weights_,
                          [&](const GemmaParameter& p, const ParameterSlice&, Tensor& slot) {
                            parameters_.Send(p.name, slot);
                          });
  }
  const ModelParallelParameters* model_parallel() const override {
    return parameters_.active() ? &parameters_ : nullptr;
  }
  ExactMatch HeldOutExactMatch(const Tokenizer& tokenizer,
                               const std::vector<TrainingExample>& held_out,
                               int64_t max_new_tokens) override {
    GEMMAPOD_CHECK(!parameters_.active(),
                   "eval.exact_match: generation over a model-parallel training group is not "
                   "built yet; the held-out loss is reported (remove eval.exact_match or "
                   "parallel.tp / parallel.pp)");
    // The serving engine over the same weight tensors (a GemmaWeights copy shares them, adapters
    // included): it answers with the weights as they are after the last step.
    if (!engine_) engine_ = std::make_unique<GemmaDecoder>(config_, weights_);
    return gemmapod::HeldOutExactMatch(*engine_, tokenizer, held_out, max_new_tokens);
  }
  std::vector<Rollout> Rollouts(const Tokenizer& tokenizer,
                                const std::vector<std::vector<int32_t>>& prompts,
                                const std::vector<uint64_t>& seeds,
                                const RolloutOptions& options) override {
    RefuseModelParallelRollouts(parameters_.active());
    // The serving engine over the same weight tensors, in exact f32 products as the trainer's
    // forward: each step's answers come from the weights the last step left.
    if (!engine_) engine_ = std::make_unique<GemmaDecoder>(config_, weights_);
    return GenerateRollouts(*engine_, tokenizer, prompts, seeds, options);
  }
  TrainingMemory PlanMemory(const TrainingJob& job, int64_t max_length) const override {
    return PlanTrainingMemory(config_, job, max_length);
  }

 private:
  // What each model-group rank holds of every parameter, as the checkpoint book reads it.
  ModelParallelParameters::Visit Holdings() {
    return [this](int rank, const auto& fn) {
      GemmaWeights scratch;
      ForEachShardParameter(config_, ShardOfModelRank(rank), scratch,
                            [&](const GemmaParameter& p, const ParameterSlice& slice, Tensor&) {
                              fn(p.name, p.shape, slice);
                            });
    };
  }
  // Model-group rank r is tensor-parallel rank r % tp of stage r / tp.
  GemmaShard ShardOfModelRank(int rank) const {
    const int tp = parallel_groups_.model->size() / static_cast<int>(stages_.size());
    const auto stage = static_cast<size_t>(rank / tp);
    return MakeGemmaShard(config_, tp, rank % tp, stages_[stage].first, stages_[stage].end,
                          stage == 0, stage + 1 == stages_.size());
  }

  ModelConfig config_;
  GemmaWeights weights_;
  GemmaGrads grads_;
  std::unique_ptr<GemmaDecoder> engine_;
  bool freeze_score_ = false;  // a reward model's head, trained only by objective: reward
  // Model parallelism (parameters_ inactive: the whole model on this rank).
  std::vector<LayerRange> stages_;
  ModelParallelism parallel_groups_;
  Communicator* tp_ = nullptr;
  GemmaShard shard_;
  std::unique_ptr<Communicator> kv_group_;         // the ranks sharing this rank's key/value head
  std::unique_ptr<Communicator> embedding_group_;  // the other end's rank of the tied embedding
  ModelParallelParameters parameters_;
  LossParallelism parallel_;
  bool stage_recompute_ = false;  // whether the stage loss was made to recompute layers
};

TrainingMemory PlanRecurrentGemmaTraining(const RecurrentGemmaConfig& c, const TrainingJob& job,
                                          int64_t max_length) {
  TrainingMemory m = FullTrainingMemory(c.ParameterCount(), job, max_length);
  // Per token and layer, f32: the residual stream and norms (6 d), the MLP (3 ffn), and the
  // recurrent block's branches, convolution, gates and recurrence (8 lru), the larger block.
  const int64_t d = c.hidden_size, f = c.intermediate_size, lru = c.lru_width;
  m.activations = 4 * (6 * d + 3 * f + 8 * lru) * c.num_layers * m.micro_batch_tokens;
  m.head = 2 * c.vocab_size * 4 * m.micro_batch_tokens;
  m.largest_tensor = c.vocab_size * c.hidden_size;
  return m;
}

TrainingMemory PlanT5GemmaTraining(const T5GemmaConfig& c, const TrainingJob& job,
                                   int64_t max_length) {
  TrainingMemory m = FullTrainingMemory(c.ParameterCount(), job, max_length);
  // Both stacks keep a Gemma layer's activations per token (6 d + 2 q + 2 kv + 3 ffn); each
  // decoder layer adds its cross-attention's (the normed input, q, the attention output, the
  // block's output, and k and v over the encoder's rows).
  const auto per_layer = [](const ModelConfig& s) {
    return 4 * (6 * s.hidden_size + 2 * s.q_width() + 2 * s.kv_width() + 3 * s.intermediate_size);
  };
  const ModelConfig& e = c.encoder;
  const ModelConfig& d = c.decoder;
  const int64_t cross = 4 * (2 * d.hidden_size + 2 * d.q_width() + 2 * d.kv_width());
  m.activations =
      (per_layer(e) * e.num_layers + (per_layer(d) + cross) * d.num_layers) * m.micro_batch_tokens;
  m.head = 2 * d.vocab_size * 4 * m.micro_batch_tokens;
  m.largest_tensor = std::max(e.vocab_size * e.hidden_size, d.vocab_size * d.hidden_size);
  return m;
}

// RecurrentGemma's rows: the recurrence has no positional limit and the attention is local, so
// the only bound is what a row costs (time, and activation memory, which the plan counts).
constexpr int64_t kRecurrentMaxRow = int64_t{1} << 20;

// RecurrentGemma, whole or as one rank's part of a model group: a shard of a tensor-parallel
// group of a pipeline stage, as decoder-only Gemma.
class RecurrentGemmaTrainable final : public StagedTrainable<RecurrentGemmaStageLoss> {
 public:
  RecurrentGemmaTrainable(RecurrentGemmaConfig config, RecurrentGemmaWeights weights)
      : config_(std::move(config)),
        weights_(std::move(weights)),
        shard_(WholeRecurrentGemma(config_)) {}
  RecurrentGemmaTrainable(RecurrentGemmaConfig config, RecurrentGemmaWeights weights,
                          std::vector<std::pair<int64_t, int64_t>> stages,
                          const ModelParallelism& parallel)
      : config_(std::move(config)),
        weights_(std::move(weights)),
        stages_(std::move(stages)),
        groups_(parallel),
        tp_(parallel.tp != nullptr && parallel.tp->size() > 1 ? parallel.tp : nullptr),
        parameters_(parallel.model, [this](int rank, const auto& fn) {
          const RecurrentGemmaShard theirs = ShardOfModelRank(rank);
          for (const RecurrentGemmaParameter& p : RecurrentGemmaParameters(config_)) {
            if (const auto slice = RecurrentGemmaSliceOf(config_, theirs, p.name)) {
              fn(p.name, p.shape, *slice);
            }
          }
        }) {
    shard_ = ShardOfModelRank(parallel.model->rank());
    embedding_group_ = TiedEmbeddingGroup(*parallel.model, parallel.stages, 0, parallel.stage);
    parallel_.tp = tp_;
    parallel_.vocab = {config_.vocab_size, shard_.vocab_begin, shard_.vocab_rows,
                       shard_.vocab_rows};
  }

  std::string family() const override { return "recurrent_gemma"; }
  int64_t vocab_size() const override { return config_.vocab_size; }
  int64_t max_context() const override { return kRecurrentMaxRow; }
  void AttachLora(const LoraOptions&, uint64_t) override {
    throw Error(
        "lora: adapters are built for decoder-only Gemma so far; train RecurrentGemma "
        "in full (remove lora:)");
  }
  void RegisterParameters(AdamW& optimizer) override {
    grads_ = RecurrentGemmaGrads::ZerosFor(config_, weights_);
    std::map<const Tensor*, Tensor*> grad_of = {
        {&weights_.embed_tokens.weight, &grads_.embed_tokens},
        {&weights_.final_norm, &grads_.final_norm}};
    const auto linear = [&](Linear& w, LinearGrad& g) {
      grad_of[&w.weight] = &g.weight;
      if (w.bias.defined()) grad_of[&w.bias] = &g.bias;
    };
    for (size_t l = 0; l < weights_.layers.size(); ++l) {
      RecurrentGemmaLayerWeights& w = weights_.layers[l];
      RecurrentGemmaLayerGrads& g = grads_.layers[l];
      grad_of[&w.temporal_pre_norm] = &g.temporal_pre_norm;
      grad_of[&w.channel_pre_norm] = &g.channel_pre_norm;
      if (config_.blocks[l] == TemporalBlock::kRecurrent) {
        RecurrentBlockWeights& r = w.recurrent;
        RecurrentBlockGrads& rg = g.recurrent;
        linear(r.linear_x, rg.linear_x);
        linear(r.linear_y, rg.linear_y);
        linear(r.linear_out, rg.linear_out);
        grad_of[&r.conv_weight] = &rg.conv_weight;
        grad_of[&r.conv_bias] = &rg.conv_bias;
        grad_of[&r.recurrent_param] = &rg.recurrent_param;
        grad_of[&r.input_gate_weight] = &rg.input_gate_weight;
        grad_of[&r.input_gate_bias] = &rg.input_gate_bias;
        grad_of[&r.recurrent_gate_weight] = &rg.recurrent_gate_weight;
        grad_of[&r.recurrent_gate_bias] = &rg.recurrent_gate_bias;
      } else {
        linear(w.attention.q_proj, g.q_proj);
        linear(w.attention.k_proj, g.k_proj);
        linear(w.attention.v_proj, g.v_proj);
        linear(w.attention.o_proj, g.o_proj);
      }
      linear(w.gate_proj, g.mlp.gate_proj);
      linear(w.up_proj, g.mlp.up_proj);
      linear(w.down_proj, g.mlp.down_proj);
    }
    ForEachRecurrentGemmaParameter(config_, weights_,
                                   [&](const RecurrentGemmaParameter& p, Tensor& slot) {
                                     if (!slot.defined()) return;  // another stage's
                                     const auto it = grad_of.find(&slot);
                                     GEMMAPOD_CHECK(it != grad_of.end() && it->second->defined(),
                                                    "train: no gradient for '", p.name, "'");
                                     // Decay on matrices, convolution taps and gate blocks; not on
                                     // norms, biases and Λ.
                                     optimizer.Add(p.name, slot, *it->second, slot.rank() >= 2);
                                   });
    // Parameters held by several ranks (norms, the single key/value head, row-parallel biases, the
    // last stage's tied embedding) count once.
    if (parameters_.active()) parameters_.CountEachElementOnce(optimizer);
  }
  Shape InputBoundary(const std::vector<const TrainingExample*>& examples) const override {
    return {TokensOf(examples), config_.hidden_size};
  }
  Shape OutputBoundary(const std::vector<const TrainingExample*>& examples) const override {
    return {TokensOf(examples), config_.hidden_size};
  }
  Tensor StageForward(int64_t micro, const std::vector<const TrainingExample*>& examples,
                      const Tensor& input, const StageGradient* gradient, LossSum& loss) override {
    if (gradient != nullptr) CheckNoRecompute(gradient->recompute);
    RecurrentGemmaStageLoss& stage = Stage([&] {
      return std::make_unique<RecurrentGemmaStageLoss>(config_, weights_, grads_, shard_,
                                                       parallel_);
    });
    GemmaStageLoss::GradientScale scale{};
    PackedBatch batch = PackExamples(examples);
    batch.objective = ObjectiveFor(examples);
    return stage.Forward(micro, std::move(batch), input, ScaleOf(gradient, scale), loss);
  }
  void SyncGradients() override {
    // The tied embedding's two halves of the gradient (lookups, head) between the end stages.
    if (embedding_group_ != nullptr) AllReduceSum(embedding_group_.get(), grads_.embed_tokens);
    if (tp_ == nullptr) return;
    // The attention's single key/value head is held by every rank, each feeding it only its
    // query heads' gradient.
    for (size_t l = 0; l < grads_.layers.size(); ++l) {
      if (config_.blocks[l] == TemporalBlock::kRecurrent) continue;
      if (!grads_.layers[l].k_proj.weight.defined()) continue;  // another stage's
      AllReduceSum(tp_, grads_.layers[l].k_proj.weight);
      AllReduceSum(tp_, grads_.layers[l].v_proj.weight);
    }
  }
  void WriteModel(Hdf5CheckpointWriter& writer,
                  const std::function<void(const std::string&, DType)>& wrote) override {
    writer.SetConfig(ToAttributes(config_));
    const DType matrices = weights_.embed_tokens.weight.dtype();
    ForEachRecurrentGemmaParameter(
        config_, weights_, [&](const RecurrentGemmaParameter& p, Tensor& slot) {
          const DType dtype = slot.defined()              ? slot.dtype()
                              : IsRecurrentGemmaMatrix(p) ? matrices
                                                          : DType::kF32;
          writer.Write(p.name,
                       parameters_.active()
                           ? parameters_.Whole(p.name, slot.defined() ? &slot : nullptr, dtype)
                           : slot);
          if (wrote) wrote(p.name, dtype);
        });
  }
  void SendModel() override {
    ForEachRecurrentGemmaParameter(config_, weights_,
                                   [&](const RecurrentGemmaParameter& p, Tensor& slot) {
                                     if (slot.defined()) parameters_.Send(p.name, slot);
                                   });
  }
  const ModelParallelParameters* model_parallel() const override {
    return parameters_.active() ? &parameters_ : nullptr;
  }
  ExactMatch HeldOutExactMatch(const Tokenizer&, const std::vector<TrainingExample>&,
                               int64_t) override {
    throw Error(
        "eval.exact_match: built on decoder-only Gemma's generation loop so far; "
        "RecurrentGemma reports the held-out loss");
  }
  TrainingMemory PlanMemory(const TrainingJob& job, int64_t max_length) const override {
    return PlanRecurrentGemmaTraining(config_, job, max_length);
  }
  std::vector<Rollout> Rollouts(const Tokenizer& tokenizer,
                                const std::vector<std::vector<int32_t>>& prompts,
                                const std::vector<uint64_t>& seeds,
                                const RolloutOptions& options) override {
    RefuseModelParallelRollouts(parameters_.active());
    // The inference model over the same weight tensors; it runs one sequence's chunk at a time
    // (the recurrence and the local attention's ring per sequence in the state).
    if (!engine_) engine_ = std::make_unique<RecurrentGemma>(config_, weights_);
    RolloutDecoder decoder;
    decoder.vocab_size = config_.vocab_size;
    decoder.max_context = kRecurrentMaxRow;
    decoder.start = [this](int64_t num_sequences, int64_t) {
      auto state = std::make_shared<RecurrentGemmaState>(engine_->NewState(num_sequences));
      return DecodeStep([this, state](std::span<const SequenceChunk> chunks) {
        Tensor out =
            Tensor::Empty({static_cast<int64_t>(chunks.size()), config_.vocab_size}, DType::kF32);
        for (size_t i = 0; i < chunks.size(); ++i) {
          const Tensor logits =
              engine_->Forward({chunks[i].sequence, chunks[i].tokens, {}}, *state, false);
          std::copy(logits.data<float>(), logits.data<float>() + config_.vocab_size,
                    out.data<float>() + static_cast<int64_t>(i) * config_.vocab_size);
        }
        return out;
      });
    };
    return GenerateRollouts(decoder, tokenizer, prompts, seeds, options);
  }

 private:
  static void CheckNoRecompute(bool recompute) {
    GEMMAPOD_CHECK(!recompute,
                   "recompute: built for decoder-only Gemma so far; remove it to "
                   "train RecurrentGemma");
  }
  // Model-group rank r is tensor-parallel rank r % tp of stage r / tp.
  RecurrentGemmaShard ShardOfModelRank(int rank) const {
    const int tp = groups_.model->size() / static_cast<int>(stages_.size());
    const auto stage = static_cast<size_t>(rank / tp);
    return MakeRecurrentGemmaShard(config_, tp, rank % tp, stages_[stage].first,
                                   stages_[stage].second, stage == 0, stage + 1 == stages_.size());
  }

  RecurrentGemmaConfig config_;
  RecurrentGemmaWeights weights_;
  RecurrentGemmaGrads grads_;
  std::unique_ptr<RecurrentGemma> engine_;  // GRPO's rollouts, over weights_'s tensors
  // Model parallelism (parameters_ inactive: the whole model on this rank).
  std::vector<std::pair<int64_t, int64_t>> stages_;
  ModelParallelism groups_;
  Communicator* tp_ = nullptr;
  RecurrentGemmaShard shard_;
  std::unique_ptr<Communicator> embedding_group_;  // the other end's rank of the tied embedding
  ModelParallelParameters parameters_;
  LossParallelism parallel_;
};

Seq2SeqBatch PackPairs(const std::vector<const TrainingExample*>& examples) {
  std::vector<std::vector<int32_t>> inputs, targets;
  std::vector<std::vector<uint8_t>> learn;
  for (const TrainingExample* e : examples) {
    GEMMAPOD_CHECK(!e->encoder_tokens.empty(), "train: example of line ", e->line,
                   " has no encoder input; an encoder-decoder model trains on {\"input\", "
                   "\"target\"} pairs");
    inputs.push_back(e->encoder_tokens);
    targets.push_back(e->tokens);
    learn.push_back(e->learn);
  }
  return PackSeq2Seq(inputs, targets, learn);
}

// Encoder-decoder T5Gemma, whole or as one rank's part of a model group: a shard of a
// tensor-parallel group (both stacks split as decoder-only Gemma's are, the cross-attention as
// the decoder's self-attention) of a pipeline stage (encoder stages before decoder stages,
// sharding/t5gemma_layout.h).
class T5GemmaTrainable final : public StagedTrainable<T5GemmaStageLoss> {
 public:
  T5GemmaTrainable(T5GemmaConfig config, T5GemmaWeights weights)
      : config_(std::move(config)), weights_(std::move(weights)), shard_(WholeT5Gemma(config_)) {}
  T5GemmaTrainable(T5GemmaConfig config, T5GemmaWeights weights, T5GemmaLayout layout,
                   const ModelParallelism& parallel, DType matrices)
      : config_(std::move(config)),
        weights_(std::move(weights)),
        layout_(std::move(layout)),
        shard_(T5GemmaShardOf(config_, layout_, parallel.model->rank())),
        tp_(parallel.tp != nullptr && parallel.tp->size() > 1 ? parallel.tp : nullptr),
        matrices_(matrices),
        parameters_(parallel.model, [this](int rank, const auto& fn) {
          T5GemmaWeights scratch;
          ForEachT5GemmaShardParameter(config_, T5GemmaShardOf(config_, layout_, rank), scratch,
                                       [&](const GemmaParameter& p, const ParameterSlice& slice,
                                           Tensor&) { fn(p.name, p.shape, slice); });
        }) {
    // The decoder's tied embedding: the lookup on the first decoder stage, the head on the last.
    embedding_group_ = TiedEmbeddingGroup(*parallel.model, parallel.stages,
                                          layout_.first_decoder_stage(), parallel.stage);
    parallel_.tp = tp_;
    const auto vocab = [](const ModelConfig& c, const GemmaShard& s) {
      return VocabSlice{c.vocab_size, s.vocab_begin, s.vocab_rows, s.vocab_valid};
    };
    if (shard_.has_encoder) parallel_.encoder_vocab = vocab(config_.encoder, shard_.encoder);
    if (shard_.has_decoder) parallel_.decoder_vocab = vocab(config_.decoder, shard_.decoder);
    if (tp_ == nullptr) return;
    // Ranks that share a key/value head of a stack sum its gradient among them (the decoder's
    // groups also hold the cross-attention's heads, split the same way).
    const int rank = tp_->rank();
    if (shard_.has_encoder && config_.encoder.num_kv_heads < tp_->size()) {
      encoder_kv_ = tp_->Split(static_cast<int>(shard_.encoder.kv_head_begin), rank);
    }
    if (shard_.has_decoder && config_.decoder.num_kv_heads < tp_->size()) {
      decoder_kv_ = tp_->Split(static_cast<int>(shard_.decoder.kv_head_begin), rank);
    }
  }

  std::string family() const override { return "t5gemma"; }
  bool seq2seq() const override { return true; }
  int64_t vocab_size() const override { return config_.decoder.vocab_size; }
  int64_t max_context() const override {
    return std::min(config_.encoder.max_position_embeddings,
                    config_.decoder.max_position_embeddings);
  }
  void AttachLora(const LoraOptions&, uint64_t) override {
    throw Error(
        "lora: adapters are built for decoder-only Gemma so far; train T5Gemma in full "
        "(remove lora:)");
  }
  void RegisterParameters(AdamW& optimizer) override {
    grads_ = T5GemmaGrads::ZerosFor(config_, weights_);
    AddT5GemmaParameters(optimizer, config_, weights_, grads_, &shard_);
    // Parameters held by several ranks (norms, shared key/value heads, the decoder's tied
    // embedding on the last stage) count once.
    if (parameters_.active()) parameters_.CountEachElementOnce(optimizer);
  }
  // Encoder stages pass the encoder's rows; decoder stages the decoder's rows with the encoder's
  // output after them (the first decoder stage receives the encoder's output alone).
  Shape InputBoundary(const std::vector<const TrainingExample*>& examples) const override {
    const int64_t memory = EncoderTokensOf(examples) * config_.encoder.hidden_size;
    if (shard_.has_encoder || shard_.decoder.has_embedding) {
      return {EncoderTokensOf(examples), config_.encoder.hidden_size};
    }
    return {TokensOf(examples) * config_.decoder.hidden_size + memory};
  }
  Shape OutputBoundary(const std::vector<const TrainingExample*>& examples) const override {
    if (!shard_.has_decoder) return {EncoderTokensOf(examples), config_.encoder.hidden_size};
    return {TokensOf(examples) * config_.decoder.hidden_size +
            EncoderTokensOf(examples) * config_.encoder.hidden_size};
  }
  Tensor StageForward(int64_t micro, const std::vector<const TrainingExample*>& examples,
                      const Tensor& input, const StageGradient* gradient, LossSum& loss) override {
    if (gradient != nullptr) CheckNoRecompute(gradient->recompute);
    T5GemmaStageLoss& stage = Stage([&] {
      return std::make_unique<T5GemmaStageLoss>(config_, weights_, grads_, shard_, parallel_);
    });
    GemmaStageLoss::GradientScale scale{};
    Seq2SeqBatch batch = PackPairs(examples);
    batch.decoder.objective = ObjectiveFor(examples);
    return stage.Forward(micro, std::move(batch), input, ScaleOf(gradient, scale), loss);
  }
  void SyncGradients() override {
    if (embedding_group_ != nullptr) {
      AllReduceSum(embedding_group_.get(), grads_.decoder.embed_tokens);
    }
    if (tp_ == nullptr) return;
    const auto sync_stack = [&](GemmaGrads& stack, Communicator* kv) {
      for (GemmaLayerGrads& layer : stack.layers) {
        if (!layer.attn_norm.defined()) continue;  // another stage's
        for (Tensor* norm : {&layer.attention.q_norm, &layer.attention.k_norm}) {
          if (norm->defined()) AllReduceSum(tp_, *norm);
        }
        if (kv != nullptr) {
          AllReduceSum(kv, layer.attention.k_proj.weight);
          AllReduceSum(kv, layer.attention.v_proj.weight);
        }
      }
    };
    sync_stack(grads_.encoder, encoder_kv_.get());
    sync_stack(grads_.decoder, decoder_kv_.get());
    if (decoder_kv_) {
      for (CrossAttentionGrads& cross : grads_.cross) {
        if (!cross.k_proj.weight.defined()) continue;  // another stage's
        AllReduceSum(decoder_kv_.get(), cross.k_proj.weight);
        AllReduceSum(decoder_kv_.get(), cross.v_proj.weight);
      }
    }
  }
  void WriteModel(Hdf5CheckpointWriter& writer,
                  const std::function<void(const std::string&, DType)>& wrote) override {
    writer.SetConfig(ToAttributes(config_));
    // Every parameter of the model: a rank's own part, the others' gathered.
    ForEachT5GemmaShardParameter(
        config_, WholeT5Gemma(config_), weights_,
        [&](const GemmaParameter& p, const ParameterSlice&, Tensor& slot) {
          const DType dtype = slot.defined() ? slot.dtype() : p.is_norm ? DType::kF32 : matrices_;
          writer.Write(p.name,
                       parameters_.active()
                           ? parameters_.Whole(p.name, slot.defined() ? &slot : nullptr, dtype)
                           : slot);
          if (wrote) wrote(p.name, dtype);
        });
  }
  void SendModel() override {
    ForEachT5GemmaShardParameter(config_, shard_, weights_,
                                 [&](const GemmaParameter& p, const ParameterSlice&, Tensor& slot) {
                                   parameters_.Send(p.name, slot);
                                 });
  }
  const ModelParallelParameters* model_parallel() const override {
    return parameters_.active() ? &parameters_ : nullptr;
  }
  ExactMatch HeldOutExactMatch(const Tokenizer&, const std::vector<TrainingExample>&,
                               int64_t) override {
    throw Error(
        "eval.exact_match: built on decoder-only Gemma's generation loop so far; T5Gemma "
        "reports the held-out loss");
  }
  TrainingMemory PlanMemory(const TrainingJob& job, int64_t max_length) const override {
    return PlanT5GemmaTraining(config_, job, max_length);
  }

 private:
  static void CheckNoRecompute(bool recompute) {
    GEMMAPOD_CHECK(!recompute,
                   "recompute: built for decoder-only Gemma so far; remove it to "
                   "train T5Gemma");
  }

  T5GemmaConfig config_;
  T5GemmaWeights weights_;
  T5GemmaGrads grads_;
  // Model parallelism (parameters_ inactive: the whole model on this rank).
  T5GemmaLayout layout_;
  T5GemmaShard shard_;
  Communicator* tp_ = nullptr;
  DType matrices_ = DType::kF32;  // the dtype the matrices train in
  std::unique_ptr<Communicator> encoder_kv_, decoder_kv_;
  std::unique_ptr<Communicator> embedding_group_;  // the other end's rank of the tied embedding
  ModelParallelParameters parameters_;
  T5GemmaParallelism parallel_;
};

std::string ArchitectureOf(const Attributes& a) {
  const auto it = a.find("architecture");
  const auto* s = it == a.end() ? nullptr : std::get_if<std::string>(&it->second);
  return s != nullptr ? *s : "";
}

}  // namespace

std::unique_ptr<TrainableModel> LoadTrainableModel(const Hdf5CheckpointReader& reader, DType dtype,
                                                   const ModelParallelism& parallel) {
  const std::string& path = reader.origin();
  Communicator* const tp = parallel.tp;
  const std::string architecture = ArchitectureOf(reader.config());
  if (parallel.active() && IsT5GemmaAttributes(reader.config())) {
    T5GemmaConfig config = T5GemmaFromAttributes(reader.config(), path);
    GEMMAPOD_CHECK(config.decoder.quantization == WeightQuantization::kNone, path,
                   ": int8 weights do not train; start from the bf16 or f32 checkpoint");
    const int tp_size = tp != nullptr ? tp->size() : 1;
    for (const auto& [stack, c] :
         {std::pair<const char*, const ModelConfig*>{"encoder", &config.encoder},
          {"decoder", &config.decoder}}) {
      if (const auto problem = TensorParallelProblem(*c, tp_size)) {
        throw Error(StrCat(path, ": parallel.tp ", tp_size, ": the ", stack, ": ", *problem));
      }
    }
    // Encoder stages before decoder stages, the encoder's share by its parameters.
    const int encoder_stages = AutoEncoderStages(config, parallel.stages);
    T5GemmaLayout layout;
    try {
      layout = MakeT5GemmaLayout(config, tp_size, encoder_stages, tp_size,
                                 encoder_stages == 0 ? 1 : parallel.stages - encoder_stages);
    } catch (const Error& e) {
      throw Error(StrCat(path, ": parallel.pp ", parallel.stages, ": ", e.what()));
    }
    const T5GemmaShard shard = T5GemmaShardOf(config, layout, parallel.model->rank());
    T5GemmaWeights weights = LoadT5GemmaShard(config, shard, reader, tp_size > 1 ? tp : nullptr);
    ForEachT5GemmaShardParameter(config, shard, weights,
                                 [&](const GemmaParameter& p, const ParameterSlice&, Tensor& slot) {
                                   if (!p.is_norm && slot.dtype() != dtype) slot = slot.To(dtype);
                                 });
    return std::make_unique<T5GemmaTrainable>(std::move(config), std::move(weights),
                                              std::move(layout), parallel, dtype);
  }
  if (parallel.active() && architecture == "recurrent_gemma") {
    RecurrentGemmaConfig config = RecurrentGemmaFromAttributes(reader.config(), path);
    const int tp_size = tp != nullptr ? tp->size() : 1;
    if (const auto problem = RecurrentTensorParallelProblem(config, tp_size)) {
      throw Error(StrCat(path, ": parallel.tp ", tp_size, ": ", *problem));
    }
    GEMMAPOD_CHECK(parallel.stages <= config.num_layers, path, ": parallel.pp ", parallel.stages,
                   ": more pipeline stages than the model's ", config.num_layers, " layers");
    std::vector<std::pair<int64_t, int64_t>> stages =
        RecurrentStageLayers(config.num_layers, parallel.stages);
    const auto [first, end] = stages[static_cast<size_t>(parallel.stage)];
    const RecurrentGemmaShard shard =
        MakeRecurrentGemmaShard(config, tp_size, tp != nullptr ? tp->rank() : 0, first, end,
                                parallel.stage == 0, parallel.stage + 1 == parallel.stages);
    RecurrentGemmaWeights weights = LoadRecurrentGemmaShard(config, shard, reader);
    ForEachRecurrentGemmaParameter(
        config, weights, [&](const RecurrentGemmaParameter& p, Tensor& slot) {
          if (slot.defined() && IsRecurrentGemmaMatrix(p) && slot.dtype() != dtype) {
            slot = slot.To(dtype);
          }
        });
    return std::make_unique<RecurrentGemmaTrainable>(std::move(config), std::move(weights),
                                                     std::move(stages), parallel);
  }
  if (parallel.active()) {
    ModelConfig config = FromAttributes(reader.config(), path);
    GEMMAPOD_CHECK(config.quantization == WeightQuantization::kNone, path,
                   ": int8 weights do not train; start from the bf16 or f32 checkpoint");
    const int tp_size = tp != nullptr ? tp->size() : 1;
    if (const auto problem = TensorParallelProblem(config, tp_size)) {
      throw Error(StrCat(path, ": parallel.tp ", tp_size, ": ", *problem));
    }
    GEMMAPOD_CHECK(parallel.stages <= config.num_layers, path, ": parallel.pp ", parallel.stages,
                   ": more pipeline stages than the model's ", config.num_layers, " layers");
    // Stages balanced by the work of a step (the head counts on the last).
    std::vector<LayerRange> stages = GemmaTrainingStageLayers(config, parallel.stages);
    const LayerRange mine = stages[static_cast<size_t>(parallel.stage)];
    const GemmaShard shard =
        MakeGemmaShard(config, tp_size, tp != nullptr ? tp->rank() : 0, mine.first, mine.end,
                       parallel.stage == 0, parallel.stage + 1 == parallel.stages);
    GemmaWeights weights = LoadGemmaShard(config, shard, reader, tp_size > 1 ? tp : nullptr);
    ForEachShardParameter(config, shard, weights,
                          [&](const GemmaParameter& p, const ParameterSlice&, Tensor& slot) {
                            if (!p.is_norm && slot.dtype() != dtype) slot = slot.To(dtype);
                          });
    return std::make_unique<GemmaTrainable>(std::move(config), std::move(weights),
                                            std::move(stages), parallel);
  }
  if (architecture == "recurrent_gemma") {
    RecurrentGemmaConfig config = RecurrentGemmaFromAttributes(reader.config(), path);
    RecurrentGemmaWeights weights = LoadRecurrentGemmaWeights(config, reader);
    ForEachRecurrentGemmaParameter(config, weights,
                                   [&](const RecurrentGemmaParameter& p, Tensor& slot) {
                                     if (IsRecurrentGemmaMatrix(p) && slot.dtype() != dtype) {
                                       slot = slot.To(dtype);
                                     }
                                   });
    return std::make_unique<RecurrentGemmaTrainable>(std::move(config), std::move(weights));
  }
  if (IsT5GemmaAttributes(reader.config())) {
    T5GemmaConfig config = T5GemmaFromAttributes(reader.config(), path);
    GEMMAPOD_CHECK(config.decoder.quantization == WeightQuantization::kNone, path,
                   ": int8 weights do not train; start from the bf16 or f32 checkpoint");
    T5GemmaWeights weights = LoadT5GemmaShard(config, WholeT5Gemma(config), reader);
    ForEachT5GemmaShardParameter(config, WholeT5Gemma(config), weights,
                                 [&](const GemmaParameter& p, const ParameterSlice&, Tensor& slot) {
                                   if (!p.is_norm && slot.dtype() != dtype) slot = slot.To(dtype);
                                 });
    return std::make_unique<T5GemmaTrainable>(std::move(config), std::move(weights));
  }
  ModelConfig config = FromAttributes(reader.config(), path);
  GEMMAPOD_CHECK(config.quantization == WeightQuantization::kNone, path,
                 ": int8 weights do not train; start from the bf16 or f32 checkpoint");
  GemmaWeights weights = LoadGemmaWeights(config, reader);
  ForEachGemmaParameter(config, weights, [&](const GemmaParameter& p, Tensor& slot) {
    if (!p.is_norm && slot.dtype() != dtype) slot = slot.To(dtype);
  });
  return std::make_unique<GemmaTrainable>(std::move(config), std::move(weights));
}

}  // namespace gemmapod

namespace gemmapod {

TrainingPlan PlanTraining(const Hdf5CheckpointReader& reader, const TrainingJob& job) {
  const std::string& path = reader.origin();
  TrainingPlan plan;
  if (ArchitectureOf(reader.config()) == "recurrent_gemma") {
    const RecurrentGemmaConfig c = RecurrentGemmaFromAttributes(reader.config(), path);
    plan.family = "recurrent_gemma";
    plan.name = c.name;
    plan.max_context = kRecurrentMaxRow;
    plan.max_length = job.data.max_length > 0 ? job.data.max_length : 8192;
    plan.memory = PlanRecurrentGemmaTraining(c, job, plan.max_length);
    return plan;
  }
  if (IsT5GemmaAttributes(reader.config())) {
    const T5GemmaConfig c = T5GemmaFromAttributes(reader.config(), path);
    plan.family = "t5gemma";
    plan.name = c.name;
    plan.max_context =
        std::min(c.encoder.max_position_embeddings, c.decoder.max_position_embeddings);
    plan.max_length = job.data.max_length > 0 ? job.data.max_length : plan.max_context;
    plan.memory = PlanT5GemmaTraining(c, job, plan.max_length);
    return plan;
  }
  const ModelConfig c = FromAttributes(reader.config(), path);
  plan.family = "gemma";
  plan.name = c.name;
  plan.max_context = c.max_position_embeddings;
  plan.max_length = job.data.max_length > 0 ? job.data.max_length : c.max_position_embeddings;
  plan.memory = PlanTrainingMemory(c, job, plan.max_length);
  return plan;
}

std::vector<PipelineStageShare> PipelineStageShares(const Hdf5CheckpointReader& reader,
                                                    const TrainingJob& job, int64_t micro_batches) {
  const int pp = static_cast<int>(job.pipeline_parallel);
  if (pp == 1) return {PipelineStageShare{}};
  const std::string& path = reader.origin();
  // Per stage: its parameters' elements (tp 1) and its layers.
  std::vector<int64_t> elements(static_cast<size_t>(pp), 0), layers(static_cast<size_t>(pp), 0);
  int64_t total_layers = 0;
  const auto count = [&](int s, const Shape& shape) {
    elements[static_cast<size_t>(s)] += NumElements(shape);
  };
  if (ArchitectureOf(reader.config()) == "recurrent_gemma") {
    const RecurrentGemmaConfig c = RecurrentGemmaFromAttributes(reader.config(), path);
    GEMMAPOD_CHECK(pp <= c.num_layers, path, ": parallel.pp ", pp,
                   ": more pipeline stages than the model's ", c.num_layers, " layers");
    const auto stages = RecurrentStageLayers(c.num_layers, pp);
    for (int s = 0; s < pp; ++s) {
      const auto [first, end] = stages[static_cast<size_t>(s)];
      const RecurrentGemmaShard shard =
          MakeRecurrentGemmaShard(c, 1, 0, first, end, s == 0, s == pp - 1);
      for (const RecurrentGemmaParameter& p : RecurrentGemmaParameters(c)) {
        if (RecurrentGemmaSliceOf(c, shard, p.name)) count(s, p.shape);
      }
      layers[static_cast<size_t>(s)] = end - first;
    }
    total_layers = c.num_layers;
  } else if (IsT5GemmaAttributes(reader.config())) {
    const T5GemmaConfig c = T5GemmaFromAttributes(reader.config(), path);
    const int encoder_stages = AutoEncoderStages(c, pp);
    const T5GemmaLayout layout = MakeT5GemmaLayout(c, 1, encoder_stages, 1, pp - encoder_stages);
    for (int s = 0; s < pp; ++s) {
      T5GemmaWeights scratch;
      const T5GemmaShard shard = T5GemmaShardOf(c, layout, s);
      ForEachT5GemmaShardParameter(
          c, shard, scratch,
          [&](const GemmaParameter& p, const ParameterSlice&, Tensor&) { count(s, p.shape); });
      const T5GemmaStagePlan& plan = layout.stages[static_cast<size_t>(s)];
      layers[static_cast<size_t>(s)] =
          (plan.encoder ? plan.encoder_layers.end - plan.encoder_layers.first : 0) +
          (plan.decoder ? plan.decoder_layers.end - plan.decoder_layers.first : 0);
    }
    total_layers = c.encoder.num_layers + c.decoder.num_layers;
  } else {
    const ModelConfig c = FromAttributes(reader.config(), path);
    GEMMAPOD_CHECK(pp <= c.num_layers, path, ": parallel.pp ", pp,
                   ": more pipeline stages than the model's ", c.num_layers, " layers");
    const std::vector<LayerRange> stages = GemmaTrainingStageLayers(c, pp);
    for (int s = 0; s < pp; ++s) {
      const LayerRange r = stages[static_cast<size_t>(s)];
      GemmaWeights scratch;
      ForEachShardParameter(
          c, MakeGemmaShard(c, 1, 0, r.first, r.end, s == 0, s == pp - 1), scratch,
          [&](const GemmaParameter& p, const ParameterSlice&, Tensor&) { count(s, p.shape); });
      layers[static_cast<size_t>(s)] = r.end - r.first;
    }
    total_layers = c.num_layers;
  }
  int64_t total = 0;
  for (int s = 0; s < pp; ++s) total += elements[static_cast<size_t>(s)];
  // The model's own count: the tied embedding held by both ends counts once there.
  const int64_t model = PlanTraining(reader, job).memory.trainable_parameters;
  std::vector<PipelineStageShare> shares;
  for (int s = 0; s < pp; ++s) {
    PipelineStageShare share;
    share.parameters = static_cast<double>(elements[static_cast<size_t>(s)]) /
                       static_cast<double>(model > 0 ? model : total);
    share.layers =
        static_cast<double>(layers[static_cast<size_t>(s)]) / static_cast<double>(total_layers);
    share.in_flight = PeakInFlight(StageInstructions(job.pipeline_schedule, pp, s, micro_batches));
    share.head = s == pp - 1;
    shares.push_back(share);
  }
  return shares;
}

}  // namespace gemmapod
