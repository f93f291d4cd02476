#include "training/gemma_lm.h"

#include <algorithm>
#include <map>
#include <string>

#include "models/layers/device_tensors.h"
#include "models/layers/parallel.h"
#include "runtime/error.h"
#include "runtime/ops/grad_ops.h"
#include "runtime/ops/ops.h"
#include "training/adamw.h"

namespace gemmapod {

bool HasAdapters(const GemmaWeights& w) {
  for (const GemmaLayerWeights& l : w.layers) {
    for (const Linear* m :
         {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.gate_proj, &l.up_proj, &l.down_proj}) {
      if (m->lora) return true;
    }
  }
  return false;
}

GemmaGrads GemmaGrads::ZerosFor(const ModelConfig& c, const GemmaWeights& w) {
  GemmaGrads g;
  // A pipeline stage holds some layers, and the embedding and final norm only at its ends: the
  // others have no weights and get no gradient.
  const auto zeros_like = [](const Tensor& t) {
    return t.defined() ? ZerosOn(t.device(), t.shape()) : Tensor();
  };
  for (const GemmaLayerWeights& layer : w.layers) {
    g.layers.push_back(layer.attn_norm.defined() ? GemmaLayerGrads::ZerosFor(c, layer)
                                                 : GemmaLayerGrads{});
  }
  if (!HasAdapters(w)) {
    g.embed_tokens = zeros_like(w.embed_tokens.weight);
    g.final_norm = zeros_like(w.final_norm);
    g.score = zeros_like(w.score.weight);
    return g;
  }
  // Adapter fine-tuning: only the adapters train. Every other parameter is frozen (an undefined
  // gradient), which also skips its weight-gradient products in the backward.
  for (GemmaLayerGrads& l : g.layers) {
    for (Tensor* norm : {&l.attn_norm, &l.post_attn_norm, &l.mlp_norm, &l.post_mlp_norm,
                         &l.attention.q_norm, &l.attention.k_norm}) {
      *norm = Tensor();
    }
    for (LinearGrad* m :
         {&l.attention.q_proj, &l.attention.k_proj, &l.attention.v_proj, &l.attention.o_proj,
          &l.mlp.gate_proj, &l.mlp.up_proj, &l.mlp.down_proj}) {
      m->weight = Tensor();
      m->bias = Tensor();
    }
  }
  return g;
}

void MapGemmaGradients(GemmaWeights& w, GemmaGrads& g, std::map<const Tensor*, Tensor*>& grad_of) {
  grad_of[&w.embed_tokens.weight] = &g.embed_tokens;
  grad_of[&w.final_norm] = &g.final_norm;
  grad_of[&w.score.weight] = &g.score;
  for (size_t l = 0; l < w.layers.size(); ++l) {
    GemmaLayerWeights& lw = w.layers[l];
    GemmaLayerGrads& lg = g.layers[l];
    grad_of[&lw.attn_norm] = &lg.attn_norm;
    grad_of[&lw.post_attn_norm] = &lg.post_attn_norm;
    grad_of[&lw.mlp_norm] = &lg.mlp_norm;
    grad_of[&lw.post_mlp_norm] = &lg.post_mlp_norm;
    grad_of[&lw.q_norm] = &lg.attention.q_norm;
    grad_of[&lw.k_norm] = &lg.attention.k_norm;
    grad_of[&lw.q_proj.weight] = &lg.attention.q_proj.weight;
    grad_of[&lw.k_proj.weight] = &lg.attention.k_proj.weight;
    grad_of[&lw.v_proj.weight] = &lg.attention.v_proj.weight;
    grad_of[&lw.o_proj.weight] = &lg.attention.o_proj.weight;
    grad_of[&lw.gate_proj.weight] = &lg.mlp.gate_proj.weight;
    grad_of[&lw.up_proj.weight] = &lg.mlp.up_proj.weight;
    grad_of[&lw.down_proj.weight] = &lg.mlp.down_proj.weight;
  }
}

void AddGemmaParameters(AdamW& optimizer, const ModelConfig& c, GemmaWeights& w, GemmaGrads& g) {
  if (HasAdapters(w)) {  // only the adapters train; A and B take weight decay as PEFT's do
    std::map<const Linear*, LinearGrad*> linear_grad_of;
    for (size_t l = 0; l < w.layers.size(); ++l) {
      GemmaLayerWeights& lw = w.layers[l];
      GemmaLayerGrads& lg = g.layers[l];
      linear_grad_of[&lw.q_proj] = &lg.attention.q_proj;
      linear_grad_of[&lw.k_proj] = &lg.attention.k_proj;
      linear_grad_of[&lw.v_proj] = &lg.attention.v_proj;
      linear_grad_of[&lw.o_proj] = &lg.attention.o_proj;
      linear_grad_of[&lw.gate_proj] = &lg.mlp.gate_proj;
      linear_grad_of[&lw.up_proj] = &lg.mlp.up_proj;
      linear_grad_of[&lw.down_proj] = &lg.mlp.down_proj;
    }
    ForEachGemmaLinear(c, w, [&](const std::string& name, Linear& linear) {
      if (!linear.lora) return;
      LinearGrad* grad = linear_grad_of.at(&linear);
      optimizer.Add(name + ".lora_A.weight", linear.lora->a, grad->lora_a, true);
      optimizer.Add(name + ".lora_B.weight", linear.lora->b, grad->lora_b, true);
    });
    return;
  }
  // Each weight's gradient, found by the weight's slot, so the names come from the one visitor
  // that names every parameter (ForEachGemmaParameter): the optimizer's state is then keyed by
  // the same Hugging Face names as the checkpoint's tensors.
  std::map<const Tensor*, Tensor*> grad_of;
  MapGemmaGradients(w, g, grad_of);
  ForEachGemmaParameter(c, w, [&](const GemmaParameter& p, Tensor& slot) {
    if (!slot.defined()) return;  // on another pipeline stage
    GEMMAPOD_CHECK(!p.is_scale, "train: '", p.name,
                   "' belongs to an int8 model, which does not train");
    const auto it = grad_of.find(&slot);
    GEMMAPOD_CHECK(it != grad_of.end(), "train: no gradient for '", p.name, "'");
    if (!it->second->defined()) return;  // frozen: a reward model's head outside its objective
    // Gemma has no biases; norms take no weight decay.
    optimizer.Add(p.name, slot, *it->second, !p.is_norm);
  });
}

PackedBatch PackSequences(const std::vector<std::vector<int32_t>>& sequences,
                          const std::vector<std::vector<uint8_t>>& loss_mask) {
  GEMMAPOD_CHECK(loss_mask.empty() || loss_mask.size() == sequences.size(),
                 "pack: ", loss_mask.size(), " loss masks for ", sequences.size(), " sequences");
  PackedBatch b;
  for (size_t s = 0; s < sequences.size(); ++s) {
    const std::vector<int32_t>& seq = sequences[s];
    GEMMAPOD_CHECK(!loss_mask.empty() ? loss_mask[s].size() == seq.size() : true, "pack: sequence ",
                   s, " has ", seq.size(), " tokens and ",
                   loss_mask.empty() ? 0 : loss_mask[s].size(), " mask entries");
    const int64_t start = static_cast<int64_t>(b.tokens.size());
    for (size_t i = 0; i < seq.size(); ++i) {
      b.tokens.push_back(seq[i]);
      const bool counted = loss_mask.empty() || loss_mask[s][i + 1 < seq.size() ? i + 1 : i];
      b.targets.push_back(i + 1 < seq.size() && counted ? seq[i + 1] : -1);
      b.positions.push_back(static_cast<int32_t>(i));
      b.sequence_start.push_back(start);
    }
  }
  return b;
}

void CheckPackedBatch(const PackedBatch& batch) {
  const auto T = static_cast<int64_t>(batch.tokens.size());
  GEMMAPOD_CHECK(T > 0 && static_cast<int64_t>(batch.targets.size()) == T &&
                     static_cast<int64_t>(batch.positions.size()) == T &&
                     static_cast<int64_t>(batch.sequence_start.size()) == T,
                 "loss: a batch of ", T, " tokens with ", batch.targets.size(), " targets");
  GEMMAPOD_CHECK(CountTargets(batch) > 0, "loss: the batch has no target to learn");
}

double SumOfLosses(const Tensor& losses) {
  GEMMAPOD_CHECK(losses.device().is_cpu(), "loss: the loss lives on ", losses.device().ToString(),
                 "; copying it to the host is the device backend's job (not built)");
  double total = 0;
  for (int64_t t = 0; t < losses.numel(); ++t) total += losses.data<float>()[t];
  return total;
}

int64_t CountTargets(const PackedBatch& batch) {
  int64_t counted = 0;
  for (int32_t t : batch.targets) counted += t >= 0 ? 1 : 0;
  return counted;
}

namespace {

// The attention ranges of a packed batch: each token sees its own sequence, causally; sliding
// layers only their window.
struct AttentionRanges {
  std::vector<int64_t> lo_global, lo_sliding, hi;
  AttentionRanges(const ModelConfig& c, const PackedBatch& batch) {
    const auto T = static_cast<int64_t>(batch.tokens.size());
    lo_global.resize(T);
    lo_sliding.resize(T);
    hi.resize(T);
    for (int64_t t = 0; t < T; ++t) {
      lo_global[t] = batch.sequence_start[t];
      lo_sliding[t] = std::max(batch.sequence_start[t], t - c.sliding_window + 1);
      hi[t] = t + 1;
    }
  }
  const std::vector<int64_t>& lo(const ModelConfig& c, int64_t layer) const {
    return c.layer_kinds[static_cast<size_t>(layer)] == AttentionKind::kSliding ? lo_sliding
                                                                                : lo_global;
  }
};

// The whole vocabulary unless the caller holds a slice of it.
VocabSlice VocabOf(const LossParallelism& p, int64_t vocab_size) {
  return p.vocab.vocab_size > 0 ? p.vocab : VocabSlice{vocab_size, 0, vocab_size, vocab_size};
}

// The rows that have a target: only they need logits. Prompts of prompt/completion data and the
// last token of each sequence have none, and the head (vocabulary x hidden) is the model's
// largest matrix product.
struct TargetRows {
  std::vector<int64_t> rows;
  std::vector<int32_t> targets;
  explicit TargetRows(const std::vector<int32_t>& all) {
    for (size_t t = 0; t < all.size(); ++t) {
      if (all[t] < 0) continue;
      rows.push_back(static_cast<int64_t>(t));
      targets.push_back(all[t]);
    }
  }
  // normed's rows with a target, [targets, d].
  Tensor Select(const Tensor& normed) const {
    Tensor out = ActivationLike(normed, {static_cast<int64_t>(rows.size()), normed.dim(1)});
    ops::GatherRows(normed, nullptr, rows, 1.0f, out);
    return out;
  }
};

// log pi of each row with a target, in order: minus its cross-entropy.
std::vector<double> TargetLogProbs(const Tensor& losses, const std::vector<int32_t>& targets) {
  GEMMAPOD_CHECK(losses.device().is_cpu(), "loss: objectives run on the host so far");
  GEMMAPOD_CHECK(losses.numel() == static_cast<int64_t>(targets.size()), "loss: ", losses.numel(),
                 " losses for ", targets.size(), " rows");
  std::vector<double> logp;
  for (size_t t = 0; t < targets.size(); ++t) {
    if (targets[t] >= 0) logp.push_back(-static_cast<double>(losses.data<float>()[t]));
  }
  return logp;
}

}  // namespace

TiedHeadGradient TiedHeadLossAndGradient(const Tensor& h, const Tensor& final_norm,
                                         const Linear& embed_tokens, double rms_norm_eps,
                                         double final_logit_softcap, int64_t vocab_size,
                                         const std::vector<int32_t>& targets, const double* scale,
                                         const LossParallelism& parallel, Tensor& embed_grad,
                                         Tensor& final_norm_grad, const TokenObjective& objective) {
  TiedHeadGradient out;
  const float eps = static_cast<float>(rms_norm_eps);
  Tensor normed = ActivationLike(h, h.shape());
  ops::RmsNorm(h, final_norm, eps, normed);
  const VocabSlice vocab = VocabOf(parallel, vocab_size);
  const VocabParallelHead head(embed_tokens, vocab, static_cast<float>(final_logit_softcap),
                               parallel.tp);
  const TargetRows selected(targets);
  const Tensor head_input = selected.Select(normed);
  const Tensor logits = head.LogitShard(head_input, MatmulPrecision::kExact);
  const VocabParallelLosses losses =
      VocabParallelCrossEntropyLosses(logits, selected.targets, vocab, parallel.tp);
  if (scale == nullptr) {  // evaluation: the loss alone
    out.loss =
        objective ? objective(TargetLogProbs(losses.losses, selected.targets), nullptr)
                  : LossSum{SumOfLosses(losses.losses), static_cast<int64_t>(selected.rows.size())};
    return out;
  }
  Tensor dlogits = ActivationLike(logits, logits.shape());
  if (objective) {
    // The objective's slope in each log-probability scales that row's cross-entropy gradient:
    // d loss / d logits = (d loss / d logp) (onehot - softmax).
    std::vector<double> dlogp;
    out.loss = objective(TargetLogProbs(losses.losses, selected.targets), &dlogp);
    GEMMAPOD_CHECK(dlogp.size() == selected.rows.size(), "loss: the objective gave ", dlogp.size(),
                   " slopes for ", selected.rows.size(), " targets");
    Tensor row_scale = ActivationLike(logits, {static_cast<int64_t>(dlogp.size())});
    GEMMAPOD_CHECK(row_scale.device().is_cpu(), "loss: objectives run on the host so far");
    for (size_t r = 0; r < dlogp.size(); ++r) {
      row_scale.data<float>()[r] = static_cast<float>(-dlogp[r]);
    }
    VocabParallelCrossEntropyGrad(logits, losses, selected.targets, vocab,
                                  static_cast<float>(*scale), &row_scale, dlogits);
  } else {
    out.loss = {SumOfLosses(losses.losses), static_cast<int64_t>(selected.rows.size())};
    VocabParallelCrossEntropyGrad(logits, losses, selected.targets, vocab,
                                  static_cast<float>(*scale), nullptr, dlogits);
  }
  Tensor dhead_input = ActivationLike(head_input, head_input.shape());
  head.Backward(head_input, logits, dlogits, dhead_input, embed_grad);
  // Rows without a target get no gradient from the head.
  Tensor dnormed = ZerosOn(h.device(), h.shape());
  ops::ScatterRows(dhead_input, selected.rows, dnormed);
  out.dh = ActivationLike(h, h.shape());
  ops::RmsNormBackward(h, final_norm, dnormed, eps, out.dh, final_norm_grad);
  return out;
}

TiedHeadGradient ScoreHeadLossAndGradient(const Tensor& h, const Tensor& final_norm,
                                          const Linear& score, double rms_norm_eps,
                                          const std::vector<int64_t>& sequence_start,
                                          const ScoreObjective& objective, const double* scale,
                                          Tensor& score_grad, Tensor& final_norm_grad) {
  GEMMAPOD_CHECK(score.weight.defined() && score.weight.rank() == 2 && score.weight.dim(0) == 1,
                 "loss: a scoring objective needs the model's scoring head (score.weight [1, d]); "
                 "this model has none");
  // Each sequence's last token: the row before the next sequence's start.
  std::vector<int64_t> last;
  for (size_t t = 0; t < sequence_start.size(); ++t) {
    if (t + 1 == sequence_start.size() || sequence_start[t + 1] != sequence_start[t]) {
      last.push_back(static_cast<int64_t>(t));
    }
  }
  const float eps = static_cast<float>(rms_norm_eps);
  const auto rows = static_cast<int64_t>(last.size());
  Tensor x = ActivationLike(h, {rows, h.dim(1)});
  ops::GatherRows(h, nullptr, last, 1.0f, x);
  Tensor normed = ActivationLike(x, x.shape());
  ops::RmsNorm(x, final_norm, eps, normed);
  Tensor scores = ActivationLike(x, {rows, 1});
  ops::MatMul(normed, score.weight, scores, MatmulPrecision::kExact);
  GEMMAPOD_CHECK(scores.device().is_cpu(), "loss: objectives run on the host so far");
  std::vector<double> s(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) s[static_cast<size_t>(r)] = scores.data<float>()[r];
  TiedHeadGradient out;
  if (scale == nullptr) {
    out.loss = objective(s, nullptr);
    return out;
  }
  std::vector<double> dscore;
  out.loss = objective(s, &dscore);
  GEMMAPOD_CHECK(dscore.size() == s.size(), "loss: the objective gave ", dscore.size(),
                 " slopes for ", s.size(), " scores");
  Tensor dy = ActivationLike(x, {rows, 1});
  for (int64_t r = 0; r < rows; ++r) {
    dy.data<float>()[r] = static_cast<float>(*scale * dscore[static_cast<size_t>(r)]);
  }
  if (score_grad.defined()) ops::MatMulGradWeight(dy, normed, score_grad, /*accumulate=*/true);
  Tensor dnormed = ActivationLike(x, x.shape());
  ops::MatMulGradInput(dy, score.weight, dnormed);
  Tensor dx = ActivationLike(x, x.shape());
  ops::RmsNormBackward(x, final_norm, dnormed, eps, dx, final_norm_grad);
  out.dh = ZerosOn(h.device(), h.shape());
  ops::ScatterRows(dx, last, out.dh);
  return out;
}

LossSum GemmaLoss(const ModelConfig& c, const GemmaWeights& w, const PackedBatch& batch,
                  const LossParallelism& parallel) {
  GemmaGrads none;
  GemmaStageLoss whole(c, w, none, WholeGemma(c), false, parallel);
  LossSum loss;
  whole.Forward(0, batch, Tensor(), nullptr, loss);
  return loss;
}

// What a stage keeps of a micro-batch between its forward and its backward.
struct GemmaStageLoss::InFlight {
  PackedBatch batch;
  AttentionRanges ranges;
  std::vector<GemmaLayerSaved> saved;  // one per layer of the stage
  Tensor dh;                           // last stage: the loss's gradient at the final norm's input
};

GemmaStageLoss::GemmaStageLoss(const ModelConfig& config, const GemmaWeights& weights,
                               GemmaGrads& grads, const GemmaShard& shard, bool recompute,
                               const LossParallelism& parallel)
    : c_(config),
      w_(weights),
      grads_(grads),
      shard_(shard),
      recompute_(recompute),
      parallel_(parallel) {}

GemmaStageLoss::~GemmaStageLoss() = default;

Tensor GemmaStageLoss::Forward(int64_t micro, PackedBatch batch, const Tensor& input,
                               const GradientScale* backward, LossSum& loss) {
  CheckPackedBatch(batch);
  AttentionRanges ranges(c_, batch);
  auto f = std::make_unique<InFlight>(InFlight{std::move(batch), std::move(ranges), {}, {}});
  const PackedBatch& b = f->batch;
  const VocabSlice vocab = VocabOf(parallel_, c_.vocab_size);
  Tensor h;
  if (shard_.has_embedding) {
    const VocabParallelEmbedding embedding(
        w_.embed_tokens, vocab, c_.EmbedScale(w_.embed_tokens.weight.dtype()), parallel_.tp);
    h = embedding.Forward(b.tokens);
  } else {
    GEMMAPOD_CHECK(input.defined() && input.rank() == 2 &&
                       input.dim(0) == static_cast<int64_t>(b.tokens.size()) &&
                       input.dim(1) == c_.hidden_size,
                   "pipeline: stage input ", input.Describe(), " for ", b.tokens.size(),
                   " tokens of width ", c_.hidden_size);
    h = input;
  }
  // Forward only: one scratch entry reused, nothing accumulates.
  GemmaLayerSaved scratch;
  if (backward != nullptr)
    f->saved.assign(static_cast<size_t>(shard_.end_layer - shard_.first_layer), {});
  for (int64_t l = shard_.first_layer; l < shard_.end_layer; ++l) {
    GemmaLayerSaved* keep = &scratch;
    if (backward != nullptr) {
      GemmaLayerSaved& mine = f->saved[static_cast<size_t>(l - shard_.first_layer)];
      if (recompute_) {
        mine.input = h;  // the backward runs the layer again from it
      } else {
        keep = &mine;
      }
    }
    h = GemmaLayerTrainForward(c_, l, w_.layers[static_cast<size_t>(l)], h, b.positions,
                               f->ranges.lo(c_, l), f->ranges.hi, parallel_.tp,
                               MatmulPrecision::kExact, *keep);
  }
  if (!shard_.has_head) {
    if (backward != nullptr) in_flight_.Keep(micro, std::move(f));
    return h;
  }
  // The last stage takes the loss's gradient at once, down to the final norm's input: the logits
  // (targets x vocabulary) never wait for the backward. A reward model's head reads each
  // sequence's last token instead.
  const double* scale = backward != nullptr ? &backward->scale : nullptr;
  TiedHeadGradient head =
      b.score_objective
          ? ScoreHeadLossAndGradient(h, w_.final_norm, w_.score, c_.rms_norm_eps, b.sequence_start,
                                     b.score_objective, scale, grads_.score, grads_.final_norm)
          : TiedHeadLossAndGradient(h, w_.final_norm, w_.embed_tokens, c_.rms_norm_eps,
                                    c_.final_logit_softcap, c_.vocab_size, b.targets, scale,
                                    parallel_, grads_.embed_tokens, grads_.final_norm, b.objective);
  loss = head.loss;
  if (backward == nullptr) return Tensor();
  f->dh = std::move(head.dh);
  in_flight_.Keep(micro, std::move(f));
  return Tensor();
}

Tensor GemmaStageLoss::Backward(int64_t micro, const Tensor& doutput) {
  std::unique_ptr<InFlight> f = in_flight_.Take(micro);
  const PackedBatch& b = f->batch;
  Tensor dh = shard_.has_head ? f->dh : doutput;
  GEMMAPOD_CHECK(
      dh.defined() && dh.rank() == 2 && dh.dim(0) == static_cast<int64_t>(b.tokens.size()),
      "pipeline: the gradient of micro-batch ", micro, "'s stage output is ", dh.Describe());
  Tensor dprev = ActivationLike(dh, dh.shape());
  for (int64_t l = shard_.end_layer - 1; l >= shard_.first_layer; --l) {
    GemmaLayerSaved& saved = f->saved[static_cast<size_t>(l - shard_.first_layer)];
    const GemmaLayerWeights& lw = w_.layers[static_cast<size_t>(l)];
    if (recompute_) {  // the layer again from its input: the same operations, the same bits
      const Tensor input = saved.input;
      GemmaLayerTrainForward(c_, l, lw, input, b.positions, f->ranges.lo(c_, l), f->ranges.hi,
                             parallel_.tp, MatmulPrecision::kExact, saved);
    }
    GemmaLayerBackward(c_, l, lw, b.positions, f->ranges.lo(c_, l), f->ranges.hi, saved, dh,
                       parallel_.tp, dprev, grads_.layers[static_cast<size_t>(l)]);
    std::swap(dh, dprev);
    saved = GemmaLayerSaved{};  // its activations are spent
    if (layer_done) layer_done(StrCat("model.layers.", l, "."));
  }
  if (!shard_.has_embedding) return dh;
  const VocabParallelEmbedding embedding(w_.embed_tokens, VocabOf(parallel_, c_.vocab_size),
                                         c_.EmbedScale(w_.embed_tokens.weight.dtype()),
                                         parallel_.tp);
  embedding.Backward(b.tokens, dh, grads_.embed_tokens);
  return Tensor();
}

LossSum GemmaLossAndGradients(const ModelConfig& c, const GemmaWeights& w, const PackedBatch& batch,
                              double scale, GemmaGrads& grads, bool recompute,
                              const LossParallelism& parallel) {
  GemmaStageLoss whole(c, w, grads, WholeGemma(c), recompute, parallel);
  const GemmaStageLoss::GradientScale backward{scale};
  LossSum loss;
  whole.Forward(0, batch, Tensor(), &backward, loss);
  whole.Backward(0, Tensor());
  return loss;
}

}  // namespace gemmapod
