#include "models/gemma_decoder.h"

#include <set>

#include "models/layers/attention.h"
#include "runtime/cpu/ops.h"
#include "runtime/error.h"

namespace gemmapod {
namespace {

Tensor NewF32(int64_t rows, int64_t cols) { return Tensor::Empty({rows, cols}, DType::kF32); }

void RmsNormRows(const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  cpu::RmsNorm(x.data<float>(), weight.data<float>(), x.dim(0), x.dim(1), eps, out.data<float>());
}

}  // namespace

GemmaDecoder::GemmaDecoder(ModelConfig config, GemmaWeights weights)
    : config_(std::move(config)), weights_(std::move(weights)) {
  Validate(config_, "model config");
  GEMMAPOD_CHECK(static_cast<int64_t>(weights_.layers.size()) == config_.num_layers,
                 "GemmaDecoder: ", weights_.layers.size(), " layers of weights for a ",
                 config_.num_layers, "-layer config");
}

Tensor GemmaDecoder::Forward(std::span<const SequenceChunk> batch, KvCache& cache, LogitRows rows) {
  const ModelConfig& c = config_;
  const int64_t d = c.hidden_size, H = c.num_heads, KV = c.num_kv_heads, hd = c.head_dim;
  const float eps = static_cast<float>(c.rms_norm_eps);

  // Lay the chunks out as one [T, d] activation; remember where each chunk starts.
  std::vector<int32_t> tokens, positions;
  std::vector<int64_t> chunk_offset;
  std::set<int64_t> seen;
  for (const SequenceChunk& chunk : batch) {
    GEMMAPOD_CHECK(!chunk.tokens.empty(), "forward: sequence ", chunk.sequence,
                   " brings no tokens");
    GEMMAPOD_CHECK(seen.insert(chunk.sequence).second, "forward: sequence ", chunk.sequence,
                   " appears twice in one batch");
    const int64_t n = static_cast<int64_t>(chunk.tokens.size());
    cache.CheckRoom(chunk.sequence, n);
    const int64_t start = cache.length(chunk.sequence);
    chunk_offset.push_back(static_cast<int64_t>(tokens.size()));
    for (int64_t i = 0; i < n; ++i) {
      tokens.push_back(chunk.tokens[static_cast<size_t>(i)]);
      positions.push_back(static_cast<int32_t>(start + i));
    }
  }
  const int64_t T = static_cast<int64_t>(tokens.size());
  GEMMAPOD_CHECK(T > 0, "forward: empty batch");

  Tensor h = NewF32(T, d);
  const Tensor& embed = weights_.embed_tokens;
  const float embed_scale = c.EmbedScale(embed.dtype());
  if (embed.dtype() == DType::kBF16) {
    cpu::EmbeddingGather(embed.data<BF16>(), c.vocab_size, d, tokens.data(), T, embed_scale,
                         h.data<float>());
  } else {
    cpu::EmbeddingGather(embed.data<float>(), c.vocab_size, d, tokens.data(), T, embed_scale,
                         h.data<float>());
  }

  Tensor normed = NewF32(T, d), q = NewF32(T, H * hd), k = NewF32(T, KV * hd),
         v = NewF32(T, KV * hd), attn = NewF32(T, H * hd), block_out = NewF32(T, d),
         gate = NewF32(T, c.intermediate_size), up = NewF32(T, c.intermediate_size);

  for (int64_t l = 0; l < c.num_layers; ++l) {
    const GemmaLayerWeights& w = weights_.layers[static_cast<size_t>(l)];
    const bool sliding = c.layer_kinds[static_cast<size_t>(l)] == AttentionKind::kSliding;

    // Attention block.
    RmsNormRows(h, w.attn_norm, eps, normed);
    cpu::MatMul(normed, w.q_proj, q, precision_);
    cpu::MatMul(normed, w.k_proj, k, precision_);
    cpu::MatMul(normed, w.v_proj, v, precision_);
    if (c.qk_norm) {
      cpu::RmsNorm(q.data<float>(), w.q_norm.data<float>(), T * H, hd, eps, q.data<float>());
      cpu::RmsNorm(k.data<float>(), w.k_norm.data<float>(), T * KV, hd, eps, k.data<float>());
    }
    const float theta = static_cast<float>(sliding ? c.rope_theta_local : c.rope_theta_global);
    const float rope_scale = static_cast<float>(sliding ? 1.0 : c.rope_scaling_global);
    cpu::RopeHalfSplit(q.data<float>(), T, H, hd, positions.data(), theta, 1.0f, rope_scale);
    cpu::RopeHalfSplit(k.data<float>(), T, KV, hd, positions.data(), theta, 1.0f, rope_scale);

    const AttentionShape shape{H,
                               KV,
                               hd,
                               c.attention_scale(),
                               static_cast<float>(c.attn_logit_softcap),
                               sliding ? c.sliding_window : 0};
    for (size_t b = 0; b < batch.size(); ++b) {
      const int64_t off = chunk_offset[b];
      const int64_t n = static_cast<int64_t>(batch[b].tokens.size());
      CachedSelfAttention(shape, q.data<float>() + off * H * hd, k.data<float>() + off * KV * hd,
                          v.data<float>() + off * KV * hd, n, cache.length(batch[b].sequence),
                          cache.Layer(batch[b].sequence, l), attn.data<float>() + off * H * hd);
    }
    cpu::MatMul(attn, w.o_proj, block_out, precision_);
    if (c.post_norms) RmsNormRows(block_out, w.post_attn_norm, eps, block_out);
    cpu::Add(h.data<float>(), block_out.data<float>(), h.data<float>(), T * d);

    // MLP block (GeGLU).
    RmsNormRows(h, w.mlp_norm, eps, normed);
    cpu::MatMul(normed, w.gate_proj, gate, precision_);
    cpu::MatMul(normed, w.up_proj, up, precision_);
    cpu::GeluTanh(gate.data<float>(), gate.data<float>(), gate.numel());
    cpu::Mul(gate.data<float>(), up.data<float>(), gate.data<float>(), gate.numel());
    cpu::MatMul(gate, w.down_proj, block_out, precision_);
    if (c.post_norms) RmsNormRows(block_out, w.post_mlp_norm, eps, block_out);
    cpu::Add(h.data<float>(), block_out.data<float>(), h.data<float>(), T * d);
  }
  for (const SequenceChunk& chunk : batch) {
    cache.Advance(chunk.sequence, static_cast<int64_t>(chunk.tokens.size()));
  }

  // Output head on the rows asked for.
  Tensor last;
  if (rows == LogitRows::kAllTokens) {
    last = h;
  } else {
    last = NewF32(static_cast<int64_t>(batch.size()), d);
    for (size_t b = 0; b < batch.size(); ++b) {
      const int64_t row = chunk_offset[b] + static_cast<int64_t>(batch[b].tokens.size()) - 1;
      std::copy_n(h.data<float>() + row * d, d, last.data<float>() + static_cast<int64_t>(b) * d);
    }
  }
  Tensor final_normed = NewF32(last.dim(0), d);
  RmsNormRows(last, weights_.final_norm, eps, final_normed);
  Tensor logits = NewF32(last.dim(0), c.vocab_size);
  cpu::MatMul(final_normed, embed, logits, precision_);
  if (c.final_logit_softcap > 0) {
    cpu::SoftCap(logits.data<float>(), static_cast<float>(c.final_logit_softcap),
                 logits.data<float>(), logits.numel());
  }
  return logits;
}

}  // namespace gemmapod
