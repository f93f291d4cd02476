// T5Gemma over the ranks of a job: encoder stages before decoder stages (Megatron's "split rank"
// scheme), each stage a tensor-parallel group of its own size, so the encoder and the decoder may
// use different tp (an unbalanced pair's wide encoder over more ranks than its small decoder).
// The last encoder stage sends its output once per request to every rank of every decoder stage,
// which project their cross-attention keys and values from it; decode steps then run on the
// decoder stages alone, through the pipeline engine (serving/engine/): micro-batches of
// sequences in flight across the decoder stages, a lone sequence prefilled in pieces, tokens
// sampled on the vocabulary shards.
//
//   ranks:  [ encoder stage 0 | encoder stage 1 | ... | decoder stage 0 | decoder stage 1 | ... ]
//           each stage: tp consecutive ranks (its tensor-parallel group)
//
// With one stage (no split), every rank holds both stacks at the same tp.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "models/t5gemma.h"
#include "serving/engine/pipeline_engine.h"
#include "serving/generator.h"
#include "sharding/stage_plan.h"

namespace gemmapod {

class Communicator;
struct PodTopology;

struct T5GemmaStagePlan {
  bool encoder = false;  // runs encoder layers
  bool decoder = false;  // runs decoder layers (both: the one-stage layout)
  LayerRange encoder_layers;
  LayerRange decoder_layers;
  int tp = 1;
  int first_rank = 0;  // its ranks: [first_rank, first_rank + tp)
};

struct T5GemmaLayout {
  std::vector<T5GemmaStagePlan> stages;

  int world_size() const;
  int StageOf(int rank) const;  // throws for a rank outside the layout
  int first_decoder_stage() const;
  std::string Describe() const;  // "encoder tp 2 x 1 stage | decoder tp 1 x 2 stages"
};

// `encoder_stages` stages of `encoder_tp` ranks, then `decoder_stages` of `decoder_tp`, each
// part's layers split as evenly as they go. encoder_stages 0: one stage of decoder_tp ranks
// holding both stacks (encoder_tp must then equal decoder_tp). Errors name the problem (a tp that
// does not divide the heads, more stages than layers).
T5GemmaLayout MakeT5GemmaLayout(const T5GemmaConfig& config, int encoder_tp, int encoder_stages,
                                int decoder_tp, int decoder_stages);
// The pod file's layout of one data-parallel replica: parallelism.tp for the decoder,
// parallelism.encoder_tp (default tp) for the encoder, pipeline.encoder_stages (auto) or the
// explicit stages' parts and layer ranges. The pod has dp such replicas (its parser allows dp > 1
// only where encoder_tp equals tp, so a replica is a tp x pp block of the process grid).
T5GemmaLayout T5GemmaLayoutFromPod(const PodTopology& pod, const T5GemmaConfig& config);
// The replica `world_rank` belongs to, and its rank inside it: the process grid's convention
// (tp innermost, then dp, then pp), so stage s of every replica sits on the same node.
struct T5GemmaReplicaRank {
  int replica = 0;
  int rank = 0;
};
T5GemmaReplicaRank T5GemmaReplicaOf(const PodTopology* pod, int world_rank);

// The shard rank `rank` holds.
T5GemmaShard T5GemmaShardOf(const T5GemmaConfig& config, const T5GemmaLayout& layout, int rank);

class T5GemmaDecoderStage;

class T5GemmaPipeline {
 public:
  // Collective over `world` (exactly the layout's ranks): forms the stage groups and loads this
  // rank's shard from `source` (checksums checked within each stage group). The decoder ranks'
  // state holds `max_sequences` sequences of up to `max_context` decoder tokens.
  T5GemmaPipeline(Communicator& world, T5GemmaLayout layout, const T5GemmaConfig& config,
                  const TensorSource& source, int64_t max_sequences, int64_t max_context,
                  const PipelineOptions& options = {});
  ~T5GemmaPipeline();

  const T5GemmaLayout& layout() const { return layout_; }
  const T5Gemma& model() const { return *model_; }
  void set_matmul_precision(cpu::MatmulPrecision p) { model_->set_matmul_precision(p); }
  int stage() const { return stage_; }
  // The world rank that drives decoding (the first rank of the first decoder stage): Generate's
  // results are there.
  int driver_rank() const;

  // Collective over the world: runs the encoder over `prompts` (padding tokens masked, at most
  // max_sequences) and leaves sequence b of every decoder rank's state holding its
  // cross-attention keys and values, its decoder cache empty.
  void Encode(const std::vector<std::vector<int32_t>>& prompts);
  // Collective over the world: decodes `chunks` (sequences of the state, new tokens at the
  // positions their caches reached) and returns the logits on every rank: every token's
  // [tokens, vocab], or each chunk's last [chunks, vocab].
  Tensor Decode(std::span<const SequenceChunk> chunks, bool all_logits);
  // Collective over the world, after Encode: request b decodes sequence b (its prompt, the
  // decoder's start, is usually BOS) through the engine's generation loop. The driver returns the
  // results and streams text through on_text; every other rank returns none.
  std::vector<GenerationResult> Generate(
      const Tokenizer& tokenizer, std::span<const GenerationRequest> requests,
      const std::function<void(size_t, std::string_view)>& on_text);

 private:
  void SendToStage(const Tensor& t, int stage, int tag) const;

  Communicator& world_;
  T5GemmaLayout layout_;
  int stage_ = 0;
  std::unique_ptr<Communicator> tp_;
  std::unique_ptr<T5Gemma> model_;
  // Decoder ranks only: rank j of every decoder stage, and the engine over them, whose stage
  // model (decoder_) holds the decode state.
  std::unique_ptr<Communicator> decoder_pp_;
  std::unique_ptr<PipelineEngine> engine_;
  T5GemmaDecoderStage* decoder_ = nullptr;
};

}  // namespace gemmapod
