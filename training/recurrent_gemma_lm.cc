#include "training/recurrent_gemma_lm.h"

#include <algorithm>
#include <cmath>

#include "models/layers/activation_store.h"
#include "models/layers/device_tensors.h"
#include "models/layers/parallel.h"
#include "models/layers/self_attention_block.h"
#include "runtime/error.h"
#include "runtime/ops/grad_ops.h"
#include "runtime/ops/ops.h"

namespace gemmapod {
namespace {

// What a packed batch's tokens see: each document from its own first token, the local attention
// at most `attention_window` tokens back (itself included, as inference's ring gives it), the
// convolution at most width - 1 earlier tokens of its document.
struct Reach {
  std::vector<int64_t> lo, hi;
  std::vector<int32_t> conv_reach;
  Reach(const RecurrentGemmaConfig& c, const PackedBatch& batch) {
    const auto T = static_cast<int64_t>(batch.tokens.size());
    lo.resize(T);
    hi.resize(T);
    conv_reach.resize(T);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t start = batch.sequence_start[static_cast<size_t>(t)];
      lo[t] = std::max(t - c.attention_window, start);
      hi[t] = t + 1;
      conv_reach[t] = static_cast<int32_t>(std::min<int64_t>(c.conv1d_width - 1, t - start));
    }
  }
};

SelfAttentionWeights AttentionOf(const RecurrentGemmaLayerWeights& w) {
  return {w.attention.q_proj,
          w.attention.k_proj,
          w.attention.v_proj,
          w.attention.o_proj,
          nullptr,
          nullptr};
}

// The layer's heads are those its weights hold (a tensor-parallel shard holds some).
SelfAttentionSettings AttentionSettings(const RecurrentGemmaConfig& c,
                                        const RecurrentGemmaLayerWeights& w) {
  SelfAttentionSettings s;
  s.shape = {w.attention.q_proj.weight.dim(0) / c.head_dim,
             w.attention.k_proj.weight.dim(0) / c.head_dim,
             c.head_dim,
             1.0f / std::sqrt(static_cast<float>(c.head_dim)),
             0.0f,
             0};
  s.rope_theta = static_cast<float>(c.rope_theta);
  s.rotary_fraction = static_cast<float>(c.rotary_fraction);
  s.rms_norm_eps = static_cast<float>(c.rms_norm_eps);
  return s;
}

// What a layer's backward reads (the recurrent block's own activations are in the store).
struct LayerSaved {
  Tensor input, temporal_normed;
  SelfAttentionSaved attention;
  Tensor mid, mlp_normed, gate, up, hidden;
};

struct StageActivations {
  Tensor h;  // the final norm's input
  std::vector<LayerSaved> layers;
  ActivationStore store{ActivationStore::Keep::kEverything};
};

void CheckBatch(const RecurrentGemmaConfig& c, const PackedBatch& batch) {
  CheckPackedBatch(batch);
  for (int32_t id : batch.tokens) {
    GEMMAPOD_CHECK(id >= 0 && id < c.vocab_size, "loss: token ", id,
                   " is outside the vocabulary of ", c.vocab_size);
  }
}

VocabSlice VocabOf(const RecurrentGemmaConfig& c, const LossParallelism& p) {
  return p.vocab.vocab_size > 0 ? p.vocab : VocabSlice{c.vocab_size, 0, c.vocab_size, c.vocab_size};
}

// Layers [first, end) over h (the stage's input, or the embedding's output), keeping what their
// backward reads in `f`.
void RunLayers(const RecurrentGemmaConfig& c, const RecurrentGemmaWeights& w,
               const PackedBatch& batch, const Reach& reach, const LossParallelism& par,
               int64_t first, int64_t end, Tensor h, StageActivations& f) {
  const auto T = static_cast<int64_t>(batch.tokens.size());
  const int64_t d = c.hidden_size, width = c.conv1d_width;
  const float eps = static_cast<float>(c.rms_norm_eps);
  f.layers.assign(static_cast<size_t>(end - first), LayerSaved{});
  for (int64_t l = first; l < end; ++l) {
    const RecurrentGemmaLayerWeights& lw = w.layers[static_cast<size_t>(l)];
    LayerSaved& s = f.layers[static_cast<size_t>(l - first)];
    s.input = h;
    s.temporal_normed = ActivationLike(h, {T, d});
    ops::RmsNorm(h, lw.temporal_pre_norm, eps, s.temporal_normed);
    Tensor out = ActivationLike(h, {T, d});
    if (c.blocks[static_cast<size_t>(l)] == TemporalBlock::kRecurrent) {
      // A fresh state: every document of the batch starts at position 0, which resets it.
      const int64_t lru = lw.recurrent.conv_bias.numel();  // this rank's channels
      Tensor conv_history = ZerosOn(h.device(), {width - 1, lru});
      Tensor state = ZerosOn(h.device(), {lru});
      RecurrentBlockState block_state{conv_history, state};
      RecurrentBlockForward(s.temporal_normed, lw.recurrent, {reach.conv_reach, batch.positions},
                            block_state, par.tp, MatmulPrecision::kExact, out, &f.store, l);
    } else {
      SelfAttentionTrainForward(s.temporal_normed, AttentionOf(lw), AttentionSettings(c, lw),
                                batch.positions, reach.lo, reach.hi, par.tp,
                                MatmulPrecision::kExact, out, s.attention);
    }
    s.mid = ActivationLike(h, {T, d});
    ops::Add(h, out, s.mid);
    s.mlp_normed = ActivationLike(h, {T, d});
    ops::RmsNorm(s.mid, lw.channel_pre_norm, eps, s.mlp_normed);
    const int64_t ffn = lw.gate_proj.weight.dim(0);
    s.gate = ActivationLike(h, {T, ffn});
    s.up = ActivationLike(h, {T, ffn});
    s.hidden = ActivationLike(h, {T, ffn});
    Tensor mlp_out = ActivationLike(h, {T, d});
    GegluMlpForward(s.mlp_normed, {lw.gate_proj, lw.up_proj, lw.down_proj}, par.tp, s.gate, s.up,
                    s.hidden, mlp_out, MatmulPrecision::kExact);
    h = ActivationLike(s.mid, {T, d});
    ops::Add(s.mid, mlp_out, h);
  }
  f.h = h;
}

}  // namespace

