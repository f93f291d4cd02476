// The decoder-only Gemma (Gemma 1, 2 and 3 text), one rank. Reads like the reference:
//
//   h = embed(tokens) * sqrt(d)
//   for each layer:
//     a = attention(rms(h))           q, k per-head RMSNorm first on Gemma 3; RoPE; window per kind
//     h = h + (post_norms ? rms(a) : a)
//     m = down(gelu_tanh(gate(rms(h))) * up(rms(h)))
//     h = h + (post_norms ? rms(m) : m)
//   logits = softcap(rms(h) . embed^T)
//
// A forward pass takes a ragged batch: each sequence brings a chunk of new tokens (a whole prompt,
// or one token while decoding), all chunks' tokens share the matrix products, and each sequence
// attends over its own cached past. The computation is GemmaStage's, with every weight whole.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "models/gemma/gemma_stage.h"

namespace gemmapod {

// Which positions get logits: every token (scoring, `gemmapod logits`) or only the last token of
// each chunk (generation, where the other rows would be thrown away).
enum class LogitRows { kAllTokens, kLastToken };

class GemmaDecoder {
 public:
  GemmaDecoder(ModelConfig config, GemmaWeights weights);

  const ModelConfig& config() const { return stage_.config(); }
  const GemmaWeights& weights() const { return stage_.weights(); }
  void set_matmul_precision(cpu::MatmulPrecision p) { stage_.set_matmul_precision(p); }
  void set_activation_store(ActivationStore* store) { stage_.set_activation_store(store); }

  // Runs every chunk through the model, stores their keys and values in `cache` and advances each
  // sequence. Returns f32 logits [rows, vocab], rows in chunk order (all tokens of chunk 0, then
  // chunk 1, ... or one row per chunk). A sequence may appear once per call.
  Tensor Forward(std::span<const SequenceChunk> batch, KvCache& cache, LogitRows rows);

 private:
  GemmaStage stage_;  // the whole model as one stage on one rank
};

}  // namespace gemmapod
