#include "models/recurrent_gemma/recurrent_gemma.h"

#include <algorithm>
#include <cmath>

#include "models/layers/device_tensors.h"
#include "models/layers/geglu_mlp.h"
#include "models/layers/parallel.h"
#include "models/layers/recurrent_block.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/comm/communicator.h"
#include "runtime/error.h"
#include "runtime/ops/ops.h"

namespace gemmapod {
namespace {}  // namespace

RecurrentGemmaState::RecurrentGemmaState(const RecurrentGemmaConfig& c, int64_t num_sequences,
                                         const RecurrentGemmaShard& shard, Device device)
    : num_sequences_(num_sequences), window_(c.attention_window) {
  const int64_t S = num_sequences;
  recurrent_.resize(static_cast<size_t>(c.num_layers));
  attention_.resize(static_cast<size_t>(c.num_layers));
  for (int64_t l = shard.first_layer; l < shard.end_layer; ++l) {
    if (c.blocks[static_cast<size_t>(l)] == TemporalBlock::kRecurrent) {
      recurrent_[static_cast<size_t>(l)] = {ZerosOn(device, {S, c.conv1d_width - 1, shard.lru}),
                                            ZerosOn(device, {S, shard.lru})};
    } else {
      const int64_t kv = c.num_kv_heads * c.head_dim;
      attention_[static_cast<size_t>(l)] = {ZerosOn(device, {S, window_, kv}),
                                            ZerosOn(device, {S, window_, kv})};
    }
  }
  seen_.assign(static_cast<size_t>(S), 0);
  next_position_.assign(static_cast<size_t>(S), 0);
  document_.assign(static_cast<size_t>(S), 0);
  slot_token_.assign(static_cast<size_t>(S * window_), -1);
  slot_document_.assign(static_cast<size_t>(S * window_), -1);
  conv_history_ = c.conv1d_width - 1;
  recent_document_.assign(static_cast<size_t>(S * conv_history_), -1);
}

int64_t RecurrentGemmaState::bytes() const {
  int64_t total = 0;
  for (const RecurrentLayer& r : recurrent_) {
    if (r.conv.defined()) total += static_cast<int64_t>(r.conv.nbytes() + r.lru.nbytes());
  }
  for (const AttentionLayer& a : attention_) {
    if (a.keys.defined()) total += static_cast<int64_t>(a.keys.nbytes() + a.values.nbytes());
  }
  total += static_cast<int64_t>((slot_token_.size() + slot_document_.size()) * sizeof(int64_t));
  total += static_cast<int64_t>(seen_.size() * (2 * sizeof(int64_t) + sizeof(int32_t)) +
                                recent_document_.size() * sizeof(int64_t));
  return total;
}

int64_t RecurrentGemmaState::BytesFor(const RecurrentGemmaConfig& c, int64_t S,
                                      const RecurrentGemmaShard& shard) {
  const int64_t f32 = 4, history = c.conv1d_width - 1, W = c.attention_window;
  int64_t total = 0;
  for (int64_t l = shard.first_layer; l < shard.end_layer; ++l) {
    total += c.blocks[static_cast<size_t>(l)] == TemporalBlock::kRecurrent
                 ? S * (history + 1) * shard.lru * f32
                 : 2 * S * W * c.num_kv_heads * c.head_dim * f32;
  }
  // Ring slots' tokens and documents, per sequence counters, the convolution inputs' documents.
  return total + S * (2 * W * 8 + 2 * 8 + 4 + history * 8);
}

void RecurrentGemmaState::Reset(int64_t s) {
  GEMMAPOD_CHECK(s >= 0 && s < num_sequences_, "RecurrentGemmaState: no sequence ", s);
  for (RecurrentLayer& r : recurrent_) {
    if (!r.conv.defined()) continue;
    for (Tensor* held : {&r.conv, &r.lru}) {
      Tensor row = held->Slice(s, s + 1).Reshape({1, held->numel() / num_sequences_});
      ops::FillColumns(row, 0, row.dim(1), 0.0f);
    }
  }
  seen_[static_cast<size_t>(s)] = 0;
  next_position_[static_cast<size_t>(s)] = 0;
  document_[static_cast<size_t>(s)] = 0;
  std::fill_n(slot_token_.begin() + s * window_, window_, -1);
  std::fill_n(slot_document_.begin() + s * window_, window_, -1);
  std::fill_n(recent_document_.begin() + s * conv_history_, conv_history_, -1);
}

void RecurrentGemmaState::FillForBenchmark(int64_t s, int64_t tokens, uint32_t seed) {
  Reset(s);
  uint32_t x = seed * 2654435761u + 1;
  auto next = [&] {
    x = x * 1664525u + 1013904223u;
    return static_cast<float>(x >> 8) / 16777216.0f - 0.5f;
  };
  auto fill = [&](Tensor& t) {
    if (!t.defined()) return;
    GEMMAPOD_CHECK(t.device().is_cpu(), "FillForBenchmark: a state on ", t.device().ToString(),
                   " (benchmarks fill host states)");
    const int64_t per = t.numel() / num_sequences_;
    for (int64_t i = 0; i < per; ++i) t.data<float>()[s * per + i] = next();
  };
  for (RecurrentLayer& r : recurrent_) {
    fill(r.conv);
    fill(r.lru);
  }
  for (AttentionLayer& a : attention_) {
    fill(a.keys);
    fill(a.values);
  }
  for (int64_t t = std::max<int64_t>(0, tokens - window_); t < tokens; ++t) {
    slot_token_[static_cast<size_t>(s * window_ + t % window_)] = t;
    slot_document_[static_cast<size_t>(s * window_ + t % window_)] = 0;
  }
  for (int64_t i = 0; i < conv_history_; ++i) {
    recent_document_[static_cast<size_t>(s * conv_history_ + i)] =
        tokens - conv_history_ + i >= 0 ? 0 : -1;
  }
  seen_[static_cast<size_t>(s)] = tokens;
  next_position_[static_cast<size_t>(s)] = static_cast<int32_t>(tokens);
}

RecurrentGemma::RecurrentGemma(RecurrentGemmaConfig config, RecurrentGemmaWeights weights)
    : RecurrentGemma(config, WholeRecurrentGemma(config), std::move(weights), nullptr) {}

RecurrentGemma::RecurrentGemma(RecurrentGemmaConfig config, RecurrentGemmaShard shard,
                               RecurrentGemmaWeights weights, Communicator* tp)
    : config_(std::move(config)), shard_(shard), weights_(std::move(weights)), tp_(tp) {
  Validate(config_, "RecurrentGemma");
  GEMMAPOD_CHECK(shard_.tp == 1 || (tp_ != nullptr && tp_->size() == shard_.tp),
                 "RecurrentGemma: a tp=", shard_.tp, " shard needs its tensor-parallel group");
}

std::vector<int64_t> RecurrentGemma::DocumentStarts(const RecurrentPlacement& at,
                                                    const RecurrentGemmaState& state) const {
  const int64_t s = at.sequence, W = config_.attention_window;
  const auto S = static_cast<size_t>(s);
  const int64_t seen = state.seen_[S];
  // The current document's oldest token in the ring (its older tokens are out of every window).
  int64_t ring_start = seen;
  for (int64_t slot = 0; slot < W; ++slot) {
    const int64_t token = state.slot_token_[S * W + slot];
    if (token >= 0 && state.slot_document_[S * W + slot] == state.document_[S]) {
      ring_start = std::min(ring_start, token);
    }
  }
  std::vector<int64_t> starts(at.doc.size());
  for (size_t t = 0; t < at.doc.size(); ++t) {
    if (at.doc[t] == state.document_[S] && state.seen_[S] > 0) {
      starts[t] = ring_start;
    } else {
      starts[t] = t > 0 && at.doc[t] == at.doc[t - 1] ? starts[t - 1] : at.index[t];
    }
  }
  return starts;
}

void RecurrentGemma::LocalAttention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const KeyRing& ring, const std::vector<int64_t>& lo,
                                    const std::vector<int64_t>& hi, Tensor& out) const {
  const RecurrentGemmaConfig& c = config_;
  const int64_t T = q.dim(0), H = shard_.heads, hd = c.head_dim, KV = c.num_kv_heads;
  const int64_t start = ring.to, heads_per_kv = c.num_heads / KV;
  // This rank holds query heads [first_head, first_head + H) of the model; query head g of the
  // model reads key/value head g / heads_per_kv.
  const int64_t first_head = shard_.tp_rank * H;
  const int64_t first_kv = first_head / heads_per_kv;
  const int64_t local_kv = (first_head + H - 1) / heads_per_kv - first_kv + 1;
  AttentionShape shape{H, local_kv, hd, 1.0f / std::sqrt(static_cast<float>(hd)), 0.0f, 0};
  shape.first_kv_head = first_kv;
  bool grouped = H % local_kv == 0;
  for (int64_t h = 0; grouped && h < H; ++h) {
    grouped = (first_head + h) / heads_per_kv - first_kv == h / (H / local_kv);
  }
  if (grouped) {  // the usual case: one call for every head
    RingAttention(shape, q, k, v, start, ring, lo, hi, out);
    return;
  }
  // A tensor-parallel split that cuts a group of query heads unevenly: one head at a time.
  shape.num_heads = shape.num_kv_heads = 1;
  Tensor q_head = ActivationLike(q, {T, hd}), out_head = ActivationLike(q, {T, hd});
  for (int64_t h = 0; h < H; ++h) {
    shape.first_kv_head = (first_head + h) / heads_per_kv;
    ops::CopyColumns(q, h * hd, q_head, 0, hd);
    RingAttention(shape, q_head, k, v, start, ring, lo, hi, out_head);
    ops::CopyColumns(out_head, 0, out, h * hd, hd);
  }
}

