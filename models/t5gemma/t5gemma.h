// T5Gemma, one rank's part (the whole model by default). Reads like transformers'
// T5GemmaForConditionalGeneration:
//
//   encoder:  e = embed_enc(prompt) * sqrt(d_enc)
//             per layer: e += post(self_attn(pre(e)))     bidirectional; sliding layers |q-k| < W;
//                        e += post(mlp(pre(e)))           padding keys masked
//             memory = norm(e)
//   decoder:  h = embed_dec([bos, ...]) * sqrt(d_dec)
//             per layer: h += post(self_attn(pre(h)))     causal, KV-cached, RoPE
//                        h += post(cross_attn(pre(h), memory))   no RoPE; k/v from d_enc
//                        h += post(mlp(pre(h)))
//             logits = 30 tanh(norm(h) . embed_dec^T / 30)
//
// The cross-attention keys and values are projected once per request from the encoder output
// and kept in the decode state beside the decoder's self-attention cache, so a decode step costs
// the decoder alone, whatever the encoder's size.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "models/gemma/gemma_stage.h"
#include "models/layers/kv_cache.h"
#include "models/t5gemma/t5gemma_weights.h"

namespace gemmapod {

class Communicator;
struct LayerBuffers;

// Encoder input as the rows of one activation: each sequence's tokens, padding included (tokens
// equal to the encoder's pad id are masked out as keys, as the reference masks them).
struct EncoderBatch {
  std::vector<int64_t> offset;     // first row per sequence
  std::vector<int64_t> length;     // rows per sequence
  std::vector<int32_t> positions;  // per row: its index in its sequence (RoPE)
  std::vector<uint8_t> valid;      // per row: 1 unless padding
  int64_t rows() const { return static_cast<int64_t>(positions.size()); }
};
EncoderBatch LayOutEncoderBatch(const std::vector<std::vector<int32_t>>& sequences, int32_t pad_id,
                                std::vector<int32_t>& tokens);

// What decoding one batch of requests needs beyond the weights: per sequence the decoder's
// self-attention keys and values (sized per layer kind, as for Gemma) and the cross-attention
// keys and values projected from its encoder output. A rank without decoder layers holds none.
class T5GemmaDecodeState {
 public:
  struct CrossMemory {
    int64_t length = 0;          // encoder rows (padding included)
    std::vector<uint8_t> valid;  // per encoder row: 1 unless padding
    std::vector<Tensor> keys;    // per decoder layer held: [length, KV * hd] (this rank's heads)
    std::vector<Tensor> values;
  };

  int64_t num_sequences() const { return static_cast<int64_t>(cross.size()); }
  // Bytes of both caches, for messages and the planner.
  int64_t bytes() const;

  std::optional<KvCache> self;
  std::vector<CrossMemory> cross;  // per sequence
};

class T5Gemma {
 public:
  T5Gemma(T5GemmaConfig config, T5GemmaShard shard, T5GemmaWeights weights, Communicator* tp);
  T5Gemma(T5GemmaConfig config, T5GemmaWeights weights)
      : T5Gemma(config, WholeT5Gemma(config), std::move(weights), nullptr) {}

  const T5GemmaConfig& config() const { return config_; }
  const T5GemmaShard& shard() const { return shard_; }
  // kExact (the default) or kFastBF16, for both stacks, the cross-attention and the head.
  void set_matmul_precision(cpu::MatmulPrecision p);
  // Where the encoder's and the decoder's layers save what a backward needs
  // (models/layers/activation_store.h); null (the default) for inference.
  void set_activation_stores(ActivationStore* encoder, ActivationStore* decoder) {
    encoder_store_ = encoder;
    decoder_store_ = decoder;
  }

  // --- the encoder (ranks with encoder layers)
  Tensor EmbedEncoder(std::span<const int32_t> tokens) const;  // first encoder stage; [T, d_enc]
  void RunEncoderLayers(Tensor& h, const EncoderBatch& batch);
  Tensor FinishEncoder(const Tensor& h) const;  // last encoder stage: the final norm

  // --- the decoder (ranks with decoder layers)
  // A state for `num_sequences` sequences of up to `max_context` decoder tokens.
  T5GemmaDecodeState NewDecodeState(int64_t num_sequences, int64_t max_context) const;
  // Projects this rank's cross-attention keys and values for its layers from the encoder output
  // `memory` [rows, d_enc]; batch entry b becomes sequence b of `state`, or sequence
  // sequences[b] when given (the others keep theirs), whose decoder cache starts empty.
  void SetEncoderMemory(const Tensor& memory, const EncoderBatch& batch, T5GemmaDecodeState& state,
                        std::span<const int64_t> sequences = {}) const;
  Tensor EmbedDecoder(std::span<const int32_t> tokens) const;  // first decoder stage
  // Runs this rank's decoder layers over h [T, d_dec] in place; stores the self-attention keys
  // and values (the caller advances the cache once every stage ran).
  void RunDecoderLayers(Tensor& h, const BatchLayout& layout, T5GemmaDecodeState& state);
  // Last decoder stage: the full logits of every row of h, [rows, vocab] (collective over tp).
  Tensor Logits(const Tensor& h) const;
  // The same in two steps: this rank's vocabulary columns (no communication), then every rank's
  // columns gathered (collective over tp).
  Tensor LogitShard(const Tensor& h) const;
  Tensor GatherLogits(const Tensor& shard) const;

  // The whole model on this rank: every decoder row's logits for teacher-forced decoder inputs
  // (sequence b decodes decoder_tokens[b] over encoder_tokens[b]), [sum of lengths, vocab].
  Tensor Forward(const std::vector<std::vector<int32_t>>& encoder_tokens,
                 const std::vector<std::vector<int32_t>>& decoder_tokens);

 private:
  // The tensor-parallel group, or null when this rank runs its stacks whole.
  Communicator* TpGroup() const;
  // h += post_norm(o_proj(attention output in `b.attn`)), reduced over the group.
  void OutputResidual(Tensor& h, const Linear& o_proj, const Tensor& post_norm, float eps,
                      LayerBuffers& b) const;
  // h += post_mlp_norm(mlp(mlp_norm(h))), reduced over the group.
  void MlpResidual(Tensor& h, const GemmaLayerWeights& w, float eps, LayerBuffers& b,
                   ActivationStore* store, int64_t layer) const;
  const GemmaStage& encoder() const;
  const GemmaStage& decoder() const;

  T5GemmaConfig config_;
  T5GemmaShard shard_;
  // Each stack as a Gemma stage: its embedding, weights and (decoder) tied head.
  std::optional<GemmaStage> encoder_;
  std::optional<GemmaStage> decoder_;
  std::vector<CrossAttentionWeights> cross_;
  Communicator* tp_;
  cpu::MatmulPrecision precision_ = cpu::MatmulPrecision::kExact;
  ActivationStore* encoder_store_ = nullptr;
  ActivationStore* decoder_store_ = nullptr;
};

T5Gemma LoadT5GemmaCheckpoint(const std::string& path);
// Writes whole weights (and a tokenizer) as a .h5 checkpoint, atomically.
void SaveT5GemmaCheckpoint(const std::string& path, const T5GemmaConfig& config,
                           T5GemmaWeights& weights, const std::optional<std::string>& tokenizer);

}  // namespace gemmapod
