// Megatron's parallel layers under mpiexec: every rank's slice of a layer, with its group's
// communication, against the same layer whole on one rank. Slices are cut the way the shard
// visitors cut them; the vocabulary (11 rows) is padded to a multiple of the group.
#include "models/layers/parallel.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <random>

#include "runtime/comm/mpi_communicator.h"
#include "runtime/ops/grad_ops.h"
#include "tests/error_of.h"
#include "tests/gradient_check.h"

namespace gemmapod {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kVocab = 11, kWidth = 6;

// Columns [begin, end) of a matrix.
Tensor Columns(const Tensor& m, int64_t begin, int64_t end) {
  Tensor t = Tensor::Empty({m.dim(0), end - begin}, DType::kF32);
  for (int64_t r = 0; r < m.dim(0); ++r) {
    for (int64_t c = begin; c < end; ++c) {
      t.data<float>()[r * (end - begin) + c - begin] = m.data<float>()[r * m.dim(1) + c];
    }
  }
  return t;
}

class ParallelLayersTest : public ::testing::Test {
 protected:
  ParallelLayersTest() : world_(MpiCommunicator::World()) {
    tp_ = world_->size();
    rank_ = world_->rank();
    table_.weight = RandomTensor({kVocab, kWidth}, 1, 2.0f);
    // This rank's rows of the padded vocabulary; rows past the vocabulary are zeros.
    const int64_t rows = (kVocab + tp_ - 1) / tp_, begin = rank_ * rows;
    slice_ = {kVocab, begin, rows, std::max<int64_t>(0, std::min(rows, kVocab - begin))};
    mine_.weight = Tensor::Zeros({rows, kWidth}, DType::kF32);
    for (int64_t r = 0; r < slice_.valid; ++r) {
      std::copy_n(table_.weight.data<float>() + (begin + r) * kWidth, kWidth,
                  mine_.weight.data<float>() + r * kWidth);
    }
  }
  std::unique_ptr<MpiCommunicator> world_;
  int tp_ = 1, rank_ = 0;
  Linear table_, mine_;
  VocabSlice slice_;
  const VocabSlice whole_{kVocab, 0, kVocab, kVocab};
};

TEST_F(ParallelLayersTest, VocabParallelEmbeddingIsTheWholeLookupOnEveryRank) {
  const std::vector<int32_t> tokens = {0, 10, 5, 3, 7, 10};
  const Tensor want = VocabParallelEmbedding(table_, whole_, 1.5f, nullptr).Forward(tokens);
  const Tensor got = VocabParallelEmbedding(mine_, slice_, 1.5f, world_.get()).Forward(tokens);
  ASSERT_EQ(got.shape(), want.shape());
  for (int64_t i = 0; i < want.numel(); ++i) {
    // One rank contributes each row; the others add zeros: exact.
    ASSERT_EQ(got.data<float>()[i], want.data<float>()[i]) << i;
  }
  for (size_t t = 0; t < tokens.size(); ++t) {
    EXPECT_EQ(want.data<float>()[t * kWidth],
              table_.weight.data<float>()[tokens[t] * kWidth] * 1.5f);
  }
  // Every rank sees the bad id before the all-reduce, so all of them stop.
  const std::vector<int32_t> bad = {3, 11};
  EXPECT_THAT(
      ErrorOf([&] { VocabParallelEmbedding(mine_, slice_, 1.0f, world_.get()).Forward(bad); }),
      HasSubstr("token 11 is outside the vocabulary of 11"));
}

TEST_F(ParallelLayersTest, VocabParallelHeadShardsAreTheWholeLogitsColumns) {
  const Tensor x = RandomTensor({3, kWidth}, 2, 2.0f);
  const VocabParallelHead whole(table_, whole_, 2.0f, nullptr);
  const Tensor want = whole.LogitShard(x, cpu::MatmulPrecision::kExact);
  const VocabParallelHead head(mine_, slice_, 2.0f, world_.get());
  const Tensor shard = head.LogitShard(x, cpu::MatmulPrecision::kExact);
  const Tensor gathered = head.Gather(shard);  // collective: before any check can return early
  ASSERT_EQ(shard.dim(1), slice_.rows);
  for (int64_t r = 0; r < 3; ++r) {
    for (int64_t c = 0; c < slice_.rows; ++c) {
      const float got = shard.data<float>()[r * slice_.rows + c];
      if (c < slice_.valid) {
        // The soft-cap's vector tanh and its scalar tail may round the last bit differently
        // when the shard's width moves an element between them.
        EXPECT_NEAR(got, want.data<float>()[r * kVocab + slice_.begin + c], 1e-6f);
        EXPECT_LE(std::fabs(got), 2.0f);  // soft-capped
      } else {
        EXPECT_EQ(got, -std::numeric_limits<float>::infinity());  // padding never wins
      }
    }
  }
  ASSERT_EQ(gathered.shape(), want.shape());
  for (int64_t r = 0; r < 3; ++r) {
    for (int64_t v = 0; v < kVocab; ++v) {
      // Column v comes from the rank holding it, whole.
      const int64_t owner = v / slice_.rows;
      if (owner == rank_) {
        EXPECT_EQ(gathered.data<float>()[r * kVocab + v],
                  shard.data<float>()[r * slice_.rows + v - slice_.begin]);
      }
      EXPECT_NEAR(gathered.data<float>()[r * kVocab + v], want.data<float>()[r * kVocab + v],
                  1e-6f);
    }
  }
}

// Each rank's loss and gradient shard from its logit shard alone equal the full-vocabulary
// cross-entropy's (the same layer over the whole logits on one rank), padding columns included;
// a masked token has no loss and no gradient, and a target past the vocabulary is named.
TEST_F(ParallelLayersTest, VocabParallelCrossEntropyNeedsNoFullLogits) {
  const int64_t T = 4;
  const Tensor x = RandomTensor({T, kWidth}, 7, 2.0f);
  const VocabParallelHead head(mine_, slice_, 0.0f, world_.get());
  const Tensor shard = head.LogitShard(x, MatmulPrecision::kExact);
  const Tensor full = VocabParallelHead(table_, {kVocab, 0, kVocab, kVocab}, 0.0f, nullptr)
                          .LogitShard(x, MatmulPrecision::kExact);
  const std::vector<int32_t> targets = {3, -1, static_cast<int32_t>(kVocab - 1), 0};
  // The unsharded reference: the same layer over the whole vocabulary on one rank (its steps are
  // checked against central differences in tests/runtime/ops/grad_ops_test.cc).
  Tensor want_grad = Tensor::Empty(full.shape(), DType::kF32);
  const Tensor want_losses = VocabParallelCrossEntropy(full, targets, {kVocab, 0, kVocab, kVocab},
                                                       nullptr, 0.25f, want_grad);
  Tensor dshard = Tensor::Empty(shard.shape(), DType::kF32);
  const Tensor losses =
      VocabParallelCrossEntropy(shard, targets, slice_, world_.get(), 0.25f, dshard);
  for (int64_t t = 0; t < T; ++t) {
    EXPECT_NEAR(losses.data<float>()[t], want_losses.data<float>()[t], 1e-5) << t;
    for (int64_t c = 0; c < slice_.rows; ++c) {
      const float got = dshard.data<float>()[t * slice_.rows + c];
      const float want =
          c < slice_.valid ? want_grad.data<float>()[t * kVocab + slice_.begin + c] : 0.0f;
      EXPECT_NEAR(got, want, 1e-6) << "row " << t << " column " << slice_.begin + c;
    }
  }
  EXPECT_EQ(losses.data<float>()[1], 0.0f);
  const std::vector<int32_t> bad = {3, static_cast<int32_t>(kVocab), 0, 0};
  EXPECT_THAT(
      ErrorOf([&] { VocabParallelCrossEntropy(shard, bad, slice_, world_.get(), 0.25f, dshard); }),
      HasSubstr("loss: target 11 (token 1) is outside the vocabulary of 11"));
}

// The loss's gradient through the soft-capped tied head, on every layout: dx and this rank's
// rows of the table's gradient against central differences of the whole computation in double
// (mean cross-entropy of softcap(x E^T)); then the lookup's gradient, rows of this rank only.
TEST_F(ParallelLayersTest, TiedHeadAndEmbeddingBackwardMatchFiniteDifferences) {
  const int64_t T = 4;
  const float cap = 3.0f;
  const Tensor x = RandomTensor({T, kWidth}, 9, 2.0f);
  const std::vector<int32_t> targets = {3, -1, static_cast<int32_t>(kVocab - 1), 0};
  const VocabParallelHead head(mine_, slice_, cap, world_.get());
  const Tensor shard = head.LogitShard(x, MatmulPrecision::kExact);
  Tensor dshard = Tensor::Empty(shard.shape(), DType::kF32);
  VocabParallelCrossEntropy(shard, targets, slice_, world_.get(), 1.0f / 3, dshard);
  Tensor dx = Tensor::Empty({T, kWidth}, DType::kF32);
  Tensor dtable = Tensor::Zeros({slice_.rows, kWidth}, DType::kF32);
  head.Backward(x, shard, dshard, dx, dtable);

  const auto loss = [&](const Doubles& xs, const Doubles& table) {
    double total = 0;
    for (int64_t t = 0; t < T; ++t) {
      if (targets[t] < 0) continue;
      Doubles z(kVocab);
      double max = -1e300, sum = 0;
      for (int64_t v = 0; v < kVocab; ++v) {
        double s = 0;
        for (int64_t e = 0; e < kWidth; ++e) s += xs[t * kWidth + e] * table[v * kWidth + e];
        z[v] = cap * std::tanh(s / cap);
        max = std::max(max, z[v]);
      }
      for (int64_t v = 0; v < kVocab; ++v) sum += std::exp(z[v] - max);
      total += std::log(sum) + max - z[targets[t]];
    }
    return total / 3;
  };

  const Doubles xv(x.data<float>(), x.data<float>() + x.numel());
  const Doubles tv(table_.weight.data<float>(),
                   table_.weight.data<float>() + table_.weight.numel());
  const Doubles want_dx = CentralDifferences([&](const Doubles& p) { return loss(p, tv); }, xv);
  const Doubles want_dt = CentralDifferences([&](const Doubles& p) { return loss(xv, p); }, tv);
  double worst_dx = 0, worst_dt = 0, scale = 1e-30;
  for (size_t i = 0; i < want_dx.size(); ++i) {
    scale = std::max(scale, std::fabs(want_dx[i]));
    worst_dx = std::max(worst_dx, std::fabs(dx.data<float>()[i] - want_dx[i]));
  }
  EXPECT_LT(worst_dx / scale, 1e-5);
  scale = 1e-30;
  for (int64_t r = 0; r < slice_.rows; ++r) {
    for (int64_t e = 0; e < kWidth; ++e) {
      const double want = r < slice_.valid ? want_dt[(slice_.begin + r) * kWidth + e] : 0.0;
      scale = std::max(scale, std::fabs(want));
      worst_dt = std::max(worst_dt, std::fabs(dtable.data<float>()[r * kWidth + e] - want));
    }
  }
  EXPECT_LT(worst_dt / scale, 1e-5);

  // The lookup: dtable += dh rows of this rank's tokens, times the scale (a token repeats).
  const std::vector<int32_t> tokens = {2, 7, 2, static_cast<int32_t>(kVocab - 1)};
  const Tensor dh = RandomTensor({4, kWidth}, 10, 2.0f);
  Tensor dembed = Tensor::Zeros({slice_.rows, kWidth}, DType::kF32);
  VocabParallelEmbedding(mine_, slice_, 1.5f, world_.get()).Backward(tokens, dh, dembed);
  for (int64_t r = 0; r < slice_.rows; ++r) {
    for (int64_t e = 0; e < kWidth; ++e) {
      double want = 0;
      for (size_t t = 0; t < tokens.size(); ++t) {
        if (r < slice_.valid && tokens[t] == slice_.begin + r) {
          want += 1.5 * dh.data<float>()[static_cast<int64_t>(t) * kWidth + e];
        }
      }
      EXPECT_NEAR(dembed.data<float>()[r * kWidth + e], want, 1e-5) << r << "," << e;
    }
  }
}

TEST_F(ParallelLayersTest, RowParallelSumsOverTheGroupAndAddsTheBiasOnce) {
  const int64_t in = 8, out = 5;
  Linear whole;
  whole.weight = RandomTensor({out, in}, 3, 2.0f);
  whole.bias = RandomTensor({out}, 4, 2.0f);
  const Tensor x = RandomTensor({2, in}, 5, 2.0f);
  Tensor want = Tensor::Empty({2, out}, DType::kF32);
  RowParallelLinear(whole, nullptr).Forward(x, want, cpu::MatmulPrecision::kExact);

  const int64_t begin = in * rank_ / tp_, end = in * (rank_ + 1) / tp_;
  Linear part;
  part.weight = Columns(whole.weight, begin, end);
  part.bias = whole.bias;  // held whole, added after the sum
  Tensor got = Tensor::Empty({2, out}, DType::kF32);
  RowParallelLinear(part, world_.get())
      .Forward(Columns(x, begin, end), got, cpu::MatmulPrecision::kExact);
  for (int64_t i = 0; i < want.numel(); ++i) {
    EXPECT_NEAR(got.data<float>()[i], want.data<float>()[i], 1e-5f) << i;
  }

  // Column-parallel: this rank's output features, no communication, the rows' own bias.
  Linear rows;
  const int64_t first = out * rank_ / tp_, last = out * (rank_ + 1) / tp_;
  rows.weight = whole.weight.Slice(first, last).Clone();
  rows.bias = whole.bias.Slice(first, last).Clone();
  Tensor local = Tensor::Empty({2, last - first}, DType::kF32);
  ColumnParallelLinear(rows).Forward(x, local, cpu::MatmulPrecision::kExact);
  Tensor all = Tensor::Empty({2, out}, DType::kF32);
  ColumnParallelLinear(whole).Forward(x, all, cpu::MatmulPrecision::kExact);
  for (int64_t r = 0; r < 2; ++r) {
    for (int64_t c = first; c < last; ++c) {
      ASSERT_EQ(local.data<float>()[r * (last - first) + c - first],
                all.data<float>()[r * out + c]);
    }
  }
}

}  // namespace
}  // namespace gemmapod
