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

Tensor GemmaAttentionResidualForward(const ModelConfig& c, int64_t layer,
                                     const GemmaLayerWeights& w, const Tensor& h,
                                     std::span<const int32_t> positions,
                                     std::span<const int64_t> lo, std::span<const int64_t> hi,
                                     Communicator* tp, MatmulPrecision precision,
                                     GemmaLayerSaved& saved) {
  const float eps = static_cast<float>(c.rms_norm_eps);
  const int64_t T = h.dim(0), d = h.dim(1);
  saved.input = h;
  saved.attention_normed = ActivationLike(h, {T, d});
  ops::RmsNorm(h, w.attn_norm, eps, saved.attention_normed);
  saved.attention_out = ActivationLike(h, {T, d});
  SelfAttentionTrainForward(
      saved.attention_normed, AttentionOf(c, w),
      SettingsOf(c, layer, HeadsOf(w.q_proj, c.head_dim), HeadsOf(w.k_proj, c.head_dim)), positions,
      lo, hi, tp, precision, saved.attention_out, saved.attention);
  Tensor mid = ActivationLike(h, {T, d});
  if (c.post_norms) {
    ops::RmsNorm(saved.attention_out, w.post_attn_norm, eps, mid);
    ops::Add(h, mid, mid);
  } else {
    ops::Add(h, saved.attention_out, mid);
  }
  return mid;
}

Tensor GemmaMlpResidualForward(const ModelConfig& c, const GemmaLayerWeights& w, const Tensor& x,
                               Communicator* tp, MatmulPrecision precision,
                               GemmaLayerSaved& saved) {
  const float eps = static_cast<float>(c.rms_norm_eps);
  const int64_t T = x.dim(0), d = x.dim(1), ffn = w.gate_proj.weight.dim(0);
  saved.mid = x;
  saved.mlp_normed = ActivationLike(x, {T, d});
  ops::RmsNorm(x, w.mlp_norm, eps, saved.mlp_normed);
  saved.gate = ActivationLike(x, {T, ffn});
  saved.up = ActivationLike(x, {T, ffn});
  saved.hidden = ActivationLike(x, {T, ffn});
  saved.mlp_out = ActivationLike(x, {T, d});
  GegluMlpForward(saved.mlp_normed, {w.gate_proj, w.up_proj, w.down_proj}, tp, saved.gate, saved.up,
                  saved.hidden, saved.mlp_out, precision);
  Tensor out = ActivationLike(x, {T, d});
  if (c.post_norms) {
    ops::RmsNorm(saved.mlp_out, w.post_mlp_norm, eps, out);
    ops::Add(x, out, out);
  } else {
    ops::Add(x, saved.mlp_out, out);
  }
  return out;
}

Tensor GemmaLayerTrainForward(const ModelConfig& c, int64_t layer, const GemmaLayerWeights& w,
                              const Tensor& h, std::span<const int32_t> positions,
                              std::span<const int64_t> lo, std::span<const int64_t> hi,
                              Communicator* tp, MatmulPrecision precision, GemmaLayerSaved& saved) {
  const Tensor mid =
      GemmaAttentionResidualForward(c, layer, w, h, positions, lo, hi, tp, precision, saved);
  return GemmaMlpResidualForward(c, w, mid, tp, precision, saved);
}

void GemmaMlpResidualBackward(const ModelConfig& c, const GemmaLayerWeights& w,
                              const GemmaLayerSaved& saved, const Tensor& dout, Communicator* tp,
                              Tensor& dx, GemmaLayerGrads& grads) {
  const float eps = static_cast<float>(c.rms_norm_eps);
  // out = x + post(mlp(norm(x))): dx = dout + the MLP branch's gradient.
  Tensor d_branch = ActivationLike(dout, dout.shape());
  if (c.post_norms) {
    ops::RmsNormBackward(saved.mlp_out, w.post_mlp_norm, dout, eps, d_branch, grads.post_mlp_norm);
  } else {
    ops::Scale(dout, 1.0f, d_branch);
  }
  Tensor d_normed = ActivationLike(dout, dout.shape());
  GegluMlpBackward(saved.mlp_normed, {w.gate_proj, w.up_proj, w.down_proj}, saved.gate, saved.up,
                   saved.hidden, d_branch, tp, d_normed, grads.mlp);
  ops::RmsNormBackward(saved.mid, w.mlp_norm, d_normed, eps, dx, grads.mlp_norm);
  ops::Add(dx, dout, dx);
}

void GemmaAttentionResidualBackward(const ModelConfig& c, int64_t layer, const GemmaLayerWeights& w,
                                    std::span<const int32_t> positions, std::span<const int64_t> lo,
                                    std::span<const int64_t> hi, const GemmaLayerSaved& saved,
                                    const Tensor& d_mid, Communicator* tp, Tensor& dh,
                                    GemmaLayerGrads& grads) {
  const float eps = static_cast<float>(c.rms_norm_eps);
  // mid = h + post(attention(norm(h))).
  Tensor d_branch = ActivationLike(d_mid, d_mid.shape());
  if (c.post_norms) {
    ops::RmsNormBackward(saved.attention_out, w.post_attn_norm, d_mid, eps, d_branch,
                         grads.post_attn_norm);
  } else {
    ops::Scale(d_mid, 1.0f, d_branch);
  }
  Tensor d_normed = ActivationLike(d_mid, d_mid.shape());
  SelfAttentionBackward(
      AttentionOf(c, w),
      SettingsOf(c, layer, HeadsOf(w.q_proj, c.head_dim), HeadsOf(w.k_proj, c.head_dim)), positions,
      lo, hi, saved.attention, d_branch, tp, d_normed, grads.attention);
  ops::RmsNormBackward(saved.input, w.attn_norm, d_normed, eps, dh, grads.attn_norm);
  ops::Add(dh, d_mid, dh);
}

void GemmaLayerBackward(const ModelConfig& c, int64_t layer, const GemmaLayerWeights& w,
                        std::span<const int32_t> positions, std::span<const int64_t> lo,
                        std::span<const int64_t> hi, const GemmaLayerSaved& saved,
                        const Tensor& dout, Communicator* tp, Tensor& dh, GemmaLayerGrads& grads) {
  Tensor d_mid = ActivationLike(dout, dout.shape());
  GemmaMlpResidualBackward(c, w, saved, dout, tp, d_mid, grads);
  GemmaAttentionResidualBackward(c, layer, w, positions, lo, hi, saved, d_mid, tp, dh, grads);
}

}  // namespace gemmapod
