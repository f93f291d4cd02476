// One pipeline stage of a decoder-only Gemma on one rank of its tensor-parallel group: the
// embedding (first stage), a contiguous range of layers, and the output head (last stage), each
// on this rank's slices of the weights (models/gemma_shard.h). Each attention and MLP block ends
// in one all-reduce over the group; the embedding is vocab-parallel (each rank looks up the
// tokens in its rows, then one all-reduce), and the head yields this rank's vocabulary columns of
// the logits. With the whole model on one rank (WholeGemma, no communicator) it is the one-rank
// model, and GemmaDecoder is built on it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "models/gemma/gemma_shard.h"
#include "models/gemma/model_config.h"
#include "models/layers/activation_store.h"
#include "models/layers/kv_cache.h"
#include "models/layers/parallel.h"
#include "models/layers/self_attention_block.h"
#include "models/sequence_chunk.h"
#include "runtime/cpu/matmul.h"
#include "runtime/tensor.h"

namespace gemmapod {

class Communicator;

// Lays the chunks out as rows of one activation, checking them against `cache` (no empty chunk,
// no sequence twice, room in the context). `tokens` receives the rows' token ids.
BatchLayout LayOutBatch(std::span<const SequenceChunk> batch, const KvCache& cache,
                        std::vector<int32_t>& tokens);
// The row of each chunk's last token: [chunks, d].
Tensor LastTokenRows(const Tensor& h, const BatchLayout& layout);

class GemmaStage {
 public:
  // `tp` is this rank's tensor-parallel group; it may be null when shard.tp is 1.
  GemmaStage(ModelConfig config, GemmaShard shard, GemmaWeights weights, Communicator* tp);

  const ModelConfig& config() const { return config_; }
  const GemmaShard& shard() const { return shard_; }
  const GemmaWeights& weights() const { return weights_; }
  void set_matmul_precision(cpu::MatmulPrecision p) { precision_ = p; }
  // Where RunLayers saves what a backward needs (models/layers/activation_store.h); null (the
  // default) for inference.
  void set_activation_store(ActivationStore* store) { store_ = store; }

  // A cache for this stage's layers and this rank's key/value heads.
  // Fixed slots, or a shared pool of blocks when pool.block_tokens > 0.
  KvCache NewCache(int64_t num_sequences, int64_t max_context,
                   const KvPool& pool = KvPool{0, {0, 0}, 0}) const;

  // First stage: embed(tokens) * sqrt(d), f32 [T, d].
  Tensor Embed(std::span<const int32_t> tokens) const;
  // Runs this stage's layers over h [T, d] in place and stores their keys and values in `cache`
  // (the caller advances the sequences once every stage has run).
  void RunLayers(Tensor& h, const BatchLayout& layout, KvCache& cache);
  // Last stage: this rank's columns of softcap(norm(h) . embed^T), f32 [rows, vocab_rows]; the
  // padding columns past the vocabulary are -inf.
  Tensor LogitShard(const Tensor& h) const;
  // The full logits [rows, vocab_size] from every rank's LogitShard (collective over tp).
  Tensor GatherLogits(const Tensor& shard) const;

 private:
  // The tensor-parallel group, or null when the stage runs whole.
  Communicator* TpGroup() const { return shard_.tp > 1 ? tp_ : nullptr; }
  VocabSlice Vocab() const;
  VocabParallelHead Head() const;

  ModelConfig config_;
  GemmaShard shard_;
  GemmaWeights weights_;
  Communicator* tp_;
  cpu::MatmulPrecision precision_ = cpu::MatmulPrecision::kExact;
  ActivationStore* store_ = nullptr;
};

}  // namespace gemmapod
