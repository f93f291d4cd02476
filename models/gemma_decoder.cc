#include "models/gemma_decoder.h"

#include <set>

#include "models/layers/geglu_mlp.h"
#include "models/layers/self_attention_block.h"
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
  const int64_t ffn = c.intermediate_size;
  const float eps = static_cast<float>(c.rms_norm_eps);

  // Lay the chunks out as one [T, d] activation; remember where each chunk sits.
  BatchLayout layout;
  std::vector<int32_t> tokens;
  std::set<int64_t> seen;
  for (const SequenceChunk& chunk : batch) {
    GEMMAPOD_CHECK(!chunk.tokens.empty(), "forward: sequence ", chunk.sequence,
                   " brings no tokens");
    GEMMAPOD_CHECK(seen.insert(chunk.sequence).second, "forward: sequence ", chunk.sequence,
                   " appears twice in one batch");
    const int64_t n = static_cast<int64_t>(chunk.tokens.size());
    cache.CheckRoom(chunk.sequence, n);
    const int64_t start = cache.length(chunk.sequence);
    layout.sequence.push_back(chunk.sequence);
    layout.offset.push_back(static_cast<int64_t>(tokens.size()));
    layout.length.push_back(n);
    layout.start.push_back(start);
    for (int64_t i = 0; i < n; ++i) {
      tokens.push_back(chunk.tokens[static_cast<size_t>(i)]);
      layout.positions.push_back(static_cast<int32_t>(start + i));
    }
  }
  const int64_t T = static_cast<int64_t>(tokens.size());
  GEMMAPOD_CHECK(T > 0, "forward: empty batch");

  // h = embed(tokens) * sqrt(d), the scale rounded as the family's reference rounds it.
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

  Tensor normed = NewF32(T, d), block_out = NewF32(T, d);
  Tensor q = NewF32(T, H * hd), k = NewF32(T, KV * hd), v = NewF32(T, KV * hd),
         attn = NewF32(T, H * hd);
  Tensor gate = NewF32(T, ffn), up = NewF32(T, ffn), hidden = NewF32(T, ffn);

  for (int64_t l = 0; l < c.num_layers; ++l) {
    const GemmaLayerWeights& w = weights_.layers[static_cast<size_t>(l)];
    const bool sliding = c.layer_kinds[static_cast<size_t>(l)] == AttentionKind::kSliding;

    // h = h + [post_norm](attention(norm(h)))
    const SelfAttentionSettings settings{
        AttentionShape{H, KV, hd, c.attention_scale(), static_cast<float>(c.attn_logit_softcap),
                       sliding ? c.sliding_window : 0},
        static_cast<float>(sliding ? c.rope_theta_local : c.rope_theta_global),
        static_cast<float>(sliding ? 1.0 : c.rope_scaling_global), eps};
    const SelfAttentionWeights attention{w.q_proj,
                                         w.k_proj,
                                         w.v_proj,
                                         w.o_proj,
                                         c.qk_norm ? &w.q_norm : nullptr,
                                         c.qk_norm ? &w.k_norm : nullptr};
    RmsNormRows(h, w.attn_norm, eps, normed);
    SelfAttentionForward(normed, attention, settings, layout, cache, l, q, k, v, attn, block_out,
                         precision_);
    if (c.post_norms) RmsNormRows(block_out, w.post_attn_norm, eps, block_out);
    cpu::Add(h.data<float>(), block_out.data<float>(), h.data<float>(), T * d);

    // h = h + [post_norm](mlp(norm(h)))
    RmsNormRows(h, w.mlp_norm, eps, normed);
    GegluMlpForward(normed, {w.gate_proj, w.up_proj, w.down_proj}, gate, up, hidden, block_out,
                    precision_);
    if (c.post_norms) RmsNormRows(block_out, w.post_mlp_norm, eps, block_out);
    cpu::Add(h.data<float>(), block_out.data<float>(), h.data<float>(), T * d);
  }
  for (const SequenceChunk& chunk : batch) {
    cache.Advance(chunk.sequence, static_cast<int64_t>(chunk.tokens.size()));
  }

  // logits = [softcap](norm(h) . embed^T), on the rows asked for.
  Tensor last;
  if (rows == LogitRows::kAllTokens) {
    last = h;
  } else {
    last = NewF32(static_cast<int64_t>(batch.size()), d);
    for (size_t b = 0; b < batch.size(); ++b) {
      const int64_t row = layout.offset[b] + layout.length[b] - 1;
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
