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
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "models/t5gemma/t5gemma.h"
#include "serving/engine/pipeline_engine.h"
#include "serving/generator.h"
#include "sharding/t5gemma_layout.h"

namespace gemmapod {

class Communicator;

class PendingTransfer;
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
  // max_sequences) and leaves sequence b (or sequences[b] when given) of every decoder rank's
  // state holding its cross-attention keys and values, its decoder cache empty.
  void Encode(const std::vector<std::vector<int32_t>>& prompts,
              std::span<const int64_t> sequences = {});
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

  // --- Serving: requests arrive one at a time, each sequence encoded when it starts.
  // Call on every rank before serving. A chunk that starts a sequence then carries its encoder
  // input; the decoder ranks encode it (the driver first sends it to the encoder's ranks when
  // they are others), and the driver's Finish stops the encoder's ranks.
  void EnableServing() { serving_ = true; }
  // This rank's engine: decoder ranks; null on an encoder-only rank.
  PipelineEngine* engine() { return engine_.get(); }
  // This rank's stage's tensor-parallel group.
  Communicator& stage_tp() { return *tp_; }
  // An encoder-only rank: encodes each sequence the driver sends until the driver finishes.
  void ServeEncoder();

 private:
  void SendToStage(const Tensor& t, int stage, int tag) const;
  friend class T5GemmaDecoderStage;
  // A decoder rank: sequence `sequence` starts with encoder input `tokens`.
  void BeginSequence(int64_t sequence, std::span<const int32_t> tokens);
  // The driver tells the encoder-only ranks to stop serving.
  void FinishEncoders();
  bool has_encoder_ranks() const;
  bool serving_ = false;
  // The last encoder stage's leader: its output on its way to the decoder ranks.
  std::deque<std::unique_ptr<PendingTransfer>> memory_sends_;

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
