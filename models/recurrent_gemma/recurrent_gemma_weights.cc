#include "models/recurrent_gemma/recurrent_gemma_weights.h"

#include <set>

#include "runtime/error.h"

namespace gemmapod {

bool IsRecurrentGemmaMatrix(const RecurrentGemmaParameter& p) {
  return p.shape.size() == 2 && p.name.find("gate_bias") == std::string::npos;
}

void ForEachRecurrentGemmaParameter(
    const RecurrentGemmaConfig& c, RecurrentGemmaWeights& w,
    const std::function<void(const RecurrentGemmaParameter&, Tensor&)>& fn) {
  const int64_t d = c.hidden_size, lru = c.lru_width, H = c.num_heads, bw = c.lru_block_width();
  const int64_t ffn = c.intermediate_size, hd = c.head_dim, kv = c.num_kv_heads;
  auto linear = [&](const std::string& name, int64_t out, int64_t in, bool bias, Linear& slot) {
    fn({name + ".weight", {out, in}}, slot.weight);
    if (bias) fn({name + ".bias", {out}}, slot.bias);
  };
  w.layers.resize(static_cast<size_t>(c.num_layers));
  linear("model.embed_tokens", c.vocab_size, d, false, w.embed_tokens);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    RecurrentGemmaLayerWeights& l = w.layers[static_cast<size_t>(i)];
    const std::string p = StrCat("model.layers.", i, ".");
    fn({p + "temporal_pre_norm.weight", {d}}, l.temporal_pre_norm);
    const std::string t = p + "temporal_block.";
    if (c.blocks[static_cast<size_t>(i)] == TemporalBlock::kRecurrent) {
      RecurrentBlockWeights& r = l.recurrent;
      linear(t + "linear_y", lru, d, true, r.linear_y);
      linear(t + "linear_x", lru, d, true, r.linear_x);
      linear(t + "linear_out", d, lru, true, r.linear_out);
      fn({t + "conv_1d.weight", {lru, 1, c.conv1d_width}}, r.conv_weight);
      fn({t + "conv_1d.bias", {lru}}, r.conv_bias);
      fn({t + "rg_lru.recurrent_param", {lru}}, r.recurrent_param);
      fn({t + "rg_lru.input_gate_weight", {H, bw, bw}}, r.input_gate_weight);
      fn({t + "rg_lru.input_gate_bias", {H, bw}}, r.input_gate_bias);
      fn({t + "rg_lru.recurrent_gate_weight", {H, bw, bw}}, r.recurrent_gate_weight);
      fn({t + "rg_lru.recurrent_gate_bias", {H, bw}}, r.recurrent_gate_bias);
    } else {
      LocalAttentionWeights& a = l.attention;
      linear(t + "q_proj", H * hd, d, false, a.q_proj);
      linear(t + "k_proj", kv * hd, d, false, a.k_proj);
      linear(t + "v_proj", kv * hd, d, false, a.v_proj);
      linear(t + "o_proj", d, H * hd, true, a.o_proj);
    }
    fn({p + "channel_pre_norm.weight", {d}}, l.channel_pre_norm);
    linear(p + "mlp_block.gate_proj", ffn, d, true, l.gate_proj);
    linear(p + "mlp_block.up_proj", ffn, d, true, l.up_proj);
    linear(p + "mlp_block.down_proj", d, ffn, true, l.down_proj);
  }
  fn({"model.final_norm.weight", {d}}, w.final_norm);
}

std::vector<RecurrentGemmaParameter> RecurrentGemmaParameters(const RecurrentGemmaConfig& config) {
  std::vector<RecurrentGemmaParameter> out;
  RecurrentGemmaWeights scratch;
  ForEachRecurrentGemmaParameter(
      config, scratch, [&](const RecurrentGemmaParameter& p, Tensor&) { out.push_back(p); });
  return out;
}

void CheckRecurrentGemmaTensors(const RecurrentGemmaConfig& config, const TensorSource& source) {
  std::set<std::string> expected;
  for (const RecurrentGemmaParameter& p : RecurrentGemmaParameters(config)) {
    expected.insert(p.name);
    GEMMAPOD_CHECK(source.Has(p.name), source.origin(), ": tensor '", p.name,
                   "' is missing (a recurrent_gemma model with ", config.num_layers,
                   " layers needs it)");
    const TensorInfo info = source.Info(p.name);
    GEMMAPOD_CHECK(info.shape == p.shape, source.origin(), ": tensor '", p.name, "' has shape ",
                   ShapeToString(info.shape), " but the model config needs ",
                   ShapeToString(p.shape));
    GEMMAPOD_CHECK(info.dtype == DType::kF32 || info.dtype == DType::kBF16, source.origin(),
                   ": tensor '", p.name, "' is stored as ", DTypeName(info.dtype),
                   "; weights must be f32 or bf16");
  }
  for (const TensorInfo& info : source.List()) {
    if (info.name == "lm_head.weight") continue;  // tied to the embedding
    GEMMAPOD_CHECK(expected.count(info.name) == 1, source.origin(), ": unexpected tensor '",
                   info.name, "' (not a parameter of this recurrent_gemma config)");
  }
}

RecurrentGemmaWeights LoadRecurrentGemmaWeights(const RecurrentGemmaConfig& config,
                                                const TensorSource& source) {
  CheckRecurrentGemmaTensors(config, source);
  RecurrentGemmaWeights w;
  ForEachRecurrentGemmaParameter(config, w, [&](const RecurrentGemmaParameter& p, Tensor& slot) {
    Tensor t = source.Read(p.name);
    slot = IsRecurrentGemmaMatrix(p) || t.dtype() == DType::kF32 ? std::move(t) : t.To(DType::kF32);
  });
  return w;
}

}  // namespace gemmapod