RecurrentPlacement RecurrentGemma::Place(const RecurrentChunk& chunk,
                                         const RecurrentGemmaState& state) const {
  const int64_t s = chunk.sequence, T = static_cast<int64_t>(chunk.tokens.size());
  GEMMAPOD_CHECK(s >= 0 && s < state.num_sequences(), "forward: sequence ", s,
                 " outside the state's ", state.num_sequences());
  GEMMAPOD_CHECK(T > 0, "forward: sequence ", s, " brings no tokens");
  GEMMAPOD_CHECK(chunk.segment_pos.empty() || static_cast<int64_t>(chunk.segment_pos.size()) == T,
                 "forward: ", chunk.segment_pos.size(), " segment positions for ", T, " tokens");
  const auto S = static_cast<size_t>(s);
  RecurrentPlacement at;
  at.sequence = s;
  at.pos.resize(static_cast<size_t>(T));
  at.doc.resize(static_cast<size_t>(T));
  at.index.resize(static_cast<size_t>(T));
  int32_t next = state.next_position_[S];
  int64_t document = state.document_[S];
  for (int64_t t = 0; t < T; ++t) {
    // Every stage checks the ids, so a bad one stops them all before any send or receive.
    const int32_t id = chunk.tokens[static_cast<size_t>(t)];
    GEMMAPOD_CHECK(id >= 0 && id < config_.vocab_size, "forward: token ", id, " (position ", t,
                   ") is outside the vocabulary of ", config_.vocab_size);
    const int32_t p = chunk.segment_pos.empty() ? next : chunk.segment_pos[static_cast<size_t>(t)];
    GEMMAPOD_CHECK(p >= 0, "forward: negative segment position ", p, " at token ", t);
    if (p == 0 && (t > 0 || state.seen_[S] > 0)) ++document;
    at.pos[static_cast<size_t>(t)] = p;
    at.doc[static_cast<size_t>(t)] = document;
    at.index[static_cast<size_t>(t)] = state.seen_[S] + t;
    next = p + 1;
  }
  return at;
}

