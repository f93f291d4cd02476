#include "training/t5gemma_lm.h"

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <map>
#include <memory>

#include "models/gemma/gemma_layer_training.h"
#include "models/layers/device_tensors.h"
#include "models/layers/parallel.h"
#include "runtime/attention_problem.h"
#include "runtime/error.h"
#include "runtime/ops/grad_ops.h"
#include "runtime/ops/ops.h"
#include "training/adamw.h"

namespace gemmapod {
namespace {

// Per layer kind, the rows each token attends to.
struct Ranges {
  std::vector<int64_t> lo_global, lo_sliding, hi_global, hi_sliding;
  const std::vector<int64_t>& lo(const ModelConfig& c, int64_t l) const {
    return c.layer_kinds[static_cast<size_t>(l)] == AttentionKind::kSliding ? lo_sliding
                                                                            : lo_global;
  }
  const std::vector<int64_t>& hi(const ModelConfig& c, int64_t l) const {
    return c.layer_kinds[static_cast<size_t>(l)] == AttentionKind::kSliding ? hi_sliding
                                                                            : hi_global;
  }
};

// The encoder sees its whole input both ways; a sliding layer only |i - j| < window.
Ranges EncoderRanges(const ModelConfig& c, const Seq2SeqBatch& b) {
  Ranges r;
  const auto T = static_cast<int64_t>(b.encoder.tokens.size());
  for (int64_t t = 0; t < T; ++t) {
    const int64_t start = b.encoder.sequence_start[static_cast<size_t>(t)];
    int64_t end = t + 1;
    while (end < T && b.encoder.sequence_start[static_cast<size_t>(end)] == start) ++end;
    r.lo_global.push_back(start);
    r.hi_global.push_back(end);
    r.lo_sliding.push_back(std::max(start, t - c.sliding_window + 1));
    r.hi_sliding.push_back(std::min(end, t + c.sliding_window));
  }
  return r;
}

// The decoder causally, as a Gemma decoder.
Ranges DecoderRanges(const ModelConfig& c, const Seq2SeqBatch& b) {
  Ranges r;
  const auto T = static_cast<int64_t>(b.decoder.tokens.size());
  for (int64_t t = 0; t < T; ++t) {
    const int64_t start = b.decoder.sequence_start[static_cast<size_t>(t)];
    r.lo_global.push_back(start);
    r.lo_sliding.push_back(std::max(start, t - c.sliding_window + 1));
    r.hi_global.push_back(t + 1);
    r.hi_sliding.push_back(t + 1);
  }
  return r;
}

struct CrossSaved {
  Tensor input, normed, q, k, v, attn, block_out;
};

AttentionProblem CrossProblem(const ModelConfig& c, const CrossAttentionWeights& x) {
  AttentionProblem p;
  p.num_heads = x.q_proj.weight.dim(0) / c.head_dim;
  p.num_kv_heads = x.k_proj.weight.dim(0) / c.head_dim;
  p.head_dim = c.head_dim;
  p.kv_row_stride = p.num_kv_heads * c.head_dim;
  p.scale = c.attention_scale();
  p.softcap = static_cast<float>(c.attn_logit_softcap);
  return p;
}

// h + post(cross_attention(pre(h), memory)): no RoPE; each decoder token sees its pair's input.
Tensor CrossResidualForward(const ModelConfig& c, const CrossAttentionWeights& x, const Tensor& h,
                            const Tensor& memory, const std::vector<int64_t>& lo,
                            const std::vector<int64_t>& hi, Communicator* tp, CrossSaved& s) {
  const float eps = static_cast<float>(c.rms_norm_eps);
  const int64_t T = h.dim(0), d = h.dim(1), M = memory.dim(0);
  const AttentionProblem p = CrossProblem(c, x);
  s.input = h;
  s.normed = ActivationLike(h, {T, d});
  ops::RmsNorm(h, x.pre_norm, eps, s.normed);
  s.q = ActivationLike(h, {T, p.num_heads * p.head_dim});
  s.k = ActivationLike(h, {M, p.kv_row_stride});
  s.v = ActivationLike(h, {M, p.kv_row_stride});
  s.attn = ActivationLike(h, {T, p.num_heads * p.head_dim});
  ColumnParallelLinear(x.q_proj).Forward(s.normed, s.q, MatmulPrecision::kExact);
  ColumnParallelLinear(x.k_proj).Forward(memory, s.k, MatmulPrecision::kExact);
  ColumnParallelLinear(x.v_proj).Forward(memory, s.v, MatmulPrecision::kExact);
  const ops::KeyRunTensors run{s.k, s.v, 0, nullptr};
  ops::Attention(p, s.q, {&run, 1}, lo, hi, s.attn);
  s.block_out = ActivationLike(h, {T, d});
  RowParallelLinear(x.o_proj, tp).Forward(s.attn, s.block_out, MatmulPrecision::kExact);
  Tensor out = ActivationLike(h, {T, d});
  ops::RmsNorm(s.block_out, x.post_norm, eps, out);
  ops::Add(h, out, out);
  return out;
}

// dh from dout; d_memory += the memory's share (through k_proj and v_proj). Under tensor
// parallelism both input gradients are the column-parallel projections' partials, summed over
// the group.
void CrossResidualBackward(const ModelConfig& c, const CrossAttentionWeights& x,
                           const Tensor& memory, const std::vector<int64_t>& lo,
                           const std::vector<int64_t>& hi, const CrossSaved& s, const Tensor& dout,
                           Communicator* tp, Tensor& dh, Tensor& d_memory, CrossAttentionGrads& g) {
  const float eps = static_cast<float>(c.rms_norm_eps);
  const AttentionProblem p = CrossProblem(c, x);
  Tensor d_block = ActivationLike(dout, dout.shape());
  ops::RmsNormBackward(s.block_out, x.post_norm, dout, eps, d_block, g.post_norm);
  Tensor d_attn = ActivationLike(dout, s.attn.shape());
  RowParallelLinear(x.o_proj, tp).Backward(s.attn, d_block, &d_attn, g.o_proj);
  Tensor dq = ActivationLike(dout, s.q.shape()), dk = ActivationLike(dout, s.k.shape()),
         dv = ActivationLike(dout, s.v.shape());
  ops::AttentionBackward(p, s.q, s.k, s.v, d_attn, lo, hi, dq, dk, dv);
  Tensor d_normed = ActivationLike(dout, dout.shape());
  ColumnParallelLinear(x.q_proj).Backward(s.normed, dq, &d_normed, g.q_proj);
  AllReduceSum(tp, d_normed);
  Tensor d_mem = ActivationLike(memory, memory.shape()),
         d_mem_v = ActivationLike(memory, memory.shape());
  ColumnParallelLinear(x.k_proj).Backward(memory, dk, &d_mem, g.k_proj);
  ColumnParallelLinear(x.v_proj).Backward(memory, dv, &d_mem_v, g.v_proj);
  ops::Add(d_mem, d_mem_v, d_mem);
  AllReduceSum(tp, d_mem);
  ops::Add(d_memory, d_mem, d_memory);
  ops::RmsNormBackward(s.input, x.pre_norm, d_normed, eps, dh, g.pre_norm);
  ops::Add(dh, dout, dh);
}

void CheckBatch(const Seq2SeqBatch& b) {
  GEMMAPOD_CHECK(!b.encoder.tokens.empty() && !b.decoder.tokens.empty(),
                 "loss: an empty encoder or decoder side");
  CheckPackedBatch(b.decoder);
}

// A stack's vocabulary rows on this rank: all of them unless the caller holds a slice.
VocabSlice VocabOf(const VocabSlice& slice, int64_t vocab_size) {
  return slice.vocab_size > 0 ? slice : VocabSlice{vocab_size, 0, vocab_size, vocab_size};
}

// Copies `parts` one after another into one flat f32 tensor (what a pipeline stage sends), and
// back.
Tensor Concatenate(std::initializer_list<const Tensor*> parts) {
  int64_t n = 0;
  for (const Tensor* t : parts) n += t->numel();
  Tensor out = Tensor::Empty({n}, DType::kF32);
  auto* to = static_cast<char*>(out.raw());
  for (const Tensor* t : parts) {
    std::memcpy(to, t->raw(), t->nbytes());
    to += t->nbytes();
  }
  return out;
}
void Split(const Tensor& flat, std::initializer_list<Tensor*> parts) {
  int64_t n = 0;
  for (const Tensor* t : parts) n += t->numel();
  GEMMAPOD_CHECK(flat.dtype() == DType::kF32 && flat.numel() == n, "pipeline: a stage boundary of ",
                 flat.Describe(), " where ", n, " f32 values were expected");
  const auto* from = static_cast<const char*>(flat.raw());
  for (Tensor* t : parts) {
    std::memcpy(t->raw(), from, t->nbytes());
    from += t->nbytes();
  }
}

void CheckRows(const Tensor& t, int64_t rows, int64_t width, const char* what) {
  GEMMAPOD_CHECK(t.defined() && t.rank() == 2 && t.dim(0) == rows && t.dim(1) == width,
                 "pipeline: ", what, " ", t.Describe(), " where [", rows, ", ", width,
                 "] was expected");
}

}  // namespace

Seq2SeqBatch PackSeq2Seq(const std::vector<std::vector<int32_t>>& inputs,
                         const std::vector<std::vector<int32_t>>& targets,
                         const std::vector<std::vector<uint8_t>>& decoder_learn) {
  GEMMAPOD_CHECK(inputs.size() == targets.size() && !inputs.empty(), "pack: ", inputs.size(),
                 " inputs for ", targets.size(), " targets");
  Seq2SeqBatch b;
  b.encoder = PackSequences(inputs);
  b.decoder = PackSequences(targets, decoder_learn);
  int64_t at = 0;
  for (size_t p = 0; p < inputs.size(); ++p) {
    GEMMAPOD_CHECK(!inputs[p].empty() && !targets[p].empty(), "pack: pair ", p,
                   " has an empty input or target");
    b.encoder_begin.push_back(at);
    at += static_cast<int64_t>(inputs[p].size());
    b.encoder_end.push_back(at);
    b.pair_of_decoder_token.insert(b.pair_of_decoder_token.end(), targets[p].size(),
                                   static_cast<int64_t>(p));
  }
  return b;
}

T5GemmaGrads T5GemmaGrads::ZerosFor(const T5GemmaConfig& c, const T5GemmaWeights& w) {
  // A pipeline stage holds only its layers' parameters: the others get no gradient.
  const auto zeros = [](const Tensor& like) {
    return like.defined() ? ZerosOn(like.device(), like.shape()) : Tensor();
  };
  T5GemmaGrads g;
  g.encoder = GemmaGrads::ZerosFor(c.encoder, w.encoder);
  g.decoder = GemmaGrads::ZerosFor(c.decoder, w.decoder);
  for (const CrossAttentionWeights& x : w.cross) {
    if (!x.pre_norm.defined()) {
      g.cross.emplace_back();
      continue;
    }
    g.cross.push_back({zeros(x.pre_norm), zeros(x.post_norm), LinearGrad::ZerosFor(x.q_proj),
                       LinearGrad::ZerosFor(x.k_proj), LinearGrad::ZerosFor(x.v_proj),
                       LinearGrad::ZerosFor(x.o_proj)});
  }
  return g;
}

void AddT5GemmaParameters(AdamW& optimizer, const T5GemmaConfig& c, T5GemmaWeights& w,
                          T5GemmaGrads& g, const T5GemmaShard* shard) {
  std::map<const Tensor*, Tensor*> grad_of;
  MapGemmaGradients(w.encoder, g.encoder, grad_of);
  MapGemmaGradients(w.decoder, g.decoder, grad_of);
  for (size_t l = 0; l < w.cross.size(); ++l) {
    CrossAttentionWeights& x = w.cross[l];
    CrossAttentionGrads& xg = g.cross[l];
    grad_of[&x.pre_norm] = &xg.pre_norm;
    grad_of[&x.post_norm] = &xg.post_norm;
    grad_of[&x.q_proj.weight] = &xg.q_proj.weight;
    grad_of[&x.k_proj.weight] = &xg.k_proj.weight;
    grad_of[&x.v_proj.weight] = &xg.v_proj.weight;
    grad_of[&x.o_proj.weight] = &xg.o_proj.weight;
  }
  ForEachT5GemmaShardParameter(c, shard != nullptr ? *shard : WholeT5Gemma(c), w,
                               [&](const GemmaParameter& p, const ParameterSlice&, Tensor& slot) {
                                 GEMMAPOD_CHECK(!p.is_scale, "train: '", p.name,
                                                "' belongs to an int8 model, which does not train");
                                 const auto it = grad_of.find(&slot);
                                 GEMMAPOD_CHECK(it != grad_of.end(), "train: no gradient for '",
                                                p.name, "'");
                                 optimizer.Add(p.name, slot, *it->second, !p.is_norm);
                               });
}

// What a stage keeps of a micro-batch between its forward and its backward.
struct T5GemmaStageLoss::InFlight {
  Seq2SeqBatch batch;
  Ranges enc, dec;
  std::vector<GemmaLayerSaved> encoder, decoder;  // this stage's layers
  std::vector<CrossSaved> cross;
  Tensor encoder_last;  // the last encoder stage: its final norm's input
  Tensor memory;        // decoder stages: the encoder's output
  std::vector<int64_t> cross_lo, cross_hi;
  Tensor dh;  // the last stage: the loss's gradient at the decoder's final norm's input
};

T5GemmaStageLoss::T5GemmaStageLoss(const T5GemmaConfig& config, const T5GemmaWeights& weights,
                                   T5GemmaGrads& grads, const T5GemmaShard& shard,
                                   const T5GemmaParallelism& parallel)
    : c_(config), w_(weights), grads_(grads), shard_(shard), parallel_(parallel) {}

T5GemmaStageLoss::~T5GemmaStageLoss() = default;

Tensor T5GemmaStageLoss::Forward(int64_t micro, Seq2SeqBatch batch, const Tensor& input,
                                 const GemmaStageLoss::GradientScale* backward, LossSum& loss) {
  CheckBatch(batch);
  const ModelConfig& ce = c_.encoder;
  const ModelConfig& cd = c_.decoder;
  auto f = std::make_unique<InFlight>();
  f->enc = EncoderRanges(ce, batch);
  f->dec = DecoderRanges(cd, batch);
  f->batch = std::move(batch);
  const Seq2SeqBatch& b = f->batch;
  const auto Te = static_cast<int64_t>(b.encoder.tokens.size());
  const auto Td = static_cast<int64_t>(b.decoder.tokens.size());
  Communicator* const tp = parallel_.tp;
  Tensor out;
  if (shard_.has_encoder) {
    const GemmaShard& s = shard_.encoder;
    Tensor e;
    if (s.has_embedding) {
      e = VocabParallelEmbedding(w_.encoder.embed_tokens,
                                 VocabOf(parallel_.encoder_vocab, ce.vocab_size),
                                 ce.EmbedScale(w_.encoder.embed_tokens.weight.dtype()), tp)
              .Forward(b.encoder.tokens);
    } else {
      CheckRows(input, Te, ce.hidden_size, "encoder stage input");
      e = input;
    }
    f->encoder.assign(static_cast<size_t>(s.end_layer - s.first_layer), GemmaLayerSaved{});
    for (int64_t l = s.first_layer; l < s.end_layer; ++l) {
      e = GemmaLayerTrainForward(ce, l, w_.encoder.layers[static_cast<size_t>(l)], e,
                                 b.encoder.positions, f->enc.lo(ce, l), f->enc.hi(ce, l), tp,
                                 MatmulPrecision::kExact,
                                 f->encoder[static_cast<size_t>(l - s.first_layer)]);
    }
    out = e;
    if (s.has_head) {  // the encoder's last stage: its output through the final norm
      f->encoder_last = e;
      f->memory = ActivationLike(e, e.shape());
      ops::RmsNorm(e, w_.encoder.final_norm, static_cast<float>(ce.rms_norm_eps), f->memory);
      out = f->memory;
    }
  }
  if (shard_.has_decoder) {
    const GemmaShard& s = shard_.decoder;
    Tensor h;
    if (!shard_.has_encoder) {
      if (s.has_embedding) {  // the first decoder stage receives the encoder's output alone
        CheckRows(input, Te, ce.hidden_size, "the encoder output");
        f->memory = input;
      } else {  // the others receive the decoder's stream and, passed along, the memory
        h = Tensor::Empty({Td, cd.hidden_size}, DType::kF32);
        f->memory = Tensor::Empty({Te, ce.hidden_size}, DType::kF32);
        Split(input, {&h, &f->memory});
      }
    }
    if (s.has_embedding) {
      h = VocabParallelEmbedding(w_.decoder.embed_tokens,
                                 VocabOf(parallel_.decoder_vocab, cd.vocab_size),
                                 cd.EmbedScale(w_.decoder.embed_tokens.weight.dtype()), tp)
              .Forward(b.decoder.tokens);
    }
    for (int64_t pair : b.pair_of_decoder_token) {
      f->cross_lo.push_back(b.encoder_begin[static_cast<size_t>(pair)]);
      f->cross_hi.push_back(b.encoder_end[static_cast<size_t>(pair)]);
    }
    const auto layers = static_cast<size_t>(s.end_layer - s.first_layer);
    f->decoder.assign(layers, GemmaLayerSaved{});
    f->cross.assign(layers, CrossSaved{});
    for (int64_t l = s.first_layer; l < s.end_layer; ++l) {
      const GemmaLayerWeights& lw = w_.decoder.layers[static_cast<size_t>(l)];
      GemmaLayerSaved& saved = f->decoder[static_cast<size_t>(l - s.first_layer)];
      const Tensor mid =
          GemmaAttentionResidualForward(cd, l, lw, h, b.decoder.positions, f->dec.lo(cd, l),
                                        f->dec.hi(cd, l), tp, MatmulPrecision::kExact, saved);
      const Tensor crossed =
          CrossResidualForward(cd, w_.cross[static_cast<size_t>(l)], mid, f->memory, f->cross_lo,
                               f->cross_hi, tp, f->cross[static_cast<size_t>(l - s.first_layer)]);
      h = GemmaMlpResidualForward(cd, lw, crossed, tp, MatmulPrecision::kExact, saved);
    }
    if (!s.has_head) {
      out = Concatenate({&h, &f->memory});
    } else {
      // The last stage: the loss, and at once its gradient down to the final norm's input.
      const LossParallelism head_parallel{tp, VocabOf(parallel_.decoder_vocab, cd.vocab_size)};
      TiedHeadGradient head = TiedHeadLossAndGradient(
          h, w_.decoder.final_norm, w_.decoder.embed_tokens, cd.rms_norm_eps,
          cd.final_logit_softcap, cd.vocab_size, b.decoder.targets,
          backward != nullptr ? &backward->scale : nullptr, head_parallel,
          grads_.decoder.embed_tokens, grads_.decoder.final_norm, b.decoder.objective);
      loss = head.loss;
      if (backward == nullptr) return Tensor();
      f->dh = std::move(head.dh);
      out = Tensor();
    }
  }
  if (backward != nullptr) in_flight_.Keep(micro, std::move(f));
  return out;
}

Tensor T5GemmaStageLoss::Backward(int64_t micro, const Tensor& doutput) {
  std::unique_ptr<InFlight> f = in_flight_.Take(micro);
  const ModelConfig& ce = c_.encoder;
  const ModelConfig& cd = c_.decoder;
  const Seq2SeqBatch& b = f->batch;
  const auto Te = static_cast<int64_t>(b.encoder.tokens.size());
  const auto Td = static_cast<int64_t>(b.decoder.tokens.size());
  Communicator* const tp = parallel_.tp;
  Tensor d_memory;  // the encoder output's gradient, summed over the decoder's layers
  if (shard_.has_decoder) {
    const GemmaShard& s = shard_.decoder;
    Tensor dh;
    if (s.has_head) {
      dh = f->dh;
      d_memory = ZerosOn(f->memory.device(), f->memory.shape());
    } else {
      dh = Tensor::Empty({Td, cd.hidden_size}, DType::kF32);
      d_memory = Tensor::Empty({Te, ce.hidden_size}, DType::kF32);
      Split(doutput, {&dh, &d_memory});
    }
    for (int64_t l = s.end_layer - 1; l >= s.first_layer; --l) {
      const GemmaLayerWeights& lw = w_.decoder.layers[static_cast<size_t>(l)];
      GemmaLayerGrads& lg = grads_.decoder.layers[static_cast<size_t>(l)];
      const GemmaLayerSaved& saved = f->decoder[static_cast<size_t>(l - s.first_layer)];
      Tensor d_crossed = ActivationLike(dh, dh.shape());
      GemmaMlpResidualBackward(cd, lw, saved, dh, tp, d_crossed, lg);
      Tensor d_mid = ActivationLike(dh, dh.shape());
      CrossResidualBackward(cd, w_.cross[static_cast<size_t>(l)], f->memory, f->cross_lo,
                            f->cross_hi, f->cross[static_cast<size_t>(l - s.first_layer)],
                            d_crossed, tp, d_mid, d_memory, grads_.cross[static_cast<size_t>(l)]);
      Tensor d_in = ActivationLike(dh, dh.shape());
      GemmaAttentionResidualBackward(cd, l, lw, b.decoder.positions, f->dec.lo(cd, l),
                                     f->dec.hi(cd, l), saved, d_mid, tp, d_in, lg);
      dh = d_in;
      if (layer_done) layer_done(StrCat("model.decoder.layers.", l, "."));
    }
    if (!s.has_embedding) return Concatenate({&dh, &d_memory});
    VocabParallelEmbedding(w_.decoder.embed_tokens, VocabOf(parallel_.decoder_vocab, cd.vocab_size),
                           cd.EmbedScale(w_.decoder.embed_tokens.weight.dtype()), tp)
        .Backward(b.decoder.tokens, dh, grads_.decoder.embed_tokens);
    if (!shard_.has_encoder) return d_memory;  // back to the encoder's last stage
  }
  const GemmaShard& s = shard_.encoder;
  Tensor de;
  if (s.has_head) {  // from the memory's gradient through the encoder's final norm
    if (!shard_.has_decoder) {
      CheckRows(doutput, Te, ce.hidden_size, "the encoder output's gradient");
      d_memory = doutput;
    }
    de = ActivationLike(f->encoder_last, f->encoder_last.shape());
    ops::RmsNormBackward(f->encoder_last, w_.encoder.final_norm, d_memory,
                         static_cast<float>(ce.rms_norm_eps), de, grads_.encoder.final_norm);
  } else {
    CheckRows(doutput, Te, ce.hidden_size, "encoder stage output gradient");
    de = doutput;
  }
  for (int64_t l = s.end_layer - 1; l >= s.first_layer; --l) {
    Tensor d_in = ActivationLike(de, de.shape());
    GemmaLayerBackward(ce, l, w_.encoder.layers[static_cast<size_t>(l)], b.encoder.positions,
                       f->enc.lo(ce, l), f->enc.hi(ce, l),
                       f->encoder[static_cast<size_t>(l - s.first_layer)], de, tp, d_in,
                       grads_.encoder.layers[static_cast<size_t>(l)]);
    de = d_in;
    if (layer_done) layer_done(StrCat("model.encoder.layers.", l, "."));
  }
  if (!s.has_embedding) return de;
  VocabParallelEmbedding(w_.encoder.embed_tokens, VocabOf(parallel_.encoder_vocab, ce.vocab_size),
                         ce.EmbedScale(w_.encoder.embed_tokens.weight.dtype()), tp)
      .Backward(b.encoder.tokens, de, grads_.encoder.embed_tokens);
  return Tensor();
}

LossSum T5GemmaLoss(const T5GemmaConfig& c, const T5GemmaWeights& w, const Seq2SeqBatch& b,
                    const T5GemmaParallelism& par) {
  T5GemmaGrads none;
  T5GemmaStageLoss whole(c, w, none, WholeT5Gemma(c), par);
  LossSum loss;
  whole.Forward(0, b, Tensor(), nullptr, loss);
  return loss;
}

LossSum T5GemmaLossAndGradients(const T5GemmaConfig& c, const T5GemmaWeights& w,
                                const Seq2SeqBatch& b, double scale, T5GemmaGrads& grads,
                                const T5GemmaParallelism& par) {
  T5GemmaStageLoss whole(c, w, grads, WholeT5Gemma(c), par);
  const GemmaStageLoss::GradientScale gradient{scale};
  LossSum loss;
  whole.Forward(0, b, Tensor(), &gradient, loss);
  whole.Backward(0, Tensor());
  return loss;
}

}  // namespace gemmapod
