#include "serving/shard_sampler.h"

#include <algorithm>
#include <bit>
#include <climits>
#include <cmath>
#include <limits>
#include <vector>

#include "runtime/comm/communicator.h"
#include "runtime/error.h"

namespace gemmapod {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

SamplingParams WithoutPenalty(SamplingParams p) {
  p.repetition_penalty = 1.0f;
  p.presence_penalty = 0.0f;
  p.frequency_penalty = 0.0f;
  return p;
}

// (score, id) better than (score', id'): higher score, then lower id (the one-rank tie rule).
bool Better(float a, int32_t ia, float b, int32_t ib) { return a > b || (a == b && ia < ib); }

}  // namespace

void ApplyRepetitionPenalty(std::span<float> logits, int64_t begin,
                            std::span<const int32_t> context, float penalty) {
  if (penalty == 1.0f) return;
  std::vector<int32_t> ids(context.begin(), context.end());
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  const int64_t end = begin + static_cast<int64_t>(logits.size());
  for (int32_t id : ids) {
    if (id < begin || id >= end) continue;
    float& l = logits[static_cast<size_t>(id - begin)];
    // As the one-rank sampler: a tiny penalty saturates at the largest float rather than +inf.
    l = l > 0 ? std::min(l / penalty, std::numeric_limits<float>::max()) : l * penalty;
  }
}

void ApplyOccurrencePenalties(std::span<float> logits, int64_t begin,
                              std::span<const int32_t> generated, float presence, float frequency) {
  if (presence == 0.0f && frequency == 0.0f) return;
  std::vector<int32_t> ids(generated.begin(), generated.end());
  std::sort(ids.begin(), ids.end());
  const int64_t end = begin + static_cast<int64_t>(logits.size());
  for (size_t i = 0; i < ids.size();) {
    size_t j = i;
    while (j < ids.size() && ids[j] == ids[i]) ++j;
    if (ids[i] >= begin && ids[i] < end) {
      logits[static_cast<size_t>(ids[i] - begin)] -=
          presence + frequency * static_cast<float>(j - i);
    }
    i = j;
  }
}

ShardSampler::ShardSampler(const SamplingParams& params, Communicator* tp)
    : params_(params), tp_(tp), sampler_(WithoutPenalty(params)) {}

int32_t ShardSampler::Sample(std::span<const float> shard, int64_t vocab_begin,
                             int64_t sampled_vocab, std::span<const int32_t> context) {
  const int tp = tp_ == nullptr ? 1 : tp_->size();
  for (size_t pos = 0; pos < context.size(); ++pos) {
    GEMMAPOD_CHECK(context[pos] >= 0 && context[pos] < sampled_vocab, "sampling: context token ",
                   context[pos], " (position ", pos, ") is outside the ", sampled_vocab,
                   " sampled ids");
  }
  // This rank's part of the sampled range.
  const int64_t n =
      std::clamp<int64_t>(sampled_vocab - vocab_begin, 0, static_cast<int64_t>(shard.size()));
  penalised_.assign(shard.begin(), shard.begin() + n);
  ApplyRepetitionPenalty(penalised_, vocab_begin, context, params_.repetition_penalty);
  if (prompt_length_ < 0) prompt_length_ = static_cast<int64_t>(context.size());
  ApplyOccurrencePenalties(
      penalised_, vocab_begin,
      context.subspan(std::min(context.size(), static_cast<size_t>(prompt_length_))),
      params_.presence_penalty, params_.frequency_penalty);
  const std::span<const float> scores(penalised_);
  for (float s : scores) {
    GEMMAPOD_CHECK(!std::isnan(s) && s != kInf, "sampling: a logit is NaN or +inf");
  }
  if (params_.temperature == 0.0f) return Greedy(scores, vocab_begin);
  if (tp > 1 && params_.top_k > 0) return TopK(scores, vocab_begin);
  GEMMAPOD_CHECK(tp == 1 || vocab_begin == tp_->rank() * static_cast<int64_t>(shard.size()),
                 "sampling: shard of rank ", tp_->rank(), " starts at id ", vocab_begin,
                 ", not at rank x its width ", shard.size());
  return Gathered(scores, static_cast<int64_t>(shard.size()), sampled_vocab);
}

