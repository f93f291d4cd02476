#include "models/gemma/gemma_weights.h"

#include <map>
#include <string_view>

#include "models/gemma/gemma_shard.h"
#include "runtime/cpu/int8_matmul.h"
#include "runtime/error.h"

namespace gemmapod {

void ForEachGemmaParameter(const ModelConfig& c, GemmaWeights& w,
                           const std::function<void(const GemmaParameter&, Tensor&)>& fn) {
  const int64_t d = c.hidden_size;
  const bool int8 = c.quantization == WeightQuantization::kInt8;
  // A matrix, followed in an int8 checkpoint by its per-row scales.
  auto matrix = [&](const std::string& name, Shape shape, Linear& slot) {
    const int64_t rows = shape[0];
    fn({name, std::move(shape), false, false}, slot.weight);
    if (int8) fn({name + "_scale", {rows}, false, true}, slot.scale);
  };
  auto norm = [&](const std::string& name, int64_t n, Tensor& slot) {
    fn({name, {n}, true, false}, slot);
  };
  w.layers.resize(static_cast<size_t>(c.num_layers));
  matrix("model.embed_tokens.weight", {c.vocab_size, d}, w.embed_tokens);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    GemmaLayerWeights& l = w.layers[static_cast<size_t>(i)];
    const std::string p = StrCat("model.layers.", i, ".");
    norm(p + "input_layernorm.weight", d, l.attn_norm);
    matrix(p + "self_attn.q_proj.weight", {c.q_width(), d}, l.q_proj);
    matrix(p + "self_attn.k_proj.weight", {c.kv_width(), d}, l.k_proj);
    matrix(p + "self_attn.v_proj.weight", {c.kv_width(), d}, l.v_proj);
    matrix(p + "self_attn.o_proj.weight", {d, c.q_width()}, l.o_proj);
    if (c.qk_norm) {
      norm(p + "self_attn.q_norm.weight", c.head_dim, l.q_norm);
      norm(p + "self_attn.k_norm.weight", c.head_dim, l.k_norm);
    }
    if (c.post_norms) {
      // Gemma 2/3 name the four norms by position around each block.
      norm(p + "post_attention_layernorm.weight", d, l.post_attn_norm);
      norm(p + "pre_feedforward_layernorm.weight", d, l.mlp_norm);
      norm(p + "post_feedforward_layernorm.weight", d, l.post_mlp_norm);
    } else {
      // Gemma 1's "post_attention_layernorm" is the norm in front of the MLP.
      norm(p + "post_attention_layernorm.weight", d, l.mlp_norm);
    }
    matrix(p + "mlp.gate_proj.weight", {c.intermediate_size, d}, l.gate_proj);
    matrix(p + "mlp.up_proj.weight", {c.intermediate_size, d}, l.up_proj);
    matrix(p + "mlp.down_proj.weight", {d, c.intermediate_size}, l.down_proj);
  }
  norm("model.norm.weight", d, w.final_norm);
  if (c.num_labels > 0) matrix("score.weight", {c.num_labels, d}, w.score);
}

void ForEachGemmaLinear(const ModelConfig& c, GemmaWeights& w,
                        const std::function<void(const std::string&, Linear&)>& fn) {
  std::map<const Tensor*, Linear*> linear_of;
  for (GemmaLayerWeights& l : w.layers) {
    for (Linear* m :
         {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.gate_proj, &l.up_proj, &l.down_proj}) {
      linear_of[&m->weight] = m;
    }
  }
  ForEachGemmaParameter(c, w, [&](const GemmaParameter& p, Tensor& slot) {
    const auto it = linear_of.find(&slot);
    if (it == linear_of.end() || p.is_scale) return;
    constexpr std::string_view kSuffix = ".weight";
    fn(p.name.substr(0, p.name.size() - kSuffix.size()), *it->second);
  });
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

namespace {

void QuantizeInPlace(Linear& m) {
  const Tensor w = m.weight.dtype() == DType::kF32 ? m.weight : m.weight.To(DType::kF32);
  const int64_t rows = w.dim(0), cols = w.dim(1);
  Tensor q = Tensor::Zeros({rows, cols}, DType::kI8);
  m.scale = Tensor::Zeros({rows}, DType::kF32);
  cpu::QuantizeRowsInt8(w.data<float>(), rows, cols, q.data<int8_t>(), m.scale.data<float>());
  m.weight = std::move(q);
}

}  // namespace

ModelConfig QuantizeGemmaWeightsInt8(const ModelConfig& config, GemmaWeights& weights) {
  GEMMAPOD_CHECK(config.quantization == WeightQuantization::kNone,
                 "QuantizeGemmaWeightsInt8: the weights are already quantized");
  QuantizeInPlace(weights.embed_tokens);
  for (GemmaLayerWeights& l : weights.layers) {
    for (Linear* m :
         {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.gate_proj, &l.up_proj, &l.down_proj}) {
      QuantizeInPlace(*m);
    }
  }
  ModelConfig out = config;
  out.quantization = WeightQuantization::kInt8;
  return out;
}

}  // namespace gemmapod
