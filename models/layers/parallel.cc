#include "models/layers/parallel.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "models/layers/device_tensors.h"
#include "runtime/comm/communicator.h"
#include "runtime/cpu/ops.h"
#include "runtime/error.h"
#include "runtime/ops/grad_ops.h"
#include "runtime/ops/ops.h"

namespace gemmapod {
namespace {

int GroupSize(const Communicator* tp) { return tp == nullptr ? 1 : tp->size(); }

}  // namespace

void AllReduceSum(Communicator* tp, Tensor& partial) {
  if (GroupSize(tp) > 1) tp->AllReduce(partial, ReduceOp::kSum);
}

void ColumnParallelLinear::Forward(const Tensor& x, Tensor& y,
                                   cpu::MatmulPrecision precision) const {
  LinearForward(x, w_, y, precision);
}

void RowParallelLinear::Forward(const Tensor& x, Tensor& y, cpu::MatmulPrecision precision) const {
  LinearProduct(x, w_, y, precision);
  AllReduceSum(tp_, y);
  AddBias(w_, y);
}

void ColumnParallelLinear::Backward(const Tensor& x, const Tensor& dy, Tensor* dx_partial,
                                    LinearGrad& grad) const {
  LinearBackward(x, w_, dy, dx_partial, grad);
}

void RowParallelLinear::Backward(const Tensor& x, const Tensor& dy, Tensor* dx,
                                 LinearGrad& grad) const {
  LinearBackward(x, w_, dy, dx, grad);
}

Tensor VocabParallelEmbedding::Forward(std::span<const int32_t> tokens) const {
  const int64_t T = static_cast<int64_t>(tokens.size()), d = table_.weight.dim(1);
  // This rank's row of each token, or -1 where another rank's slice holds it (zeros here: the
  // all-reduce's sum is then exactly the holder's row).
  std::vector<int64_t> rows(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) {
    const int32_t id = tokens[static_cast<size_t>(t)];
    GEMMAPOD_CHECK(id >= 0 && id < vocab_.vocab_size, "forward: token ", id,
                   " is outside the vocabulary of ", vocab_.vocab_size);
    const int64_t local = id - vocab_.begin;
    rows[static_cast<size_t>(t)] = local >= 0 && local < vocab_.valid ? local : -1;
  }
  Tensor h = Tensor::Empty({T, d}, DType::kF32, table_.weight.device());
  ops::GatherRows(table_.weight, table_.quantized() ? &table_.scale : nullptr, rows, scale_, h);
  AllReduceSum(tp_, h);
  return h;
}

Tensor VocabParallelHead::LogitShard(const Tensor& x, cpu::MatmulPrecision precision) const {
  const int64_t rows = x.dim(0);
  Tensor logits = ActivationLike(x, {rows, vocab_.rows});
  LinearForward(x, table_, logits, precision);
  if (softcap_ > 0) {
    ops::SoftCap(logits, softcap_, logits);
  }
  // Padding rows of the last shard never win a sample.
  ops::FillColumns(logits, vocab_.valid, vocab_.rows, -std::numeric_limits<float>::infinity());
  return logits;
}

Tensor VocabParallelHead::Gather(const Tensor& shard) const {
  const int64_t rows = shard.dim(0), vs = vocab_.rows, V = vocab_.vocab_size;
  const int tp = GroupSize(tp_);
  GEMMAPOD_CHECK(shard.rank() == 2 && shard.dim(1) == vs, "logits: shard ", shard.Describe(),
                 " is not [rows, ", vs, "]");
  if (tp == 1 && vs == V) return shard;
  Tensor logits = ActivationLike(shard, {rows, V});
  const int64_t block = std::max<int64_t>(1, (int64_t{1} << 28) / std::max<int64_t>(vs, 1));
  for (int64_t r0 = 0; r0 < rows; r0 += block) {
    const int64_t n = std::min(block, rows - r0);
    const Tensor mine = shard.Slice(r0, r0 + n).Reshape({1, n * vs});
    Tensor all = mine;
    if (tp > 1) {
      all = ActivationLike(shard, {tp, n * vs});
      tp_->AllGather(mine, all);
    }
    // all[r] holds rank r's [n, vs] block; the vocabulary is the ranks' columns side by side.
    Tensor block = logits.Slice(r0, r0 + n);
    for (int64_t r = 0; r < tp; ++r) {
      const int64_t begin = r * vs, width = std::min(vs, V - begin);
      if (width <= 0) continue;
      ops::CopyColumns(all.Slice(r, r + 1).Reshape({n, vs}), 0, block, begin, width);
    }
  }
  return logits;
}

void VocabParallelEmbedding::Backward(std::span<const int32_t> tokens, const Tensor& dh,
                                      Tensor& dtable) const {
  if (!dtable.defined()) return;  // a frozen table (adapter fine-tuning)
  std::vector<int64_t> rows(tokens.size());
  for (size_t t = 0; t < tokens.size(); ++t) {
    const int64_t local = tokens[t] - vocab_.begin;
    rows[t] = local >= 0 && local < vocab_.valid ? local : -1;
  }
  Tensor scaled = ActivationLike(dh, dh.shape());
  ops::Scale(dh, scale_, scaled);
  ops::ScatterAddRows(scaled, rows, dtable);
}

void VocabParallelHead::Backward(const Tensor& x, const Tensor& logit_shard, Tensor& dlogits,
                                 Tensor& dx, Tensor& dtable) const {
  GEMMAPOD_CHECK(!table_.quantized(), "backward: the int8 embedding ", table_.weight.Describe(),
                 " is not trained");
  Tensor& d_pre = dlogits;  // in place
  if (softcap_ > 0) ops::SoftCapBackward(logit_shard, dlogits, softcap_, d_pre);
  // Padding columns hold -inf logits, whose derivative would be NaN: they carry nothing.
  ops::FillColumns(d_pre, vocab_.valid, vocab_.rows, 0.0f);
  ops::MatMulGradInput(d_pre, table_.weight, dx);
  AllReduceSum(tp_, dx);
  if (dtable.defined()) ops::MatMulGradWeight(d_pre, x, dtable, /*accumulate=*/true);
}

VocabParallelLosses VocabParallelCrossEntropyLosses(const Tensor& logit_shard,
                                                    std::span<const int32_t> targets,
                                                    const VocabSlice& vocab, Communicator* tp) {
  const int64_t rows = logit_shard.dim(0);
  for (size_t i = 0; i < targets.size(); ++i) {
    GEMMAPOD_CHECK(targets[i] >= -1 && targets[i] < vocab.vocab_size, "loss: target ", targets[i],
                   " (token ", i, ") is outside the vocabulary of ", vocab.vocab_size);
  }
  auto per_row = [&] { return ActivationLike(logit_shard, {rows}); };
  Tensor row_max = per_row(), sum_exp = per_row(), target_logit = per_row();
  ops::RowMax(logit_shard, row_max);
  if (GroupSize(tp) > 1) tp->AllReduce(row_max, ReduceOp::kMax);
  ops::ShardLossTerms(logit_shard, row_max, targets, vocab.begin, sum_exp, target_logit);
  AllReduceSum(tp, sum_exp);
  AllReduceSum(tp, target_logit);  // one rank holds each target; the others add zero
  VocabParallelLosses out{per_row(), per_row()};
  ops::CombineLossTerms(row_max, sum_exp, target_logit, targets, out.log_sum_exp, out.losses);
  return out;
}

void VocabParallelCrossEntropyGrad(const Tensor& logit_shard, const VocabParallelLosses& losses,
                                   std::span<const int32_t> targets, const VocabSlice& vocab,
                                   float grad_scale, const Tensor* row_scale, Tensor& dlogits) {
  ops::ShardLossGrad(logit_shard, losses.log_sum_exp, targets, vocab.begin, grad_scale, row_scale,
                     dlogits);
}

Tensor VocabParallelCrossEntropy(const Tensor& logit_shard, std::span<const int32_t> targets,
                                 const VocabSlice& vocab, Communicator* tp, float grad_scale,
                                 Tensor& dlogits) {
  VocabParallelLosses losses = VocabParallelCrossEntropyLosses(logit_shard, targets, vocab, tp);
  VocabParallelCrossEntropyGrad(logit_shard, losses, targets, vocab, grad_scale, nullptr, dlogits);
  return std::move(losses.losses);
}

}  // namespace gemmapod
