// PipelineEngine: a model running over one data-parallel replica of a process grid, its layers
// cut into pipeline stages and each stage's matrices split over a tensor-parallel group. The
// engine knows no family: each rank's part is a StageModel (stage_model.h), and Gemma and
// RecurrentGemma run through the same code.
//
// The first stage drives. It submits micro-batches: each names its sequences, their new tokens
// and what the last stage should return (the logits of every token, of each sequence's last
// token, a sampled next token, or nothing). The first stage embeds the tokens, runs its layers
// and sends the activations on; every later stage receives, runs its layers and sends on; the
// last stage computes its vocabulary shard of the logits and returns what was asked for to the
// first stage. Submissions do not wait for results, so while the last stage finishes micro-batch
// i the first stage is already computing micro-batch i + 1: with as many micro-batches in flight
// as stages, every stage is busy. Results come back in submission order.
//
// Stages other than the first call Serve(), which returns when the driver calls Finish(). Within
// a stage every tensor-parallel rank makes the same calls; rank j of a stage talks to rank j of
// the next. Activations go forwards with blocking sends; results go backwards with non-blocking
// ones, so no cycle of waiting ranks can form.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "serving/engine/chunk_wire.h"
#include "serving/engine/stage_model.h"
#include "serving/shard_sampler.h"

namespace gemmapod {

class Communicator;
class PendingTransfer;
class ProcessGrid;

enum class StageOutput : int32_t {
  kNone = 1,        // fill the cache only (the first pieces of a long prompt)
  kAllLogits = 2,   // f32 [tokens, vocab]
  kLastLogits = 3,  // f32 [chunks, vocab]: each chunk's last token
  kSample = 4,      // i32 [chunks]: a token drawn from each chunk's last logits
};

// What the engine needs beyond the model. The state's size (slots, context) is the StageModel's.
struct PipelineOptions {
  int64_t sampled_vocab = 0;  // ids kSample may draw (the tokenizer's); 0: the whole vocabulary
};

// How a lone prompt of `tokens` tokens is cut into micro-batches so that several stages work on
// it at once (chunked prefill): [begin, end) per piece, in order. k pieces through s stages take
// (k + s - 1) / k of the time of one piece per stage, so more pieces fill the pipeline better; but
// a piece under kMinPromptPiece tokens makes the matrix products slower than the overlap gains,
// so a short prompt goes whole, and no prompt goes in more than 4 pieces per stage. One piece with
// a single stage.
inline constexpr int64_t kMinPromptPiece = 64;
std::vector<std::pair<int64_t, int64_t>> PromptPieces(int64_t tokens, int stages);

// The rows of each chunk's last token, from h [tokens, d] whose rows are the chunks' tokens in
// order: [chunks, d].
Tensor LastTokenRows(const Tensor& h, std::span<const SequenceChunk> chunks);

// One chunk's sampled token (-1 where the chunk asked for none), with log-probabilities under
// the model where asked (ShardLogProbs).
struct SampledToken {
  int32_t id = -1;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // best first
};

class PipelineEngine {
 public:
  // Collective over the grid's replica. `model` is this rank's part of the model, made for this
  // rank's place in the grid (its tp coordinates and stage).
  PipelineEngine(const ProcessGrid& grid, std::unique_ptr<StageModel> model,
                 const PipelineOptions& options);
  // The same over groups formed by the caller: `tp` is this stage's tensor-parallel group, `pp`
  // holds rank j of every stage in stage order (rank `stage_index` of `pp` is this one).
  PipelineEngine(Communicator& tp, Communicator& pp, std::unique_ptr<StageModel> model,
                 const PipelineOptions& options);
  ~PipelineEngine();

  const StageModel& model() const { return *model_; }
  int64_t vocab_size() const { return model_->vocab_size(); }
  int stages() const { return stages_; }
  bool is_driver() const { return stage_index_ == 0; }
  int64_t max_context() const { return model_->max_context(); }
  int64_t max_sequences() const { return model_->max_sequences(); }

  // --- The first stage ---
  // Tokens of `sequence` the pipeline holds (the position of its next token).
  int64_t length(int64_t sequence) const { return model_->length(sequence); }
  // Forgets a sequence: its next submission starts at position 0, on every stage.
  void Reset(int64_t sequence);
  // `sampling[i]` (checked when given) applies to chunk i's sequence from the first sampled
  // chunk after the sequence started (position 0) until it starts again; may be empty (greedy).
  void Submit(StageOutput output, std::span<const SequenceChunk> chunks,
              std::span<const SamplingParams> sampling = {});
  // The same with each chunk's settings in full. With kSample, a chunk whose `sample` is false (a
  // piece of a prompt whose rest comes later, batched with other sequences' decode steps) gets
  // no token (-1) and draws nothing from its sequence's random stream; `top_logprobs` >= 0 asks
  // for the token's log-probability and that many of the most likely ids'.
  void Submit(StageOutput output, std::span<const WireChunk> chunks);
  // The oldest result not yet taken; its kind must be the one submitted.
  Tensor TakeLogits();
  std::vector<int32_t> TakeTokens();
  std::vector<SampledToken> TakeSamples();  // with log-probabilities where asked
  // Tells the other stages that no more work comes; they return from Serve().
  void Finish();

  // --- Every other stage ---
  void Serve();

  // PromptPieces (below) for this engine's stages.
  std::vector<std::pair<int64_t, int64_t>> PromptPieces(int64_t tokens) const;

  // Collective over the replica: the logits of `batch` ([tokens or chunks, vocab], as `rows`),
  // cut into micro-batches (by sequence, or a lone long prompt into pieces) so that every stage
  // works at once. The first stage returns the logits; the others serve and return an empty
  // tensor (their `batch` is not looked at).
  Tensor Forward(std::span<const SequenceChunk> batch, bool all_tokens);

 private:
  using Chunk = WireChunk;
  struct Expected {
    StageOutput output;
    int64_t rows;
    int64_t width;  // kSample: words per row
  };

  // Brings a chunk's sequence to where the chunk starts: reset when it begins, its KV blocks
  // assigned, placed on a cached prefix.
  void Prepare(const Chunk& c);
  // Runs this stage's layers over a micro-batch, then passes it on or finishes it.
  void Process(StageOutput output, std::vector<Chunk>& chunks, Tensor h);
  // The last stage: what `output` asks for, from the final activations.
  Tensor Finalise(StageOutput output, const std::vector<Chunk>& chunks, const Tensor& h);
  void Deliver(Tensor result);

  std::unique_ptr<StageModel> model_;
  Communicator& tp_;
  Communicator& pp_;
  int stages_;
  int stage_index_;
  int64_t sampled_vocab_;

  // The last stage's sampling state per sequence: its sampler and the tokens it has seen.
  struct SequenceSampling {
    std::unique_ptr<ShardSampler> sampler;
    std::vector<int32_t> context;
  };
  std::map<int64_t, SequenceSampling> sampling_;

  std::deque<Expected> expected_;     // the driver's submissions awaiting results
  std::deque<Tensor> local_results_;  // one-stage pipelines deliver here
  std::deque<std::unique_ptr<PendingTransfer>> pending_;  // the last stage's unfinished sends
};

}  // namespace gemmapod
