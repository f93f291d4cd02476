// One rank's part of a model, with the decode state of its sequences, as the pipeline engine
// (serving/engine/pipeline_engine.h) drives it. A family adapts its stage to this interface once
// (gemma_stage_model.h, recurrent_stage_model.h); micro-batches in flight, chunked prefill,
// data-parallel replicas, sampling on the vocabulary shards and the generation loop then come
// with the engine, for every family alike.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "models/layers/kv_cache.h"
#include "models/sequence_chunk.h"
#include "runtime/error.h"
#include "runtime/tensor.h"

namespace gemmapod {

class StageModel {
 public:
  virtual ~StageModel() = default;

  virtual int64_t hidden_size() const = 0;  // width of the activations passed between stages
  virtual int64_t vocab_size() const = 0;
  virtual int64_t max_sequences() const = 0;  // state slots
  // Tokens one sequence may hold (its positions); families without a limit answer INT64_MAX.
  virtual int64_t max_context() const = 0;

  // Tokens `sequence` holds: the position of its next token.
  virtual int64_t length(int64_t sequence) const = 0;
  // Forgets a sequence: its next chunk starts at position 0.
  virtual void Reset(int64_t sequence) = 0;

  // The model's KV cache as a shared pool of blocks that the scheduler assigns (kv_cache.h); a
  // block_tokens of 0 when the model keeps fixed slots (or has no KV cache: RecurrentGemma's
  // state is a fixed slot per sequence).
  virtual KvPool kv_pool() const { return KvPool{0, {0, 0}, 0}; }
  // A shared pool's table entries of `sequence` (KvCache::Assign), and a sequence that starts on
  // a cached prefix of `length` positions (KvCache::Place).
  virtual void AssignKv(int64_t /*sequence*/, KvGroup /*group*/, int64_t /*first*/,
                        std::span<const int32_t> /*blocks*/) {
    throw Error("pipeline: this model keeps fixed state slots; it has no KV blocks to assign");
  }
  virtual void PlaceKv(int64_t /*sequence*/, int64_t /*length*/) {
    throw Error("pipeline: this model keeps fixed state slots; it cannot start on a cached prefix");
  }
  // An encoder-decoder model's sequence starts (after Reset): its encoder input is encoded and
  // the decoder state of `sequence` attends to it from now on (collective over the stage's tp
  // group, and over the encoder's ranks where they are others).
  virtual void BeginSequence(int64_t /*sequence*/, std::span<const int32_t> /*encoder_tokens*/) {
    throw Error("pipeline: this model has no encoder; a chunk brought encoder input");
  }
  // The driver finishes: ranks outside the pipeline that serve it (an encoder's) stop too.
  virtual void Finish() {}

  // Checks a micro-batch against the state without changing it: no empty chunk, no sequence
  // twice, slots and ids in range, room in the context. The driver calls it before any stage has
  // seen the micro-batch, so bad input fails there and leaves no stage half-way.
  virtual void Check(std::span<const SequenceChunk> chunks) const = 0;
  // First stage: the chunks' tokens embedded, f32 [tokens, hidden_size] (collective over tp).
  virtual Tensor Embed(std::span<const int32_t> tokens) const = 0;
  // Runs this stage's layers over h in place (rows: the chunks' tokens in order) and records the
  // chunks in the state (collective over tp).
  virtual void Forward(Tensor& h, std::span<const SequenceChunk> chunks) = 0;

  // Last stage: this rank's columns of the logits of `rows` [n, hidden_size], f32
  // [n, vocab_columns]; padding columns past the vocabulary are -inf. No communication.
  virtual Tensor LogitShard(const Tensor& rows) const = 0;
  // The id of this rank's first logit column.
  virtual int64_t vocab_begin() const = 0;
  // The full logits [n, vocab_size] from every rank's shard (collective over tp).
  virtual Tensor GatherLogits(const Tensor& shard) const = 0;
};

}  // namespace gemmapod