RecurrentGemmaGrads RecurrentGemmaGrads::ZerosFor(const RecurrentGemmaConfig& c,
                                                  const RecurrentGemmaWeights& w) {
  // A pipeline stage holds some layers, and the embedding and final norm only at its ends: the
  // others have no weights and get no gradient.
  const auto zeros = [](const Tensor& like) {
    return like.defined() ? ZerosOn(like.device(), like.shape()) : Tensor();
  };
  RecurrentGemmaGrads g;
  g.embed_tokens = zeros(w.embed_tokens.weight);
  g.final_norm = zeros(w.final_norm);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const RecurrentGemmaLayerWeights& lw = w.layers[static_cast<size_t>(l)];
    RecurrentGemmaLayerGrads lg;
    if (!lw.temporal_pre_norm.defined()) {
      g.layers.push_back(std::move(lg));
      continue;
    }
    lg.temporal_pre_norm = zeros(lw.temporal_pre_norm);
    if (c.blocks[static_cast<size_t>(l)] == TemporalBlock::kRecurrent) {
      lg.recurrent = RecurrentBlockGrads::ZerosFor(lw.recurrent);
    } else {
      lg.q_proj = LinearGrad::ZerosFor(lw.attention.q_proj);
      lg.k_proj = LinearGrad::ZerosFor(lw.attention.k_proj);
      lg.v_proj = LinearGrad::ZerosFor(lw.attention.v_proj);
      lg.o_proj = LinearGrad::ZerosFor(lw.attention.o_proj);
    }
    lg.channel_pre_norm = zeros(lw.channel_pre_norm);
    lg.mlp = GegluMlpGrads::ZerosFor({lw.gate_proj, lw.up_proj, lw.down_proj});
    g.layers.push_back(std::move(lg));
  }
  return g;
}

struct RecurrentGemmaStageLoss::InFlight {
  PackedBatch batch;
  Reach reach;
  StageActivations forward;
  Tensor dh;  // last stage: the loss's gradient at the final norm's input
};

RecurrentGemmaStageLoss::RecurrentGemmaStageLoss(const RecurrentGemmaConfig& config,
                                                 const RecurrentGemmaWeights& weights,
                                                 RecurrentGemmaGrads& grads,
                                                 const RecurrentGemmaShard& shard,
                                                 const LossParallelism& parallel)
    : c_(config), w_(weights), grads_(grads), shard_(shard), parallel_(parallel) {}

RecurrentGemmaStageLoss::~RecurrentGemmaStageLoss() = default;

Tensor RecurrentGemmaStageLoss::Forward(int64_t micro, PackedBatch batch, const Tensor& input,
                                        const GemmaStageLoss::GradientScale* backward,
                                        LossSum& loss) {
  CheckBatch(c_, batch);
  Reach reach(c_, batch);
  auto f = std::make_unique<InFlight>(InFlight{std::move(batch), std::move(reach), {}, {}});
  const PackedBatch& b = f->batch;
  const VocabSlice vocab = VocabOf(c_, parallel_);
  Tensor h;
  if (shard_.has_embedding) {
    h = VocabParallelEmbedding(w_.embed_tokens, vocab, c_.EmbedScale(), parallel_.tp)
            .Forward(b.tokens);
  } else {
    GEMMAPOD_CHECK(input.defined() && input.rank() == 2 &&
                       input.dim(0) == static_cast<int64_t>(b.tokens.size()) &&
                       input.dim(1) == c_.hidden_size,
                   "pipeline: stage input ", input.Describe(), " for ", b.tokens.size(),
                   " tokens of width ", c_.hidden_size);
    h = input;
  }
  RunLayers(c_, w_, b, f->reach, parallel_, shard_.first_layer, shard_.end_layer, h, f->forward);
  const Tensor out = f->forward.h;
  if (!shard_.has_head) {
    if (backward != nullptr) in_flight_.Keep(micro, std::move(f));
    return out;
  }
  // The last stage takes the loss's gradient at once, down to the final norm's input.
  TiedHeadGradient head = TiedHeadLossAndGradient(
      out, w_.final_norm, w_.embed_tokens, c_.rms_norm_eps, c_.final_logit_softcap, c_.vocab_size,
      b.targets, backward != nullptr ? &backward->scale : nullptr, parallel_, grads_.embed_tokens,
      grads_.final_norm, b.objective);
  loss = head.loss;
  if (backward == nullptr) return Tensor();
  f->dh = std::move(head.dh);
  in_flight_.Keep(micro, std::move(f));
  return Tensor();
}

