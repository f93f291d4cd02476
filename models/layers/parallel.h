// Megatron's tensor-parallel layers, over this rank's slices of the weights (models/*_shard.h
// cut them) and its tensor-parallel group. Communication sits where Megatron puts it: none in a
// column-parallel layer (its input is whole on every rank, its output split by features), one
// all-reduce after a row-parallel layer (its input split, its output a sum), one after the
// vocabulary-parallel embedding; the vocabulary-parallel head yields each rank's columns of the
// logits and gathers them only when a caller asks. A null group (or one of size 1) is the whole
// layer on one rank. Every family builds its blocks from these.
#pragma once

#include <cstdint>
#include <span>

#include "models/layers/linear.h"
#include "runtime/cpu/matmul.h"
#include "runtime/tensor.h"

namespace gemmapod {

class Communicator;

// Sums `partial` over the group in place (nothing for a null group or one of size 1).
void AllReduceSum(Communicator* tp, Tensor& partial);

// y = x W_r^T + b_r: rank r holds some output features (rows of W, and of the bias).
class ColumnParallelLinear {
 public:
  explicit ColumnParallelLinear(const Linear& w) : w_(w) {}
  void Forward(const Tensor& x, Tensor& y, cpu::MatmulPrecision precision) const;
  // dx_partial (when not null) = dy W_r: this rank's part of the input gradient, which the caller
  // sums over the tensor-parallel group once per block (AllReduceSum), Megatron's backward
  // all-reduce of a column-parallel layer. grad accumulates W_r's (and b_r's) gradient.
  void Backward(const Tensor& x, const Tensor& dy, Tensor* dx_partial, LinearGrad& grad) const;

 private:
  const Linear& w_;
};

// y = sum_r x_r W_r^T + b: rank r holds some input features (columns of W); the bias, held whole,
// is added once to the sum.
class RowParallelLinear {
 public:
  RowParallelLinear(const Linear& w, Communicator* tp) : w_(w), tp_(tp) {}
  void Forward(const Tensor& x, Tensor& y, cpu::MatmulPrecision precision) const;
  // dy is whole on every rank (the forward's all-reduce is the identity backward): dx (when not
  // null) = dy W_r, this rank's input columns, with no communication; grad accumulates W_r's
  // gradient and the whole bias's (the same on every rank).
  void Backward(const Tensor& x, const Tensor& dy, Tensor* dx, LinearGrad& grad) const;

 private:
  const Linear& w_;
  Communicator* tp_;
};

// This rank's rows of the vocabulary: token ids [begin, begin + valid); `rows` >= valid rows are
// held, those past `valid` being zero padding (the vocabulary padded to a multiple of tp).
struct VocabSlice {
  int64_t vocab_size = 0;
  int64_t begin = 0;
  int64_t rows = 0;
  int64_t valid = 0;
};

// h[t] = table[tokens[t]] * scale, whole on every rank: each rank writes the rows of the tokens
// it holds and zeros elsewhere, and one all-reduce sums them (exactly: one term is non-zero).
class VocabParallelEmbedding {
 public:
  VocabParallelEmbedding(const Linear& table, VocabSlice vocab, float scale, Communicator* tp)
      : table_(table), vocab_(vocab), scale_(scale), tp_(tp) {}
  // f32 [T, d]; an id outside the vocabulary is an error naming it.
  Tensor Forward(std::span<const int32_t> tokens) const;
  // dtable (this rank's rows, f32 [vocab.rows, d]) += the lookup's gradient for dh [T, d] (whole
  // on every rank): the rows of this rank's tokens, times the scale. No communication.
  void Backward(std::span<const int32_t> tokens, const Tensor& dh, Tensor& dtable) const;

 private:
  const Linear& table_;
  VocabSlice vocab_;
  float scale_;
  Communicator* tp_;
};

// The output head tied to the embedding table: logits = softcap(x table^T), soft-capped on each
// rank's columns (the cap is per element, so no exchange is needed for it).
class VocabParallelHead {
 public:
  VocabParallelHead(const Linear& table, VocabSlice vocab, float softcap, Communicator* tp)
      : table_(table), vocab_(vocab), softcap_(softcap), tp_(tp) {}
  // This rank's columns, f32 [rows, vocab.rows]; padding columns are -inf. No communication.
  Tensor LogitShard(const Tensor& x, cpu::MatmulPrecision precision) const;
  // The full logits [rows, vocab_size] from every rank's shard (collective over the group),
  // gathered a block of rows at a time so each rank's block stays within MPI's int counts.
  Tensor Gather(const Tensor& shard) const;
  // The backward from this rank's dlogits shard and the shard LogitShard returned (the soft-cap's
  // derivative reads it): dx [rows, d], whole on every rank (one all-reduce of the ranks'
  // partials), and dtable (this rank's rows, f32) += the head's part of the tied table's
  // gradient. Padding columns carry no gradient. dlogits is used as scratch (overwritten with the
  // gradient before the soft-cap): at a 262k vocabulary it is the step's largest tensor, and a
  // copy of it would cost more than the arithmetic done on it.
  void Backward(const Tensor& x, const Tensor& logit_shard, Tensor& dlogits, Tensor& dx,
                Tensor& dtable) const;

 private:
  const Linear& table_;
  VocabSlice vocab_;
  float softcap_;
  Communicator* tp_;
};

// Megatron's vocab-parallel cross-entropy over this rank's logit shard [rows, vocab.rows] (what
// VocabParallelHead::LogitShard gives; padding columns -inf): returns each row's loss f32 [rows],
// whole on every rank (0 where targets[r] is -1, a masked token), and writes this rank's
// dlogits shard = (softmax - onehot) * grad_scale. Three all-reduces of [rows] over `tp` (the
// row maxima, the sums of exponentials, the target logits); the logits are never gathered.
Tensor VocabParallelCrossEntropy(const Tensor& logit_shard, std::span<const int32_t> targets,
                                 const VocabSlice& vocab, Communicator* tp, float grad_scale,
                                 Tensor& dlogits);
// The same in two halves, for a loss that is a function of the targets' log-probabilities
// (-losses) computed between them: the losses and each row's log-sum-exp, then this rank's dlogits
// shard = (softmax - onehot) * grad_scale * row_scale[r] (row_scale f32 [rows], or null: 1).
struct VocabParallelLosses {
  Tensor losses, log_sum_exp;
};
VocabParallelLosses VocabParallelCrossEntropyLosses(const Tensor& logit_shard,
                                                    std::span<const int32_t> targets,
                                                    const VocabSlice& vocab, Communicator* tp);
void VocabParallelCrossEntropyGrad(const Tensor& logit_shard, const VocabParallelLosses& losses,
                                   std::span<const int32_t> targets, const VocabSlice& vocab,
                                   float grad_scale, const Tensor* row_scale, Tensor& dlogits);

}  // namespace gemmapod