VocabSlice RecurrentGemma::Vocab() const {
  // tp divides the vocabulary (RecurrentTensorParallelProblem), so no row is padding.
  return {config_.vocab_size, shard_.vocab_begin, shard_.vocab_rows, shard_.vocab_rows};
}

Tensor RecurrentGemma::Embed(const std::vector<int32_t>& tokens) const {
  GEMMAPOD_CHECK(shard_.has_embedding, "RecurrentGemma: only the first stage embeds tokens");
  // sqrt(d) rounded to bf16.
  return VocabParallelEmbedding(weights_.embed_tokens, Vocab(), config_.EmbedScale(), TpGroup())
      .Forward(tokens);
}

void RecurrentGemma::RunLayers(Tensor& h, const RecurrentPlacement& at,
                               RecurrentGemmaState& state) {
  const RecurrentGemmaConfig& c = config_;
  const int64_t s = at.sequence, T = h.dim(0);
  const int64_t d = c.hidden_size, lru = shard_.lru, H = shard_.heads, hd = c.head_dim;
  const int64_t KV = c.num_kv_heads, W = c.attention_window, width = c.conv1d_width;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const auto S = static_cast<size_t>(s);
  const std::vector<int32_t>& pos = at.pos;
  const std::vector<int64_t>& doc = at.doc;
  const std::vector<int64_t>& index = at.index;
  GEMMAPOD_CHECK(h.rank() == 2 && h.dim(1) == d, "RecurrentGemma: activation ", h.Describe(),
                 " is not [T, ", d, "]");
  GEMMAPOD_CHECK(state.window_ == W && state.conv_history_ == width - 1 &&
                     static_cast<int64_t>(state.recurrent_.size()) == c.num_layers,
                 "RecurrentGemma: the state was made for another config");
  for (int64_t l = shard_.first_layer; l < shard_.end_layer; ++l) {
    const bool recurrent = c.blocks[static_cast<size_t>(l)] == TemporalBlock::kRecurrent;
    const Tensor& held = recurrent ? state.recurrent_[static_cast<size_t>(l)].lru
                                   : state.attention_[static_cast<size_t>(l)].keys;
    GEMMAPOD_CHECK(held.defined() && (!recurrent || held.dim(1) == lru),
                   "RecurrentGemma: the "
                   "state does not hold layer ",
                   l, " of this shard (made for another shard?)");
  }
  const cpu::MatmulPrecision precision = precision_;
  // What each query of the chunk sees in every attention layer: its own document's keys, at most
  // W tokens back, itself included (the ring holds the last W tokens before the chunk).
  const std::vector<int64_t> doc_start = DocumentStarts(at, state);
  std::vector<int64_t> lo(static_cast<size_t>(T)), hi(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) {
    const int64_t gq = index[static_cast<size_t>(t)];
    lo[static_cast<size_t>(t)] = std::max(gq - W, doc_start[static_cast<size_t>(t)]);
    hi[static_cast<size_t>(t)] = gq + 1;
  }
  // How many earlier tokens of its document each token's convolution reads: the chunk's, then
  // the state's last width - 1 inputs (row width - 1 - j holds the input j tokens before the
  // chunk).
  std::vector<int32_t> conv_reach(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) {
    int32_t reach = 0;
    for (int64_t back = 1; back < width; ++back, ++reach) {
      const int64_t source_doc =
          t - back >= 0 ? doc[static_cast<size_t>(t - back)]
                        : state.recent_document_[S * (width - 1) + (width - 1 - (back - t))];
      if (source_doc != doc[static_cast<size_t>(t)]) break;
    }
    conv_reach[static_cast<size_t>(t)] = reach;
  }
  Tensor normed = ActivationLike(h, {T, d}), out = ActivationLike(h, {T, d});
  for (int64_t l = shard_.first_layer; l < shard_.end_layer; ++l) {
    const RecurrentGemmaLayerWeights& w = weights_.layers[static_cast<size_t>(l)];
    SaveActivation(store_, l, ActivationStore::kInput, h);
    ops::RmsNorm(h, w.temporal_pre_norm, eps, normed);
    SaveActivation(store_, l, "temporal_normed", normed);
    if (c.blocks[static_cast<size_t>(l)] == TemporalBlock::kRecurrent) {
      const RecurrentBlockWeights& r = w.recurrent;
      RecurrentGemmaState::RecurrentLayer& st = state.recurrent_[static_cast<size_t>(l)];
      RecurrentBlockState block_state{st.conv.Slice(s, s + 1).Reshape({width - 1, lru}),
                                      st.lru.Slice(s, s + 1).Reshape({lru})};
      RecurrentBlockForward(normed, r, {conv_reach, pos}, block_state, TpGroup(), precision, out,
                            store_, l);
    } else {
      const LocalAttentionWeights& a = w.attention;
      RecurrentGemmaState::AttentionLayer& st = state.attention_[static_cast<size_t>(l)];
      Tensor q = ActivationLike(h, {T, H * hd}), k = ActivationLike(h, {T, KV * hd}),
             v = ActivationLike(h, {T, KV * hd});
      ColumnParallelLinear(a.q_proj).Forward(normed, q, precision);
      ColumnParallelLinear(a.k_proj).Forward(normed, k, precision);
      ColumnParallelLinear(a.v_proj).Forward(normed, v, precision);
      const float theta = static_cast<float>(c.rope_theta);
      const float fraction = static_cast<float>(c.rotary_fraction);
      ops::RopeHalfSplit(q, H, hd, pos, {theta, fraction, 1.0f});
      ops::RopeHalfSplit(k, KV, hd, pos, {theta, fraction, 1.0f});
      SaveActivation(store_, l, "q", q);
      SaveActivation(store_, l, "k", k);
      SaveActivation(store_, l, "v", v);

      // Keys a query may read: its own document's, at most W tokens back, itself included. Older
      // ones come from the ring, which holds the last W tokens before this chunk.
      Tensor ring_keys = st.keys.Slice(s, s + 1).Reshape({W, KV * hd});
      Tensor ring_values = st.values.Slice(s, s + 1).Reshape({W, KV * hd});
      Tensor attn = ActivationLike(h, {T, H * hd});
      const int64_t seen = index[0];
      const KeyRing ring{ring_keys, ring_values, W, std::max<int64_t>(0, seen - W), seen};
      LocalAttention(q, k, v, ring, lo, hi, attn);
      SaveActivation(store_, l, "attention_output", attn);
      // This layer's ring keeps the last W tokens (which token and document each slot holds is
      // recorded once every layer has read the old ring).
      std::vector<int64_t> slots(static_cast<size_t>(T), -1);
      for (int64_t t = std::max<int64_t>(0, T - W); t < T; ++t) {
        slots[static_cast<size_t>(t)] = index[static_cast<size_t>(t)] % W;
      }
      ops::ScatterRows(k, slots, ring_keys);
      ops::ScatterRows(v, slots, ring_values);
      RowParallelLinear(a.o_proj, TpGroup()).Forward(attn, out, precision);
    }
    ops::Add(h, out, h);
    SaveActivation(store_, l, "mlp_input", h);

    // MLP: down(gelu(gate(x)) * up(x)), every projection with its bias.
    ops::RmsNorm(h, w.channel_pre_norm, eps, normed);
    SaveActivation(store_, l, "mlp_normed", normed);
    const int64_t ffn = shard_.ffn;
    Tensor gate = ActivationLike(h, {T, ffn}), up = ActivationLike(h, {T, ffn}),
           hidden = ActivationLike(h, {T, ffn});
    GegluMlpForward(normed, {w.gate_proj, w.up_proj, w.down_proj}, TpGroup(), gate, up, hidden, out,
                    precision);
    SaveActivation(store_, l, "mlp_gate", gate);
    SaveActivation(store_, l, "mlp_up", up);
    SaveActivation(store_, l, "mlp_hidden", hidden);
    ops::Add(h, out, h);
  }
}

