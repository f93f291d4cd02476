#include "models/gemma/gemma_stage.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "models/layers/device_tensors.h"
#include "models/layers/geglu_mlp.h"
#include "runtime/comm/communicator.h"
#include "runtime/cpu/ops.h"
#include "runtime/error.h"
#include "runtime/ops/ops.h"

namespace gemmapod {
namespace {

void RmsNormRows(const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  ops::RmsNorm(x, weight, eps, out);
}

}  // namespace

BatchLayout LayOutBatch(std::span<const SequenceChunk> batch, const KvCache& cache,
                        std::vector<int32_t>& tokens) {
  BatchLayout layout;
  tokens.clear();
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
  GEMMAPOD_CHECK(!tokens.empty(), "forward: empty batch");
  return layout;
}

Tensor LastTokenRows(const Tensor& h, const BatchLayout& layout) {
  const int64_t d = h.dim(1);
  Tensor last = ActivationLike(h, {static_cast<int64_t>(layout.sequence.size()), d});
  std::vector<int64_t> rows(layout.sequence.size());
  for (size_t b = 0; b < rows.size(); ++b) rows[b] = layout.offset[b] + layout.length[b] - 1;
  ops::GatherRows(h, nullptr, rows, 1.0f, last);
  return last;
}

GemmaStage::GemmaStage(ModelConfig config, GemmaShard shard, GemmaWeights weights, Communicator* tp)
    : config_(std::move(config)), shard_(shard), weights_(std::move(weights)), tp_(tp) {
  Validate(config_, "model config");
  GEMMAPOD_CHECK(static_cast<int64_t>(weights_.layers.size()) == config_.num_layers,
                 "GemmaStage: ", weights_.layers.size(), " layers of weights for a ",
                 config_.num_layers, "-layer config");
  GEMMAPOD_CHECK(shard_.tp == 1 ||
                     (tp_ != nullptr && tp_->size() == shard_.tp && tp_->rank() == shard_.tp_rank),
                 "GemmaStage: the shard is rank ", shard_.tp_rank, " of tp ", shard_.tp,
                 " but the tensor-parallel communicator does not match");
}

KvCache GemmaStage::NewCache(int64_t num_sequences, int64_t max_context, const KvPool& pool) const {
  // On the device the weights live on (every stage holds its layers' norms).
  const Device device = weights_.layers[static_cast<size_t>(shard_.first_layer)].attn_norm.device();
  if (pool.block_tokens > 0) {
    return KvCache(config_, num_sequences, max_context, shard_.kv_heads, shard_.first_layer,
                   shard_.end_layer, pool, device);
  }
  return KvCache(config_, num_sequences, max_context, shard_.kv_heads, shard_.first_layer,
                 shard_.end_layer, device);
}

VocabSlice GemmaStage::Vocab() const {
  return {config_.vocab_size, shard_.vocab_begin, shard_.vocab_rows, shard_.vocab_valid};
}

Tensor GemmaStage::Embed(std::span<const int32_t> tokens) const {
  GEMMAPOD_CHECK(shard_.has_embedding, "GemmaStage: only the first stage embeds tokens");
  const Linear& table = weights_.embed_tokens;
  return VocabParallelEmbedding(table, Vocab(), config_.EmbedScale(table.weight.dtype()), TpGroup())
      .Forward(tokens);
}

void GemmaStage::RunLayers(Tensor& h, const BatchLayout& layout, KvCache& cache) {
  const ModelConfig& c = config_;
  const int64_t T = h.dim(0), d = c.hidden_size, hd = c.head_dim;
  const int64_t H = shard_.heads, KV = shard_.kv_heads, ffn = shard_.ffn;
  const float eps = static_cast<float>(c.rms_norm_eps);
  GEMMAPOD_CHECK(h.dim(1) == d, "GemmaStage: activation ", h.Describe(), " is not [T, ", d, "]");

  Tensor normed = ActivationLike(h, {T, d}), block_out = ActivationLike(h, {T, d});
  Tensor q = ActivationLike(h, {T, H * hd}), k = ActivationLike(h, {T, KV * hd}),
         v = ActivationLike(h, {T, KV * hd}), attn = ActivationLike(h, {T, H * hd});
  Tensor gate = ActivationLike(h, {T, ffn}), up = ActivationLike(h, {T, ffn}),
         hidden = ActivationLike(h, {T, ffn});

  for (int64_t l = shard_.first_layer; l < shard_.end_layer; ++l) {
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
    SaveActivation(store_, l, ActivationStore::kInput, h);
    RmsNormRows(h, w.attn_norm, eps, normed);
    SelfAttentionForward(normed, attention, settings, layout, cache, l, TpGroup(), q, k, v, attn,
                         block_out, precision_);
    SaveActivation(store_, l, "attention_normed", normed);
    SaveActivation(store_, l, "q", q);
    SaveActivation(store_, l, "k", k);
    SaveActivation(store_, l, "v", v);
    SaveActivation(store_, l, "attention_output", attn);
    SaveActivation(store_, l, "attention_block_output", block_out);
    if (c.post_norms) RmsNormRows(block_out, w.post_attn_norm, eps, block_out);
    ops::Add(h, block_out, h);
    SaveActivation(store_, l, "mlp_input", h);

    // h = h + [post_norm](mlp(norm(h)))
    RmsNormRows(h, w.mlp_norm, eps, normed);
    GegluMlpForward(normed, {w.gate_proj, w.up_proj, w.down_proj}, TpGroup(), gate, up, hidden,
                    block_out, precision_);
    SaveActivation(store_, l, "mlp_normed", normed);
    SaveActivation(store_, l, "mlp_gate", gate);
    SaveActivation(store_, l, "mlp_up", up);
    SaveActivation(store_, l, "mlp_hidden", hidden);
    SaveActivation(store_, l, "mlp_block_output", block_out);
    if (c.post_norms) RmsNormRows(block_out, w.post_mlp_norm, eps, block_out);
    ops::Add(h, block_out, h);
  }
}

VocabParallelHead GemmaStage::Head() const {
  return VocabParallelHead(weights_.embed_tokens, Vocab(),
                           static_cast<float>(config_.final_logit_softcap), TpGroup());
}

Tensor GemmaStage::LogitShard(const Tensor& h) const {
  GEMMAPOD_CHECK(shard_.has_head, "GemmaStage: only the last stage computes logits");
  Tensor normed = ActivationLike(h, {h.dim(0), config_.hidden_size});
  RmsNormRows(h, weights_.final_norm, static_cast<float>(config_.rms_norm_eps), normed);
  return Head().LogitShard(normed, precision_);
}

Tensor GemmaStage::GatherLogits(const Tensor& shard) const { return Head().Gather(shard); }

}  // namespace gemmapod
