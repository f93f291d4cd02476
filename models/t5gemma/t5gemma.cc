#include "models/t5gemma/t5gemma.h"

#include <algorithm>

#include "models/layers/attention.h"
#include "models/layers/device_tensors.h"
#include "models/layers/geglu_mlp.h"
#include "models/layers/self_attention_block.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/comm/communicator.h"
#include "runtime/cpu/ops.h"
#include "runtime/error.h"
#include "runtime/ops/ops.h"

namespace gemmapod {
namespace {

void RmsNormRows(const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  ops::RmsNorm(x, weight, eps, out);
}

// h += [post_norm](block_out), after the row-parallel block's partial sums are reduced.
void AddResidual(Tensor& h, Tensor& block_out, const Tensor& post_norm, float eps) {
  RmsNormRows(block_out, post_norm, eps, block_out);
  ops::Add(h, block_out, h);
}

}  // namespace

// One layer's activations, reused by every layer of a stage.
struct LayerBuffers {
  // On the device of the activation `h` [T, d].
  LayerBuffers(const Tensor& h, int64_t q_width, int64_t kv_width, int64_t ffn)
      : normed(ActivationLike(h, {h.dim(0), h.dim(1)})),
        block_out(ActivationLike(h, {h.dim(0), h.dim(1)})),
        q(ActivationLike(h, {h.dim(0), q_width})),
        k(ActivationLike(h, {h.dim(0), kv_width})),
        v(ActivationLike(h, {h.dim(0), kv_width})),
        attn(ActivationLike(h, {h.dim(0), q_width})),
        gate(ActivationLike(h, {h.dim(0), ffn})),
        up(ActivationLike(h, {h.dim(0), ffn})),
        hidden(ActivationLike(h, {h.dim(0), ffn})) {}
  Tensor normed, block_out, q, k, v, attn, gate, up, hidden;
};

namespace {

AttentionShape ShapeOf(const ModelConfig& c, const GemmaShard& s, bool sliding) {
  return {s.heads,
          s.kv_heads,
          c.head_dim,
          c.attention_scale(),
          static_cast<float>(c.attn_logit_softcap),
          sliding ? c.sliding_window : 0};
}

}  // namespace

EncoderBatch LayOutEncoderBatch(const std::vector<std::vector<int32_t>>& sequences, int32_t pad_id,
                                std::vector<int32_t>& tokens) {
  GEMMAPOD_CHECK(!sequences.empty(), "encoder: no sequences");
  EncoderBatch b;
  tokens.clear();
  for (size_t s = 0; s < sequences.size(); ++s) {
    GEMMAPOD_CHECK(!sequences[s].empty(), "encoder: sequence ", s, " has no tokens");
    b.offset.push_back(static_cast<int64_t>(tokens.size()));
    b.length.push_back(static_cast<int64_t>(sequences[s].size()));
    for (size_t i = 0; i < sequences[s].size(); ++i) {
      tokens.push_back(sequences[s][i]);
      b.positions.push_back(static_cast<int32_t>(i));
      b.valid.push_back(sequences[s][i] != pad_id ? 1 : 0);
    }
  }
  return b;
}

int64_t T5GemmaDecodeState::bytes() const {
  int64_t total = self ? static_cast<int64_t>(self->bytes()) : 0;
  for (const CrossMemory& m : cross) {
    for (size_t l = 0; l < m.keys.size(); ++l) {
      total += static_cast<int64_t>(m.keys[l].nbytes() + m.values[l].nbytes());
    }
  }
  return total;
}

T5Gemma::T5Gemma(T5GemmaConfig config, T5GemmaShard shard, T5GemmaWeights weights, Communicator* tp)
    : config_(std::move(config)), shard_(shard), tp_(tp) {
  Validate(config_, "T5Gemma config");
  GEMMAPOD_CHECK(shard_.has_encoder || shard_.has_decoder, "T5Gemma: the shard holds no layers");
  if (shard_.has_encoder) {
    encoder_.emplace(config_.encoder, shard_.encoder, std::move(weights.encoder), tp);
  }
  if (shard_.has_decoder) {
    decoder_.emplace(config_.decoder, shard_.decoder, std::move(weights.decoder), tp);
    cross_ = std::move(weights.cross);
    GEMMAPOD_CHECK(static_cast<int64_t>(cross_.size()) == config_.decoder.num_layers,
                   "T5Gemma: ", cross_.size(), " cross-attention blocks for ",
                   config_.decoder.num_layers, " decoder layers");
  }
}

const GemmaStage& T5Gemma::encoder() const {
  GEMMAPOD_CHECK(encoder_.has_value(), "T5Gemma: this rank holds no encoder layers");
  return *encoder_;
}

const GemmaStage& T5Gemma::decoder() const {
  GEMMAPOD_CHECK(decoder_.has_value(), "T5Gemma: this rank holds no decoder layers");
  return *decoder_;
}

void T5Gemma::set_matmul_precision(cpu::MatmulPrecision p) {
  precision_ = p;
  if (encoder_) encoder_->set_matmul_precision(p);
  if (decoder_) decoder_->set_matmul_precision(p);
}

Communicator* T5Gemma::TpGroup() const { return tp_ != nullptr && tp_->size() > 1 ? tp_ : nullptr; }

void T5Gemma::OutputResidual(Tensor& h, const Linear& o_proj, const Tensor& post_norm, float eps,
                             LayerBuffers& b) const {
  RowParallelLinear(o_proj, TpGroup()).Forward(b.attn, b.block_out, precision_);
  AddResidual(h, b.block_out, post_norm, eps);
}

void T5Gemma::MlpResidual(Tensor& h, const GemmaLayerWeights& w, float eps, LayerBuffers& b,
                          ActivationStore* store, int64_t layer) const {
  SaveActivation(store, layer, "mlp_input", h);
  RmsNormRows(h, w.mlp_norm, eps, b.normed);
  GegluMlpForward(b.normed, {w.gate_proj, w.up_proj, w.down_proj}, TpGroup(), b.gate, b.up,
                  b.hidden, b.block_out, precision_);
  SaveActivation(store, layer, "mlp_normed", b.normed);
  SaveActivation(store, layer, "mlp_gate", b.gate);
  SaveActivation(store, layer, "mlp_up", b.up);
  SaveActivation(store, layer, "mlp_hidden", b.hidden);
  SaveActivation(store, layer, "mlp_block_output", b.block_out);
  AddResidual(h, b.block_out, w.post_mlp_norm, eps);
}

Tensor T5Gemma::EmbedEncoder(std::span<const int32_t> tokens) const {
  return encoder().Embed(tokens);
}

void T5Gemma::RunEncoderLayers(Tensor& h, const EncoderBatch& batch) {
  const ModelConfig& c = config_.encoder;
  const GemmaShard& s = shard_.encoder;
  const GemmaWeights& weights = encoder().weights();
  const int64_t T = h.dim(0), d = c.hidden_size, hd = c.head_dim;
  const int64_t H = s.heads, KV = s.kv_heads;
  const float eps = static_cast<float>(c.rms_norm_eps);
  GEMMAPOD_CHECK(h.dim(1) == d && T == batch.rows(), "T5Gemma encoder: activation ", h.Describe(),
                 " is not [", batch.rows(), ", ", d, "]");
  LayerBuffers b(h, H * hd, KV * hd, s.ffn);
  Tensor &normed = b.normed, &q = b.q, &k = b.k, &v = b.v, &attn = b.attn;
  for (int64_t l = s.first_layer; l < s.end_layer; ++l) {
    const GemmaLayerWeights& w = weights.layers[static_cast<size_t>(l)];
    const bool sliding = c.layer_kinds[static_cast<size_t>(l)] == AttentionKind::kSliding;
    const AttentionShape shape = ShapeOf(c, s, sliding);
    const float theta = static_cast<float>(sliding ? c.rope_theta_local : c.rope_theta_global);

    // e += post(self_attn(pre(e))): every token sees every unpadded token (in its window).
    SaveActivation(encoder_store_, l, ActivationStore::kInput, h);
    RmsNormRows(h, w.attn_norm, eps, normed);
    ColumnParallelLinear(w.q_proj).Forward(normed, q, precision_);
    ColumnParallelLinear(w.k_proj).Forward(normed, k, precision_);
    ColumnParallelLinear(w.v_proj).Forward(normed, v, precision_);
    ops::RopeHalfSplit(q, H, hd, batch.positions, {theta, 1.0f, 1.0f});
    ops::RopeHalfSplit(k, KV, hd, batch.positions, {theta, 1.0f, 1.0f});
    for (size_t b = 0; b < batch.offset.size(); ++b) {
      const int64_t off = batch.offset[b], end = off + batch.length[b];
      Tensor attn_rows = attn.Slice(off, end);
      FullAttention(shape, q.Slice(off, end), k.Slice(off, end), v.Slice(off, end),
                    batch.valid.data() + off, attn_rows);
    }
    SaveActivation(encoder_store_, l, "attention_normed", normed);
    SaveActivation(encoder_store_, l, "q", q);
    SaveActivation(encoder_store_, l, "k", k);
    SaveActivation(encoder_store_, l, "v", v);
    SaveActivation(encoder_store_, l, "attention_output", attn);
    OutputResidual(h, w.o_proj, w.post_attn_norm, eps, b);

    MlpResidual(h, w, eps, b, encoder_store_, l);  // e += post(mlp(pre(e)))
  }
}

Tensor T5Gemma::FinishEncoder(const Tensor& h) const {
  GEMMAPOD_CHECK(shard_.has_encoder && shard_.encoder.has_head,
                 "T5Gemma: only the last encoder stage holds the encoder's final norm");
  Tensor out = ActivationLike(h, {h.dim(0), h.dim(1)});
  RmsNormRows(h, encoder().weights().final_norm, static_cast<float>(config_.encoder.rms_norm_eps),
              out);
  return out;
}

T5GemmaDecodeState T5Gemma::NewDecodeState(int64_t num_sequences, int64_t max_context) const {
  T5GemmaDecodeState state;
  state.cross.resize(static_cast<size_t>(num_sequences));
  if (shard_.has_decoder) state.self.emplace(decoder().NewCache(num_sequences, max_context));
  return state;
}

void T5Gemma::SetEncoderMemory(const Tensor& memory, const EncoderBatch& batch,
                               T5GemmaDecodeState& state,
                               std::span<const int64_t> sequences) const {
  const GemmaShard& s = shard_.decoder;
  const int64_t rows = batch.rows(), width = s.kv_heads * config_.decoder.head_dim;
  GEMMAPOD_CHECK(memory.dim(0) == rows && memory.dim(1) == config_.encoder.hidden_size,
                 "T5Gemma: encoder output ", memory.Describe(), " is not [", rows, ", ",
                 config_.encoder.hidden_size, "]");
  GEMMAPOD_CHECK(static_cast<int64_t>(batch.offset.size()) <= state.num_sequences(),
                 "T5Gemma: ", batch.offset.size(), " encoded sequences for a state of ",
                 state.num_sequences());
  GEMMAPOD_CHECK(sequences.empty() || sequences.size() == batch.offset.size(),
                 "T5Gemma: ", sequences.size(), " sequence slots for ", batch.offset.size(),
                 " encoded");
  std::vector<int64_t> slot(batch.offset.size());
  for (size_t b = 0; b < slot.size(); ++b) {
    slot[b] = sequences.empty() ? static_cast<int64_t>(b) : sequences[b];
    GEMMAPOD_CHECK(slot[b] >= 0 && slot[b] < state.num_sequences(), "T5Gemma: sequence ", slot[b],
                   " outside a state of ", state.num_sequences());
  }
  for (size_t b = 0; b < batch.offset.size(); ++b) {
    T5GemmaDecodeState::CrossMemory& m = state.cross[static_cast<size_t>(slot[b])];
    m.length = batch.length[b];
    m.valid.assign(batch.valid.begin() + batch.offset[b],
                   batch.valid.begin() + batch.offset[b] + batch.length[b]);
    m.keys.clear();
    m.values.clear();
    if (state.self) state.self->Reset(slot[b]);
  }
  if (!shard_.has_decoder) return;
  Tensor k = ActivationLike(memory, {rows, width}), v = ActivationLike(memory, {rows, width});
  for (int64_t l = s.first_layer; l < s.end_layer; ++l) {
    const CrossAttentionWeights& w = cross_[static_cast<size_t>(l)];
    // Computed once per request: every decode step reads them.
    ColumnParallelLinear(w.k_proj).Forward(memory, k, precision_);
    ColumnParallelLinear(w.v_proj).Forward(memory, v, precision_);
    for (size_t b = 0; b < batch.offset.size(); ++b) {
      T5GemmaDecodeState::CrossMemory& m = state.cross[static_cast<size_t>(slot[b])];
      m.keys.push_back(CopyOf(k.Slice(batch.offset[b], batch.offset[b] + batch.length[b])));
      m.values.push_back(CopyOf(v.Slice(batch.offset[b], batch.offset[b] + batch.length[b])));
    }
  }
}

Tensor T5Gemma::EmbedDecoder(std::span<const int32_t> tokens) const {
  return decoder().Embed(tokens);
}

void T5Gemma::RunDecoderLayers(Tensor& h, const BatchLayout& layout, T5GemmaDecodeState& state) {
  const ModelConfig& c = config_.decoder;
  const GemmaShard& s = shard_.decoder;
  const GemmaWeights& weights = decoder().weights();
  GEMMAPOD_CHECK(state.self.has_value(), "T5Gemma: the decode state holds no decoder cache");
  const int64_t d = c.hidden_size, hd = c.head_dim;
  const int64_t H = s.heads, KV = s.kv_heads;
  const float eps = static_cast<float>(c.rms_norm_eps);
  GEMMAPOD_CHECK(h.dim(1) == d, "T5Gemma decoder: activation ", h.Describe(), " is not [T, ", d,
                 "]");
  for (int64_t seq : layout.sequence) {
    const auto& m = state.cross[static_cast<size_t>(seq)];
    GEMMAPOD_CHECK(
        m.length > 0 && static_cast<int64_t>(m.keys.size()) == s.end_layer - s.first_layer,
        "T5Gemma: sequence ", seq, " has no encoder output (SetEncoderMemory first)");
  }
  LayerBuffers b(h, H * hd, KV * hd, s.ffn);
  Tensor &normed = b.normed, &q = b.q, &attn = b.attn;
  for (int64_t l = s.first_layer; l < s.end_layer; ++l) {
    const GemmaLayerWeights& w = weights.layers[static_cast<size_t>(l)];
    const CrossAttentionWeights& x = cross_[static_cast<size_t>(l)];
    const bool sliding = c.layer_kinds[static_cast<size_t>(l)] == AttentionKind::kSliding;

    // h += post(self_attn(pre(h))): causal, cached, as a Gemma 2 layer.
    const SelfAttentionSettings settings{
        ShapeOf(c, s, sliding),
        static_cast<float>(sliding ? c.rope_theta_local : c.rope_theta_global), 1.0f, eps};
    SaveActivation(decoder_store_, l, ActivationStore::kInput, h);
    RmsNormRows(h, w.attn_norm, eps, normed);
    SelfAttentionForward(normed, {w.q_proj, w.k_proj, w.v_proj, w.o_proj, nullptr, nullptr},
                         settings, layout, *state.self, l, TpGroup(), q, b.k, b.v, attn,
                         b.block_out, precision_);
    SaveActivation(decoder_store_, l, "attention_normed", normed);
    SaveActivation(decoder_store_, l, "q", q);
    SaveActivation(decoder_store_, l, "k", b.k);
    SaveActivation(decoder_store_, l, "v", b.v);
    SaveActivation(decoder_store_, l, "attention_output", attn);
    SaveActivation(decoder_store_, l, "attention_block_output", b.block_out);
    AddResidual(h, b.block_out, w.post_attn_norm, eps);
    SaveActivation(decoder_store_, l, "cross_input", h);

    // h += post(cross_attn(pre(h), memory)): no RoPE, every unpadded encoder row.
    RmsNormRows(h, x.pre_norm, eps, normed);
    ColumnParallelLinear(x.q_proj).Forward(normed, q, precision_);
    const AttentionShape cross_shape = ShapeOf(c, s, false);
    const size_t local = static_cast<size_t>(l - s.first_layer);
    for (size_t b = 0; b < layout.sequence.size(); ++b) {
      const auto& m = state.cross[static_cast<size_t>(layout.sequence[b])];
      const int64_t off = layout.offset[b], end = off + layout.length[b];
      Tensor attn_rows = attn.Slice(off, end);
      FullAttention(cross_shape, q.Slice(off, end), m.keys[local], m.values[local], m.valid.data(),
                    attn_rows);
    }
    SaveActivation(decoder_store_, l, "cross_normed", normed);
    SaveActivation(decoder_store_, l, "cross_q", q);
    SaveActivation(decoder_store_, l, "cross_attention_output", attn);
    OutputResidual(h, x.o_proj, x.post_norm, eps, b);

    MlpResidual(h, w, eps, b, decoder_store_, l);  // h += post(mlp(pre(h)))
  }
}

Tensor T5Gemma::Logits(const Tensor& h) const { return GatherLogits(LogitShard(h)); }

Tensor T5Gemma::LogitShard(const Tensor& h) const { return decoder().LogitShard(h); }

Tensor T5Gemma::GatherLogits(const Tensor& shard) const { return decoder().GatherLogits(shard); }

Tensor T5Gemma::Forward(const std::vector<std::vector<int32_t>>& encoder_tokens,
                        const std::vector<std::vector<int32_t>>& decoder_tokens) {
  GEMMAPOD_CHECK(shard_.has_encoder && shard_.has_decoder && shard_.encoder.has_embedding &&
                     shard_.encoder.has_head && shard_.decoder.has_embedding &&
                     shard_.decoder.has_head,
                 "T5Gemma::Forward needs the whole model on this rank");
  GEMMAPOD_CHECK(encoder_tokens.size() == decoder_tokens.size(), "T5Gemma: ", encoder_tokens.size(),
                 " encoder sequences but ", decoder_tokens.size(), " decoder sequences");
  std::vector<int32_t> tokens;
  const EncoderBatch batch = LayOutEncoderBatch(encoder_tokens, config_.encoder.pad_id, tokens);
  Tensor e = EmbedEncoder(tokens);
  RunEncoderLayers(e, batch);
  const Tensor memory = FinishEncoder(e);

  int64_t longest = 1;
  std::vector<SequenceChunk> chunks;
  for (size_t b = 0; b < decoder_tokens.size(); ++b) {
    longest = std::max<int64_t>(longest, static_cast<int64_t>(decoder_tokens[b].size()));
    chunks.push_back({static_cast<int64_t>(b), decoder_tokens[b]});
  }
  T5GemmaDecodeState state = NewDecodeState(static_cast<int64_t>(chunks.size()), longest);
  SetEncoderMemory(memory, batch, state);
  const BatchLayout layout = LayOutBatch(chunks, *state.self, tokens);
  Tensor h = EmbedDecoder(tokens);
  RunDecoderLayers(h, layout, state);
  return Logits(h);
}

T5Gemma LoadT5GemmaCheckpoint(const std::string& path) {
  const std::unique_ptr<Hdf5CheckpointReader> reader = Hdf5CheckpointReader::Open(path);
  T5GemmaConfig config = T5GemmaFromAttributes(reader->config(), path);
  T5GemmaWeights weights = LoadT5GemmaShard(config, WholeT5Gemma(config), *reader);
  return T5Gemma(std::move(config), std::move(weights));
}

void SaveT5GemmaCheckpoint(const std::string& path, const T5GemmaConfig& config,
                           T5GemmaWeights& weights, const std::optional<std::string>& tokenizer) {
  Hdf5CheckpointWriter writer = Hdf5CheckpointWriter::Create(path);
  writer.SetConfig(ToAttributes(config));
  ForEachT5GemmaShardParameter(config, WholeT5Gemma(config), weights,
                               [&](const GemmaParameter& p, const ParameterSlice&, Tensor& slot) {
                                 GEMMAPOD_CHECK(slot.shape() == p.shape, "save ", path,
                                                ": tensor '", p.name, "' has shape ",
                                                ShapeToString(slot.shape()),
                                                " but the config needs ", ShapeToString(p.shape));
                                 writer.Write(p.name, slot);
                               });
  if (tokenizer) writer.WriteFile("tokenizer.model", *tokenizer);
  writer.Commit();
}

}  // namespace gemmapod
