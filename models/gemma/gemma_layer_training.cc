#include "models/gemma/gemma_layer_training.h"

#include "models/layers/device_tensors.h"
#include "runtime/ops/grad_ops.h"
#include "runtime/ops/ops.h"

namespace gemmapod {
namespace {

// What GemmaStage::RunLayers gives the attention block for this layer.
SelfAttentionSettings SettingsOf(const ModelConfig& c, int64_t layer, int64_t heads,
                                 int64_t kv_heads) {
  const bool sliding = c.layer_kinds[static_cast<size_t>(layer)] == AttentionKind::kSliding;
  return {AttentionShape{heads, kv_heads, c.head_dim, c.attention_scale(),
                         static_cast<float>(c.attn_logit_softcap), sliding ? c.sliding_window : 0},
          static_cast<float>(sliding ? c.rope_theta_local : c.rope_theta_global),
          static_cast<float>(sliding ? 1.0 : c.rope_scaling_global),
          static_cast<float>(c.rms_norm_eps)};
}

SelfAttentionWeights AttentionOf(const ModelConfig& c, const GemmaLayerWeights& w) {
  return {w.q_proj,
          w.k_proj,
          w.v_proj,
          w.o_proj,
          c.qk_norm ? &w.q_norm : nullptr,
          c.qk_norm ? &w.k_norm : nullptr};
}

int64_t HeadsOf(const Linear& projection, int64_t head_dim) {
  return projection.weight.dim(0) / head_dim;
}

}  // namespace

GemmaLayerGrads GemmaLayerGrads::ZerosFor(const ModelConfig& c, const GemmaLayerWeights& w) {
  const auto zeros = [](const Tensor& like) { return ZerosOn(like.device(), like.shape()); };
  GemmaLayerGrads g{zeros(w.attn_norm),
                    c.post_norms ? zeros(w.post_attn_norm) : Tensor(),
                    zeros(w.mlp_norm),
                    c.post_norms ? zeros(w.post_mlp_norm) : Tensor(),
                    SelfAttentionGrads::ZerosFor(AttentionOf(c, w)),
                    GegluMlpGrads::ZerosFor({w.gate_proj, w.up_proj, w.down_proj})};
  return g;
}

Tensor GemmaLayerTrainForward(const ModelConfig& c, int64_t layer, const GemmaLayerWeights& w,
                              const Tensor& h, std::span<const int32_t> positions,
                              std::span<const int64_t> lo, std::span<const int64_t> hi,
                              Communicator* tp, MatmulPrecision precision, GemmaLayerSaved& saved) {
  const float eps = static_cast<float>(c.rms_norm_eps);
  const int64_t T = h.dim(0), d = h.dim(1), ffn = w.gate_proj.weight.dim(0);
  saved.input = h;
  saved.attention_normed = ActivationLike(h, {T, d});
  ops::RmsNorm(h, w.attn_norm, eps, saved.attention_normed);
  saved.attention_out = ActivationLike(h, {T, d});
  SelfAttentionTrainForward(
      saved.attention_normed, AttentionOf(c, w),
      SettingsOf(c, layer, HeadsOf(w.q_proj, c.head_dim), HeadsOf(w.k_proj, c.head_dim)), positions,
      lo, hi, tp, precision, saved.attention_out, saved.attention);
  saved.mid = ActivationLike(h, {T, d});
  if (c.post_norms) {
    ops::RmsNorm(saved.attention_out, w.post_attn_norm, eps, saved.mid);
    ops::Add(h, saved.mid, saved.mid);
  } else {
    ops::Add(h, saved.attention_out, saved.mid);
  }
  saved.mlp_normed = ActivationLike(h, {T, d});
  ops::RmsNorm(saved.mid, w.mlp_norm, eps, saved.mlp_normed);
  saved.gate = ActivationLike(h, {T, ffn});
  saved.up = ActivationLike(h, {T, ffn});
  saved.hidden = ActivationLike(h, {T, ffn});
  saved.mlp_out = ActivationLike(h, {T, d});
  GegluMlpForward(saved.mlp_normed, {w.gate_proj, w.up_proj, w.down_proj}, tp, saved.gate, saved.up,
                  saved.hidden, saved.mlp_out, precision);
  Tensor out = ActivationLike(h, {T, d});
  if (c.post_norms) {
    ops::RmsNorm(saved.mlp_out, w.post_mlp_norm, eps, out);
    ops::Add(saved.mid, out, out);
  } else {
    ops::Add(saved.mid, saved.mlp_out, out);
  }
  return out;
}

void GemmaLayerBackward(const ModelConfig& c, int64_t layer, const GemmaLayerWeights& w,
                        std::span<const int32_t> positions, std::span<const int64_t> lo,
                        std::span<const int64_t> hi, const GemmaLayerSaved& saved,
                        const Tensor& dout, Communicator* tp, Tensor& dh, GemmaLayerGrads& grads) {
  const float eps = static_cast<float>(c.rms_norm_eps);
  const Tensor& h = saved.input;
  // out = mid + post(mlp(norm(mid))): d_mid = dout + the MLP branch's gradient.
  Tensor d_branch = ActivationLike(dout, dout.shape());
  if (c.post_norms) {
    ops::RmsNormBackward(saved.mlp_out, w.post_mlp_norm, dout, eps, d_branch, grads.post_mlp_norm);
  } else {
    ops::Scale(dout, 1.0f, d_branch);
  }
  Tensor d_normed = ActivationLike(dout, dout.shape());
  GegluMlpBackward(saved.mlp_normed, {w.gate_proj, w.up_proj, w.down_proj}, saved.gate, saved.up,
                   saved.hidden, d_branch, tp, d_normed, grads.mlp);
  Tensor d_mid = ActivationLike(dout, dout.shape());
  ops::RmsNormBackward(saved.mid, w.mlp_norm, d_normed, eps, d_mid, grads.mlp_norm);
  ops::Add(d_mid, dout, d_mid);
  // mid = h + post(attention(norm(h))).
  if (c.post_norms) {
    ops::RmsNormBackward(saved.attention_out, w.post_attn_norm, d_mid, eps, d_branch,
                         grads.post_attn_norm);
  } else {
    ops::Scale(d_mid, 1.0f, d_branch);
  }
  SelfAttentionBackward(
      AttentionOf(c, w),
      SettingsOf(c, layer, HeadsOf(w.q_proj, c.head_dim), HeadsOf(w.k_proj, c.head_dim)), positions,
      lo, hi, saved.attention, d_branch, tp, d_normed, grads.attention);
  ops::RmsNormBackward(h, w.attn_norm, d_normed, eps, dh, grads.attn_norm);
  ops::Add(dh, d_mid, dh);
}

}  // namespace gemmapod
