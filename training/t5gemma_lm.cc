#include "training/t5gemma_lm.h"

#include <algorithm>
#include <map>

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

struct Forward {
  Tensor encoder_last;  // the encoder's final norm's input
  Tensor memory;        // the encoder's output
  std::vector<GemmaLayerSaved> encoder;
  std::vector<GemmaLayerSaved> decoder;
  std::vector<CrossSaved> cross;
  std::vector<Tensor> decoder_after_self;  // each decoder layer's cross block input
  Tensor decoder_last;                     // the decoder's final norm's input
  std::vector<int64_t> cross_lo, cross_hi;
};

void CheckBatch(const Seq2SeqBatch& b) {
  GEMMAPOD_CHECK(!b.encoder.tokens.empty() && !b.decoder.tokens.empty(),
                 "loss: an empty encoder or decoder side");
  CheckPackedBatch(b.decoder);
}

// A stack's vocabulary rows on this rank: all of them unless the caller holds a slice.
VocabSlice VocabOf(const VocabSlice& slice, int64_t vocab_size) {
  return slice.vocab_size > 0 ? slice : VocabSlice{vocab_size, 0, vocab_size, vocab_size};
}

void RunForward(const T5GemmaConfig& c, const T5GemmaWeights& w, const Seq2SeqBatch& b,
                const T5GemmaParallelism& par, Forward& f) {
  const ModelConfig& ce = c.encoder;
  const ModelConfig& cd = c.decoder;
  const Ranges enc = EncoderRanges(ce, b), dec = DecoderRanges(cd, b);
  const VocabSlice enc_vocab = VocabOf(par.encoder_vocab, ce.vocab_size);
  Tensor e = VocabParallelEmbedding(w.encoder.embed_tokens, enc_vocab,
                                    ce.EmbedScale(w.encoder.embed_tokens.weight.dtype()), par.tp)
                 .Forward(b.encoder.tokens);
  f.encoder.assign(static_cast<size_t>(ce.num_layers), GemmaLayerSaved{});
  for (int64_t l = 0; l < ce.num_layers; ++l) {
    e = GemmaLayerTrainForward(ce, l, w.encoder.layers[static_cast<size_t>(l)], e,
                               b.encoder.positions, enc.lo(ce, l), enc.hi(ce, l), par.tp,
                               MatmulPrecision::kExact, f.encoder[static_cast<size_t>(l)]);
  }
  f.encoder_last = e;
  f.memory = ActivationLike(e, e.shape());
  ops::RmsNorm(e, w.encoder.final_norm, static_cast<float>(ce.rms_norm_eps), f.memory);

  for (int64_t pair : b.pair_of_decoder_token) {
    f.cross_lo.push_back(b.encoder_begin[static_cast<size_t>(pair)]);
    f.cross_hi.push_back(b.encoder_end[static_cast<size_t>(pair)]);
  }
  const VocabSlice dec_vocab = VocabOf(par.decoder_vocab, cd.vocab_size);
  Tensor h = VocabParallelEmbedding(w.decoder.embed_tokens, dec_vocab,
                                    cd.EmbedScale(w.decoder.embed_tokens.weight.dtype()), par.tp)
                 .Forward(b.decoder.tokens);
  f.decoder.assign(static_cast<size_t>(cd.num_layers), GemmaLayerSaved{});
  f.cross.assign(static_cast<size_t>(cd.num_layers), CrossSaved{});
  for (int64_t l = 0; l < cd.num_layers; ++l) {
    const GemmaLayerWeights& lw = w.decoder.layers[static_cast<size_t>(l)];
    GemmaLayerSaved& saved = f.decoder[static_cast<size_t>(l)];
    const Tensor mid =
        GemmaAttentionResidualForward(cd, l, lw, h, b.decoder.positions, dec.lo(cd, l),
                                      dec.hi(cd, l), par.tp, MatmulPrecision::kExact, saved);
    const Tensor crossed =
        CrossResidualForward(cd, w.cross[static_cast<size_t>(l)], mid, f.memory, f.cross_lo,
                             f.cross_hi, par.tp, f.cross[static_cast<size_t>(l)]);
    h = GemmaMlpResidualForward(cd, lw, crossed, par.tp, MatmulPrecision::kExact, saved);
  }
  f.decoder_last = h;
}

struct Head {
  Tensor normed, logits, dlogits, losses;
};

