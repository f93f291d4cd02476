#include "models/gemma_weights.h"

#include "models/gemma_shard.h"
#include "runtime/error.h"

namespace gemmapod {

void ForEachGemmaParameter(const ModelConfig& c, GemmaWeights& w,
                           const std::function<void(const GemmaParameter&, Tensor&)>& fn) {
  const int64_t d = c.hidden_size;
  w.layers.resize(static_cast<size_t>(c.num_layers));
  fn({"model.embed_tokens.weight", {c.vocab_size, d}, false}, w.embed_tokens);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    GemmaLayerWeights& l = w.layers[static_cast<size_t>(i)];
    const std::string p = StrCat("model.layers.", i, ".");
    fn({p + "input_layernorm.weight", {d}, true}, l.attn_norm);
    fn({p + "self_attn.q_proj.weight", {c.q_width(), d}, false}, l.q_proj);
    fn({p + "self_attn.k_proj.weight", {c.kv_width(), d}, false}, l.k_proj);
    fn({p + "self_attn.v_proj.weight", {c.kv_width(), d}, false}, l.v_proj);
    fn({p + "self_attn.o_proj.weight", {d, c.q_width()}, false}, l.o_proj);
    if (c.qk_norm) {
      fn({p + "self_attn.q_norm.weight", {c.head_dim}, true}, l.q_norm);
      fn({p + "self_attn.k_norm.weight", {c.head_dim}, true}, l.k_norm);
    }
    if (c.post_norms) {
      // Gemma 2/3 name the four norms by position around each block.
      fn({p + "post_attention_layernorm.weight", {d}, true}, l.post_attn_norm);
      fn({p + "pre_feedforward_layernorm.weight", {d}, true}, l.mlp_norm);
      fn({p + "post_feedforward_layernorm.weight", {d}, true}, l.post_mlp_norm);
    } else {
      // Gemma 1's "post_attention_layernorm" is the norm in front of the MLP.
      fn({p + "post_attention_layernorm.weight", {d}, true}, l.mlp_norm);
    }
    fn({p + "mlp.gate_proj.weight", {c.intermediate_size, d}, false}, l.gate_proj);
    fn({p + "mlp.up_proj.weight", {c.intermediate_size, d}, false}, l.up_proj);
    fn({p + "mlp.down_proj.weight", {d, c.intermediate_size}, false}, l.down_proj);
  }
  fn({"model.norm.weight", {d}, true}, w.final_norm);
}

std::vector<GemmaParameter> GemmaParameters(const ModelConfig& config) {
  std::vector<GemmaParameter> out;
  GemmaWeights scratch;
  ForEachGemmaParameter(config, scratch,
                        [&](const GemmaParameter& p, Tensor&) { out.push_back(p); });
  return out;
}

GemmaWeights LoadGemmaWeights(const ModelConfig& config, const TensorSource& source) {
  return LoadGemmaShard(config, WholeGemma(config), source);
}

}  // namespace gemmapod
