#include "models/t5gemma/t5gemma_weights.h"

#include "runtime/error.h"

namespace gemmapod {
namespace {

// A Gemma parameter name ("model.layers.3.input_layernorm.weight") as T5Gemma names it in the
// stack under `prefix` ("model.encoder.layers.3.pre_self_attn_layernorm.weight").
std::string StackName(const std::string& prefix, const std::string& gemma_name) {
  std::string rest = gemma_name.substr(6);  // after "model."
  auto rename = [&](const std::string& from, const std::string& to) {
    const size_t at = rest.find(from);
    if (at != std::string::npos) rest.replace(at, from.size(), to);
  };
  rename(".input_layernorm.", ".pre_self_attn_layernorm.");
  rename(".post_attention_layernorm.", ".post_self_attn_layernorm.");
  return prefix + rest;
}

}  // namespace

T5GemmaShard WholeT5Gemma(const T5GemmaConfig& config) {
  return {true, true, WholeGemma(config.encoder), WholeGemma(config.decoder)};
}

void ForEachT5GemmaShardParameter(
    const T5GemmaConfig& c, const T5GemmaShard& s, T5GemmaWeights& w,
    const std::function<void(const GemmaParameter&, const ParameterSlice&, Tensor&)>& fn) {
  w.encoder.layers.resize(static_cast<size_t>(c.encoder.num_layers));
  w.decoder.layers.resize(static_cast<size_t>(c.decoder.num_layers));
  w.cross.resize(static_cast<size_t>(c.decoder.num_layers));
  auto stack = [&](const ModelConfig& config, const GemmaShard& shard, GemmaWeights& weights,
                   const std::string& prefix, bool head_is_tied) {
    ForEachShardParameter(config, shard, weights,
                          [&](const GemmaParameter& p, const ParameterSlice& slice, Tensor& slot) {
                            const bool embedding = p.name.rfind("model.embed_tokens.", 0) == 0;
                            // The encoder's last stage holds its final norm, not its embedding.
                            if (embedding && !head_is_tied && !shard.has_embedding) return;
                            GemmaParameter renamed = p;
                            renamed.name = StackName(prefix, p.name);
                            fn(renamed, slice, slot);
                          });
  };
  if (s.has_encoder) stack(c.encoder, s.encoder, w.encoder, "model.encoder.", false);
  if (!s.has_decoder) return;
  stack(c.decoder, s.decoder, w.decoder, "model.decoder.", true);

  const ModelConfig& d = c.decoder;
  const GemmaShard& ds = s.decoder;
  const int64_t hd = d.head_dim, width = d.hidden_size;
  const bool int8 = d.quantization == WeightQuantization::kInt8;
  const ParameterSlice whole{};
  const ParameterSlice q_rows{0, ds.tp_rank * ds.heads * hd, (ds.tp_rank + 1) * ds.heads * hd,
                              (ds.tp_rank + 1) * ds.heads * hd};
  const ParameterSlice o_cols{1, q_rows.begin, q_rows.end, q_rows.end};
  const ParameterSlice kv_rows{0, ds.kv_head_begin * hd, (ds.kv_head_begin + ds.kv_heads) * hd,
                               (ds.kv_head_begin + ds.kv_heads) * hd};
  for (int64_t i = ds.first_layer; i < ds.end_layer; ++i) {
    CrossAttentionWeights& x = w.cross[static_cast<size_t>(i)];
    const std::string p = StrCat("model.decoder.layers.", i, ".");
    // A matrix and, in int8 checkpoints, its per-row scales (split with the rows, whole when the
    // matrix is split by columns).
    auto matrix = [&](const std::string& name, Shape shape, const ParameterSlice& slice,
                      Linear& slot) {
      const int64_t rows = shape[0];
      fn({name, std::move(shape), false, false}, slice, slot.weight);
      if (int8)
        fn({name + "_scale", {rows}, false, true}, slice.dim == 0 ? slice : whole, slot.scale);
    };
    fn({p + "pre_cross_attn_layernorm.weight", {width}, true, false}, whole, x.pre_norm);
    matrix(p + "cross_attn.q_proj.weight", {d.q_width(), width}, q_rows, x.q_proj);
    matrix(p + "cross_attn.k_proj.weight", {d.kv_width(), c.encoder.hidden_size}, kv_rows,
           x.k_proj);
    matrix(p + "cross_attn.v_proj.weight", {d.kv_width(), c.encoder.hidden_size}, kv_rows,
           x.v_proj);
    matrix(p + "cross_attn.o_proj.weight", {width, d.q_width()}, o_cols, x.o_proj);
    fn({p + "post_cross_attn_layernorm.weight", {width}, true, false}, whole, x.post_norm);
  }
}

std::vector<GemmaParameter> T5GemmaParameters(const T5GemmaConfig& config) {
  std::vector<GemmaParameter> out;
  T5GemmaWeights scratch;
  ForEachT5GemmaShardParameter(
      config, WholeT5Gemma(config), scratch,
      [&](const GemmaParameter& p, const ParameterSlice&, Tensor&) { out.push_back(p); });
  return out;
}

void CheckT5GemmaTensors(const T5GemmaConfig& config, const TensorSource& source) {
  // The output head is the decoder's embedding (tied); a stored copy is dropped.
  CheckTensorsAreExactly(T5GemmaParameters(config), config.decoder, source,
                         "lm_head.out_proj.weight", StrCat("the T5Gemma config ", config.name));
}

T5GemmaWeights LoadT5GemmaShard(const T5GemmaConfig& config, const T5GemmaShard& shard,
                                const TensorSource& source, Communicator* tp) {
  CheckT5GemmaTensors(config, source);
  T5GemmaWeights w;
  ForEachT5GemmaShardParameter(
      config, shard, w, [&](const GemmaParameter& p, const ParameterSlice& slice, Tensor& slot) {
        slot = ReadParameterSlice(source, p, slice, tp);
      });
  return w;
}

int64_t T5GemmaShardWeightBytes(const T5GemmaConfig& config, const T5GemmaShard& shard,
                                int64_t matrix_bytes) {
  int64_t bytes = 0;
  T5GemmaWeights scratch;
  ForEachT5GemmaShardParameter(config, shard, scratch,
                               [&](const GemmaParameter& p, const ParameterSlice& slice, Tensor&) {
                                 bytes += NumElements(SliceShape(p, slice)) *
                                          (p.is_norm || p.is_scale ? int64_t{4} : matrix_bytes);
                               });
  return bytes;
}

}  // namespace gemmapod