int32_t ShardSampler::Greedy(std::span<const float> scores, int64_t vocab_begin) {
  float best = -kInf;
  int32_t best_id = INT32_MAX;
  for (size_t i = 0; i < scores.size(); ++i) {
    const int32_t id = static_cast<int32_t>(vocab_begin + static_cast<int64_t>(i));
    if (Better(scores[i], id, best, best_id)) {
      best = scores[i];
      best_id = id;
    }
  }
  if (tp_ != nullptr && tp_->size() > 1) {
    Tensor mine = Tensor::Empty({1, 2}, DType::kI32);
    mine.data<int32_t>()[0] = std::bit_cast<int32_t>(best);
    mine.data<int32_t>()[1] = best_id;
    Tensor all = Tensor::Empty({tp_->size(), 2}, DType::kI32);
    tp_->AllGather(mine, all);
    for (int r = 0; r < tp_->size(); ++r) {
      const float s = std::bit_cast<float>(all.data<int32_t>()[2 * r]);
      const int32_t id = all.data<int32_t>()[2 * r + 1];
      if (Better(s, id, best, best_id)) {
        best = s;
        best_id = id;
      }
    }
  }
  GEMMAPOD_CHECK(best > -kInf, "sampling: every logit is -inf");
  return best_id;
}

int32_t ShardSampler::TopK(std::span<const float> scores, int64_t vocab_begin) {
  // This rank's candidates: its k best and every id tied with its k-th. The group's top-k set
  // (ties included) is inside the union of these.
  std::vector<int32_t> local(scores.size());
  for (size_t i = 0; i < local.size(); ++i) local[i] = static_cast<int32_t>(i);
  const size_t k = std::min(local.size(), static_cast<size_t>(params_.top_k));
  if (k < local.size()) {
    std::nth_element(local.begin(), local.begin() + static_cast<ptrdiff_t>(k - 1), local.end(),
                     [&](int32_t a, int32_t b) { return Better(scores[a], a, scores[b], b); });
    const float kth = scores[static_cast<size_t>(local[k - 1])];
    std::vector<int32_t> kept;
    for (size_t i = 0; i < scores.size(); ++i) {
      if (scores[i] >= kth) kept.push_back(static_cast<int32_t>(i));
    }
    local.swap(kept);
  }
  Tensor count = Tensor::Empty({1}, DType::kI32);
  count.data<int32_t>()[0] = static_cast<int32_t>(local.size());
  tp_->AllReduce(count, ReduceOp::kMax);
  const int64_t width = count.data<int32_t>()[0];
  // Pairs (score bits, id), padded with id -1.
  Tensor mine = Tensor::Empty({1, 2 * width}, DType::kI32);
  int32_t* m = mine.data<int32_t>();
  for (int64_t j = 0; j < width; ++j) {
    const bool real = j < static_cast<int64_t>(local.size());
    const int32_t i = real ? local[static_cast<size_t>(j)] : 0;
    m[2 * j] = real ? std::bit_cast<int32_t>(scores[static_cast<size_t>(i)]) : 0;
    m[2 * j + 1] = real ? static_cast<int32_t>(vocab_begin + i) : -1;
  }
  Tensor all = Tensor::Empty({tp_->size(), 2 * width}, DType::kI32);
  tp_->AllGather(mine, all);
  // Ranks hold increasing id ranges, so rank order is id order: the compact row keeps the
  // one-rank sampler's lower-id-first tie rule.
  std::vector<float> compact;
  std::vector<int32_t> ids;
  const int32_t* a = all.data<int32_t>();
  for (int64_t j = 0; j < all.numel() / 2; ++j) {
    if (a[2 * j + 1] < 0) continue;
    compact.push_back(std::bit_cast<float>(a[2 * j]));
    ids.push_back(a[2 * j + 1]);
  }
  GEMMAPOD_CHECK(!compact.empty(), "sampling: no token can be sampled");
  const int32_t index = sampler_.Sample(compact, {});
  return ids[static_cast<size_t>(index)];
}

int32_t ShardSampler::Gathered(std::span<const float> scores, int64_t stride,
                               int64_t sampled_vocab) {
  if (tp_ == nullptr || tp_->size() == 1) return sampler_.Sample(scores, {});
  // Every rank's shard is `stride` ids wide (the padded vocabulary split evenly), so rank r's
  // starts at id r * stride; ids past the sampled range are cut off after the gather.
  Tensor mine = Tensor::Empty({1, stride}, DType::kF32);
  std::fill_n(mine.data<float>(), stride, -kInf);
  std::copy(scores.begin(), scores.end(), mine.data<float>());
  Tensor all = Tensor::Empty({tp_->size(), stride}, DType::kF32);
  tp_->AllGather(mine, all);
  const std::span<const float> row(all.data<float>(), static_cast<size_t>(sampled_vocab));
  return sampler_.Sample(row, {});
}