Head RunHead(const T5GemmaConfig& c, const T5GemmaWeights& w, const Seq2SeqBatch& b,
             const T5GemmaParallelism& par, const Forward& f, double scale) {
  const ModelConfig& cd = c.decoder;
  Head head;
  head.normed = ActivationLike(f.decoder_last, f.decoder_last.shape());
  ops::RmsNorm(f.decoder_last, w.decoder.final_norm, static_cast<float>(cd.rms_norm_eps),
               head.normed);
  const VocabSlice vocab = VocabOf(par.decoder_vocab, cd.vocab_size);
  const VocabParallelHead layer(w.decoder.embed_tokens, vocab,
                                static_cast<float>(cd.final_logit_softcap), par.tp);
  head.logits = layer.LogitShard(head.normed, MatmulPrecision::kExact);
  head.dlogits = ActivationLike(head.logits, head.logits.shape());
  head.losses = VocabParallelCrossEntropy(head.logits, b.decoder.targets, vocab, par.tp,
                                          static_cast<float>(scale), head.dlogits);
  return head;
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
  const auto zeros = [](const Tensor& like) { return ZerosOn(like.device(), like.shape()); };
  T5GemmaGrads g;
  g.encoder = GemmaGrads::ZerosFor(c.encoder, w.encoder);
  g.decoder = GemmaGrads::ZerosFor(c.decoder, w.decoder);
  for (const CrossAttentionWeights& x : w.cross) {
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

LossSum T5GemmaLoss(const T5GemmaConfig& c, const T5GemmaWeights& w, const Seq2SeqBatch& b,
                    const T5GemmaParallelism& par) {
  CheckBatch(b);
  Forward f;
  RunForward(c, w, b, par, f);
  const Head head = RunHead(c, w, b, par, f, 0.0);
  return {SumOfLosses(head.losses), CountTargets(b.decoder)};
}

LossSum T5GemmaLossAndGradients(const T5GemmaConfig& c, const T5GemmaWeights& w,
                                const Seq2SeqBatch& b, double scale, T5GemmaGrads& grads,
                                const T5GemmaParallelism& par) {
  CheckBatch(b);
  const ModelConfig& ce = c.encoder;
  const ModelConfig& cd = c.decoder;
  Forward f;
  RunForward(c, w, b, par, f);
  Head head = RunHead(c, w, b, par, f, scale);
  const LossSum result{SumOfLosses(head.losses), CountTargets(b.decoder)};

  // The decoder, from the head back, each layer's cross-attention adding to d_memory.
  const VocabSlice dec_vocab = VocabOf(par.decoder_vocab, cd.vocab_size);
  const VocabParallelHead head_layer(w.decoder.embed_tokens, dec_vocab,
                                     static_cast<float>(cd.final_logit_softcap), par.tp);
  Tensor dnormed = ActivationLike(head.normed, head.normed.shape());
  head_layer.Backward(head.normed, head.logits, head.dlogits, dnormed, grads.decoder.embed_tokens);
  Tensor dh = ActivationLike(f.decoder_last, f.decoder_last.shape());
  ops::RmsNormBackward(f.decoder_last, w.decoder.final_norm, dnormed,
                       static_cast<float>(cd.rms_norm_eps), dh, grads.decoder.final_norm);
  Tensor d_memory = ZerosOn(f.memory.device(), f.memory.shape());
  const Ranges dec = DecoderRanges(cd, b);
  for (int64_t l = cd.num_layers - 1; l >= 0; --l) {
    const GemmaLayerWeights& lw = w.decoder.layers[static_cast<size_t>(l)];
    GemmaLayerGrads& lg = grads.decoder.layers[static_cast<size_t>(l)];
    const GemmaLayerSaved& saved = f.decoder[static_cast<size_t>(l)];
    Tensor d_crossed = ActivationLike(dh, dh.shape());
    GemmaMlpResidualBackward(cd, lw, saved, dh, par.tp, d_crossed, lg);
    Tensor d_mid = ActivationLike(dh, dh.shape());
    CrossResidualBackward(cd, w.cross[static_cast<size_t>(l)], f.memory, f.cross_lo, f.cross_hi,
                          f.cross[static_cast<size_t>(l)], d_crossed, par.tp, d_mid, d_memory,
                          grads.cross[static_cast<size_t>(l)]);
    Tensor d_in = ActivationLike(dh, dh.shape());
    GemmaAttentionResidualBackward(cd, l, lw, b.decoder.positions, dec.lo(cd, l), dec.hi(cd, l),
                                   saved, d_mid, par.tp, d_in, lg);
    dh = d_in;
  }
  VocabParallelEmbedding(w.decoder.embed_tokens, dec_vocab,
                         cd.EmbedScale(w.decoder.embed_tokens.weight.dtype()), par.tp)
      .Backward(b.decoder.tokens, dh, grads.decoder.embed_tokens);

  // The encoder, from the memory's gradient.
  Tensor de = ActivationLike(f.encoder_last, f.encoder_last.shape());
  ops::RmsNormBackward(f.encoder_last, w.encoder.final_norm, d_memory,
                       static_cast<float>(ce.rms_norm_eps), de, grads.encoder.final_norm);
  const Ranges enc = EncoderRanges(ce, b);
  for (int64_t l = ce.num_layers - 1; l >= 0; --l) {
    Tensor d_in = ActivationLike(de, de.shape());
    GemmaLayerBackward(ce, l, w.encoder.layers[static_cast<size_t>(l)], b.encoder.positions,
                       enc.lo(ce, l), enc.hi(ce, l), f.encoder[static_cast<size_t>(l)], de, par.tp,
                       d_in, grads.encoder.layers[static_cast<size_t>(l)]);
    de = d_in;
  }
  const VocabSlice enc_vocab = VocabOf(par.encoder_vocab, ce.vocab_size);
  VocabParallelEmbedding(w.encoder.embed_tokens, enc_vocab,
                         ce.EmbedScale(w.encoder.embed_tokens.weight.dtype()), par.tp)
      .Backward(b.encoder.tokens, de, grads.encoder.embed_tokens);
  return result;
}

}  // namespace gemmapod