Tensor RecurrentGemmaStageLoss::Backward(int64_t micro, const Tensor& doutput) {
  std::unique_ptr<InFlight> f = in_flight_.Take(micro);
  const PackedBatch& b = f->batch;
  const Reach& reach = f->reach;
  const auto T = static_cast<int64_t>(b.tokens.size());
  const int64_t d = c_.hidden_size;
  const float eps = static_cast<float>(c_.rms_norm_eps);
  Tensor dh = shard_.has_head ? f->dh : doutput;
  GEMMAPOD_CHECK(dh.defined() && dh.rank() == 2 && dh.dim(0) == T, "pipeline: the gradient of ",
                 "micro-batch ", micro, "'s stage output is ", dh.Describe());
  const LossParallelism& par = parallel_;
  for (int64_t l = shard_.end_layer - 1; l >= shard_.first_layer; --l) {
    const RecurrentGemmaLayerWeights& lw = w_.layers[static_cast<size_t>(l)];
    RecurrentGemmaLayerGrads& lg = grads_.layers[static_cast<size_t>(l)];
    const LayerSaved& s = f->forward.layers[static_cast<size_t>(l - shard_.first_layer)];
    // h_out = mid + mlp(norm(mid)): dmid = dh + norm'(mlp'(dh)).
    Tensor d_mlp_normed = ActivationLike(dh, {T, d});
    GegluMlpBackward(s.mlp_normed, {lw.gate_proj, lw.up_proj, lw.down_proj}, s.gate, s.up, s.hidden,
                     dh, par.tp, d_mlp_normed, lg.mlp);
    Tensor d_mid = ActivationLike(dh, {T, d});
    ops::RmsNormBackward(s.mid, lw.channel_pre_norm, d_mlp_normed, eps, d_mid, lg.channel_pre_norm);
    ops::Add(d_mid, dh, d_mid);
    // mid = input + temporal(norm(input)).
    Tensor d_temporal_normed = ActivationLike(dh, {T, d});
    if (c_.blocks[static_cast<size_t>(l)] == TemporalBlock::kRecurrent) {
      RecurrentBlockBackward(s.temporal_normed, lw.recurrent, {reach.conv_reach, b.positions},
                             f->forward.store, l, d_mid, par.tp, d_temporal_normed, lg.recurrent);
    } else {
      SelfAttentionGrads ag{lg.q_proj, lg.k_proj, lg.v_proj, lg.o_proj, Tensor(), Tensor()};
      SelfAttentionBackward(AttentionOf(lw), AttentionSettings(c_, lw), b.positions, reach.lo,
                            reach.hi, s.attention, d_mid, par.tp, d_temporal_normed, ag);
    }
    Tensor d_input = ActivationLike(dh, {T, d});
    ops::RmsNormBackward(s.input, lw.temporal_pre_norm, d_temporal_normed, eps, d_input,
                         lg.temporal_pre_norm);
    ops::Add(d_input, d_mid, d_input);
    dh = d_input;
    if (layer_done) layer_done(StrCat("model.layers.", l, "."));
  }
  if (!shard_.has_embedding) return dh;
  VocabParallelEmbedding(w_.embed_tokens, VocabOf(c_, par), c_.EmbedScale(), par.tp)
      .Backward(b.tokens, dh, grads_.embed_tokens);
  return Tensor();
}

LossSum RecurrentGemmaLoss(const RecurrentGemmaConfig& c, const RecurrentGemmaWeights& w,
                           const PackedBatch& batch, const LossParallelism& par) {
  RecurrentGemmaGrads none;
  RecurrentGemmaStageLoss whole(c, w, none, WholeRecurrentGemma(c), par);
  LossSum loss;
  whole.Forward(0, batch, Tensor(), nullptr, loss);
  return loss;
}

LossSum RecurrentGemmaLossAndGradients(const RecurrentGemmaConfig& c,
                                       const RecurrentGemmaWeights& w, const PackedBatch& batch,
                                       double scale, RecurrentGemmaGrads& grads,
                                       const LossParallelism& par) {
  RecurrentGemmaStageLoss whole(c, w, grads, WholeRecurrentGemma(c), par);
  const GemmaStageLoss::GradientScale gradient{scale};
  LossSum loss;
  whole.Forward(0, batch, Tensor(), &gradient, loss);
  whole.Backward(0, Tensor());
  return loss;
}

}  // namespace gemmapod