void RecurrentGemma::Commit(const RecurrentPlacement& at, RecurrentGemmaState& state) const {
  const int64_t s = at.sequence, T = static_cast<int64_t>(at.pos.size());
  const int64_t W = config_.attention_window, width = config_.conv1d_width;
  const auto S = static_cast<size_t>(s);
  const std::vector<int64_t>& doc = at.doc;
  const std::vector<int64_t>& index = at.index;
  {
    // The document numbers of the last width - 1 tokens, as the convolution state holds them.
    const int64_t history = width - 1;
    int64_t* recent = state.recent_document_.data() + s * history;
    std::vector<int64_t> all(recent, recent + history);
    all.insert(all.end(), doc.begin(), doc.end());
    std::copy(all.end() - history, all.end(), recent);
  }
  for (int64_t t = std::max<int64_t>(0, T - W); t < T; ++t) {
    const int64_t slot = index[static_cast<size_t>(t)] % W;
    state.slot_token_[static_cast<size_t>(s * W + slot)] = index[static_cast<size_t>(t)];
    state.slot_document_[static_cast<size_t>(s * W + slot)] = doc[static_cast<size_t>(t)];
  }
  state.seen_[S] += T;
  state.next_position_[S] = at.pos.back() + 1;
  state.document_[S] = doc.back();
}

