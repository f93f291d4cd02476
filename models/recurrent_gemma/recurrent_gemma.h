// RecurrentGemma (Griffin), one rank. Reads like google-deepmind/recurrentgemma:
//
//   h = embed(tokens) * bf16(sqrt(d))
//   for each layer (recurrent, recurrent, attention, ...):
//     h = h + temporal_block(rms(h))      RG-LRU recurrent block, or local MQA attention
//     h = h + mlp(rms(h))                 gelu(gate(x) + b) * (up(x) + b), down + b
//   logits = 30 tanh(rms(h) . embed^T / 30)
//
// Decode keeps a fixed state per sequence whatever its length: per recurrent layer the last
// conv1d_width - 1 inputs of the convolution and the RG-LRU state (f32), per attention layer a
// ring of the last `attention_window` keys and values. A prompt runs every matrix product over
// all its tokens at once and the recurrence as one pass over time.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "models/layers/activation_store.h"
#include "models/layers/attention.h"
#include "models/layers/parallel.h"
#include "models/recurrent_gemma/recurrent_gemma_shard.h"

namespace gemmapod {
class Communicator;
}
#include "models/recurrent_gemma/recurrent_gemma_weights.h"

namespace gemmapod {

// The decode state of `num_sequences` sequences. Its size depends on the config alone, never on
// how many tokens went through it.
class RecurrentGemmaState {
 public:
  // The state of `shard`'s layers (its channels of the recurrent width; the attention ring holds
  // the replicated key/value head whole).
  RecurrentGemmaState(const RecurrentGemmaConfig& config, int64_t num_sequences,
                      const RecurrentGemmaShard& shard, Device device = Device::Cpu());
  RecurrentGemmaState(const RecurrentGemmaConfig& config, int64_t num_sequences)
      : RecurrentGemmaState(config, num_sequences, WholeRecurrentGemma(config)) {}

  int64_t num_sequences() const { return num_sequences_; }
  // Tokens seen by sequence s (all documents), and the position of its next token in its current
  // document.
  int64_t tokens_seen(int64_t s) const { return seen_[static_cast<size_t>(s)]; }
  // Bytes held, every layer's state together.
  int64_t bytes() const;
  // What a state of this shape holds, without making it (for `gemmapod plan`).
  static int64_t BytesFor(const RecurrentGemmaConfig& config, int64_t num_sequences,
                          const RecurrentGemmaShard& shard);
  void Reset(int64_t sequence);
  // Makes `sequence` look as if `tokens` tokens of one document had gone through it, its state
  // filled with random numbers (seeded): for benchmarks of decode at a given context, since what
  // a step costs depends on how much the state holds, never on its values.
  void FillForBenchmark(int64_t sequence, int64_t tokens, uint32_t seed);

 private:
  friend class RecurrentGemma;
  struct RecurrentLayer {
    Tensor conv;  // [S, width - 1, lru]: the inputs u of the last width - 1 tokens, oldest first
    Tensor lru;   // [S, lru] f32
  };
  struct AttentionLayer {
    Tensor keys;    // [S, window, KV * hd], slot = token index % window
    Tensor values;  // [S, window, KV * hd]
  };
  int64_t num_sequences_ = 0;
  int64_t window_ = 0;
  std::vector<RecurrentLayer> recurrent_;  // per layer (empty tensors on attention layers)
  std::vector<AttentionLayer> attention_;  // per layer (empty tensors on recurrent layers)
  std::vector<int64_t> seen_;              // tokens seen per sequence
  std::vector<int32_t> next_position_;     // next segment position per sequence
  // Per sequence and ring slot: the token index held there and its document number, so a query
  // never reads another document's keys or keys older than the window.
  std::vector<int64_t> slot_token_;
  std::vector<int64_t> slot_document_;
  std::vector<int64_t> document_;  // current document number per sequence
  // Per sequence, the document numbers of the last conv1d_width - 1 tokens, oldest first (-1:
  // none), so the convolution never reads another document's inputs from the state.
  std::vector<int64_t> recent_document_;
  int64_t conv_history_ = 0;
};

// New tokens of one sequence. `segment_pos` gives each token's position in its document (0 starts
// a new document: the recurrence and the convolution forget the past, attention stops reading
// it); empty continues the sequence's current document.
struct RecurrentChunk {
  int64_t sequence = 0;
  std::vector<int32_t> tokens;
  std::vector<int32_t> segment_pos;
};

// Where a chunk's tokens sit: position in their document (RoPE), document number and index in
// the sequence (the attention window and ring slot). Every stage computes the same from the chunk
// and its own copy of the sequence's bookkeeping.
struct RecurrentPlacement {
  int64_t sequence = 0;
  std::vector<int32_t> pos;
  std::vector<int64_t> doc, index;
};

// One rank's part of the model: the whole model on one rank (the default), or a shard of a
// tensor-parallel group (`tp`, collective) and pipeline stage.
class RecurrentGemma {
 public:
  RecurrentGemma(RecurrentGemmaConfig config, RecurrentGemmaWeights weights);
  RecurrentGemma(RecurrentGemmaConfig config, RecurrentGemmaShard shard,
                 RecurrentGemmaWeights weights, Communicator* tp);