TokenLogProbs ShardLogProbs(std::span<const float> shard, int64_t vocab_begin,
                            int64_t sampled_vocab, int32_t token, int k, Communicator* tp) {
  GEMMAPOD_CHECK(k >= 0 && k <= kMaxTopLogprobs, "log-probabilities: top ", k, " outside [0, ",
                 kMaxTopLogprobs, "]");
  const bool group = tp != nullptr && tp->size() > 1;
  const int64_t n =
      std::clamp<int64_t>(sampled_vocab - vocab_begin, 0, static_cast<int64_t>(shard.size()));
  // log Z = max + log sum exp(l - max), the max and the sum over every rank's shard.
  float top = -kInf;
  for (int64_t i = 0; i < n; ++i) top = std::max(top, shard[static_cast<size_t>(i)]);
  Tensor scalar = Tensor::Empty({1}, DType::kF32);
  if (group) {
    scalar.data<float>()[0] = top;
    tp->AllReduce(scalar, ReduceOp::kMax);
    top = scalar.data<float>()[0];
  }
  GEMMAPOD_CHECK(std::isfinite(top), "log-probabilities: the logits' maximum is ", top);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(double{shard[static_cast<size_t>(i)]} - top);
  // The token's logit from the rank that holds it (the others add 0).
  Tensor sums = Tensor::Empty({2}, DType::kF32);
  const bool mine = token >= vocab_begin && token < vocab_begin + n;
  sums.data<float>()[0] = static_cast<float>(sum);
  sums.data<float>()[1] = mine ? shard[static_cast<size_t>(token - vocab_begin)] - top : 0.0f;
  if (group) tp->AllReduce(sums, ReduceOp::kSum);
  const float log_z = top + static_cast<float>(std::log(double{sums.data<float>()[0]}));
  TokenLogProbs out;
  out.logprob = sums.data<float>()[1] + top - log_z;

  // Each rank's k best (score, id), then the k best of all of them.
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    ids[static_cast<size_t>(i)] = static_cast<int32_t>(vocab_begin + i);
  const auto better = [&](int32_t a, int32_t b) {
    return Better(shard[static_cast<size_t>(a - vocab_begin)], a,
                  shard[static_cast<size_t>(b - vocab_begin)], b);
  };
  const size_t m = std::min(static_cast<size_t>(k), ids.size());
  std::partial_sort(ids.begin(), ids.begin() + static_cast<ptrdiff_t>(m), ids.end(), better);
  // Candidates as (score, id) pairs of floats: ids below 2^24 are exact in f32.
  const int ranks = group ? tp->size() : 1;
  Tensor mine_k = Tensor::Empty({static_cast<int64_t>(k), 2}, DType::kF32);
  for (int i = 0; i < k; ++i) {
    const bool have = static_cast<size_t>(i) < m;
    mine_k.data<float>()[2 * i] = have ? shard[static_cast<size_t>(ids[i] - vocab_begin)] : -kInf;
    mine_k.data<float>()[2 * i + 1] = have ? static_cast<float>(ids[i]) : -1.0f;
  }
  Tensor all = mine_k;
  if (group && k > 0) {
    all = Tensor::Empty({static_cast<int64_t>(k) * ranks, 2}, DType::kF32);
    tp->AllGather(mine_k, all);
  }
  std::vector<std::pair<float, int32_t>> candidates;
  for (int64_t i = 0; i < all.dim(0); ++i) {
    const int32_t id = static_cast<int32_t>(all.data<float>()[2 * i + 1]);
    if (id >= 0) candidates.push_back({all.data<float>()[2 * i], id});
  }
  std::sort(candidates.begin(), candidates.end(), [](const auto& a, const auto& b) {
    return Better(a.first, a.second, b.first, b.second);
  });
  for (size_t i = 0; i < candidates.size() && i < static_cast<size_t>(k); ++i) {
    out.top.push_back({candidates[i].second, candidates[i].first - log_z});
  }
  return out;
}

}  // namespace gemmapod