VocabParallelHead RecurrentGemma::Head() const {
  return VocabParallelHead(weights_.embed_tokens, Vocab(),
                           static_cast<float>(config_.final_logit_softcap), TpGroup());
}

Tensor RecurrentGemma::LogitShard(const Tensor& h) const {
  GEMMAPOD_CHECK(shard_.has_head, "RecurrentGemma: only the last stage computes logits");
  Tensor normed = ActivationLike(h, {h.dim(0), config_.hidden_size});
  ops::RmsNorm(h, weights_.final_norm, static_cast<float>(config_.rms_norm_eps), normed);
  return Head().LogitShard(normed, precision_);
}

Tensor RecurrentGemma::GatherLogits(const Tensor& shard) const { return Head().Gather(shard); }

Tensor RecurrentGemma::Logits(const Tensor& h, bool all_logits) const {
  const int64_t T = h.dim(0);
  return GatherLogits(LogitShard(all_logits ? h : h.Slice(T - 1, T)));
}

Tensor RecurrentGemma::Forward(const RecurrentChunk& chunk, RecurrentGemmaState& state,
                               bool all_logits) {
  GEMMAPOD_CHECK(shard_.has_embedding && shard_.has_head,
                 "RecurrentGemma::Forward runs the whole model; a pipeline stage runs its part");
  const RecurrentPlacement at = Place(chunk, state);
  Tensor h = Embed(chunk.tokens);
  RunLayers(h, at, state);
  Commit(at, state);
  return Logits(h, all_logits);
}

RecurrentGemma LoadRecurrentGemmaCheckpoint(const std::string& path) {
  const std::unique_ptr<Hdf5CheckpointReader> reader = Hdf5CheckpointReader::Open(path);
  RecurrentGemmaConfig config = RecurrentGemmaFromAttributes(reader->config(), path);
  RecurrentGemmaWeights weights = LoadRecurrentGemmaWeights(config, *reader);
  return RecurrentGemma(std::move(config), std::move(weights));
}

}  // namespace gemmapod