  const RecurrentGemmaConfig& config() const { return config_; }
  // kExact (the default: f32-grade products) or kFastBF16 (activations rounded to bf16 once, as
  // bf16 inference in PyTorch does); bf16 and int8 weights only differ.
  void set_matmul_precision(cpu::MatmulPrecision p) { precision_ = p; }
  const RecurrentGemmaShard& shard() const { return shard_; }
  // Where the weights, and so the state this model makes, live.
  Device device() const {
    return weights_.layers[static_cast<size_t>(shard_.first_layer)].temporal_pre_norm.device();
  }
  // Where RunLayers saves what a backward needs (models/layers/activation_store.h); null (the
  // default) for inference.
  void set_activation_store(ActivationStore* store) { store_ = store; }
  RecurrentGemmaState NewState(int64_t num_sequences) const {
    return RecurrentGemmaState(config_, num_sequences, shard_, device());
  }

  // The whole model on this rank: runs the chunk, updates `state`, returns f32 logits
  // [tokens, vocab] (every token) or [1, vocab] (the last one).
  Tensor Forward(const RecurrentChunk& chunk, RecurrentGemmaState& state, bool all_logits);

  // The steps, for pipeline stages.
  RecurrentPlacement Place(const RecurrentChunk& chunk, const RecurrentGemmaState& state) const;
  Tensor Embed(const std::vector<int32_t>& tokens) const;  // first stage; [T, d]
  void RunLayers(Tensor& h, const RecurrentPlacement& at, RecurrentGemmaState& state);
  // Last stage: f32 logits of every row of h, or of the last; the whole vocabulary on every rank
  // of the tensor-parallel group.
  Tensor Logits(const Tensor& h, bool all_logits) const;
  // The same in two steps: this rank's vocabulary columns of the logits of every row of h
  // (no communication), then every rank's columns gathered (collective over tp).
  Tensor LogitShard(const Tensor& h) const;
  Tensor GatherLogits(const Tensor& shard) const;
  // Records the chunk in `state` once every layer has run.
  void Commit(const RecurrentPlacement& at, RecurrentGemmaState& state) const;

 private:
  // The tensor-parallel group, or null when the model runs whole.
  Communicator* TpGroup() const { return shard_.tp > 1 ? tp_ : nullptr; }
  VocabSlice Vocab() const;
  VocabParallelHead Head() const;
  // Per token of the chunk, the index (in the sequence) of its document's first token that the
  // attention ring or the chunk still holds: no query reads across a document start.
  std::vector<int64_t> DocumentStarts(const RecurrentPlacement& at,
                                      const RecurrentGemmaState& state) const;
  // Local MQA of this rank's query heads q [T, H, hd] over the ring and the chunk's keys k, v
  // [T, KV, hd] (every key/value head: they are replicated), query t seeing [lo[t], hi[t]).
  void LocalAttention(const Tensor& q, const Tensor& k, const Tensor& v, const KeyRing& ring,
                      const std::vector<int64_t>& lo, const std::vector<int64_t>& hi,
                      Tensor& out) const;

  RecurrentGemmaConfig config_;
  RecurrentGemmaShard shard_;
  RecurrentGemmaWeights weights_;
  Communicator* tp_ = nullptr;
  cpu::MatmulPrecision precision_ = cpu::MatmulPrecision::kExact;
  ActivationStore* store_ = nullptr;
};

RecurrentGemma LoadRecurrentGemmaCheckpoint(const std::string& path);

}  // namespace gemmapod
