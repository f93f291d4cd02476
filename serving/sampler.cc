#include "serving/sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>
#include <ranges>

#include "runtime/cpu/ops.h"
#include "runtime/error.h"

namespace gemmapod {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
// Top-p without top-k first tries the best kNucleusGuess ids: language models usually put the
// mass on a few tokens. Only when those fall short is the whole vocabulary partitioned.
constexpr size_t kNucleusGuess = 64;
// Ranges at most this long are sorted outright while partitioning for the nucleus.
constexpr size_t kSortBelow = 64;
// SelectTop keeps a heap of the best m while scanning when m is this much smaller than the
// vocabulary (one well-predicted comparison per id); otherwise it uses nth_element.
constexpr size_t kHeapRatio = 16;

// Passes over the whole vocabulary keep kLanes independent accumulators: a form the compiler
// vectorises without -ffast-math (which would void this file's NaN tests), where one running
// accumulator is a serial chain of dependent operations.
constexpr size_t kLanes = 8;
// Draws over the whole vocabulary find the block holding the drawn mass first.
constexpr size_t kDrawBlock = 1024;

// True when some x is NaN or +inf (-inf is a masked token), from the bits.
bool AnyNanOrPlusInf(std::span<const float> x) {
  constexpr uint32_t kAbs = 0x7FFFFFFFu, kPlusInf = 0x7F800000u;
  uint32_t bad[kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= x.size(); i += kLanes) {
    for (size_t j = 0; j < kLanes; ++j) {
      const auto bits = std::bit_cast<uint32_t>(x[i + j]);
      bad[j] |= static_cast<uint32_t>((bits & kAbs) > kPlusInf) | (bits == kPlusInf);
    }
  }
  uint32_t any = 0;
  for (; i < x.size(); ++i) any |= static_cast<uint32_t>(!(x[i] < kInf));
  for (uint32_t b : bad) any |= b;
  return any != 0;
}

// The largest of x (no NaN in x).
float MaxOf(std::span<const float> x) {
  float lanes[kLanes];
  std::fill(lanes, lanes + kLanes, -kInf);
  size_t i = 0;
  for (; i + kLanes <= x.size(); i += kLanes) {
    for (size_t j = 0; j < kLanes; ++j) lanes[j] = x[i + j] > lanes[j] ? x[i + j] : lanes[j];
  }
  float m = -kInf;
  for (; i < x.size(); ++i) m = std::max(m, x[i]);
  for (float l : lanes) m = std::max(m, l);
  return m;
}

double SumOf(const float* x, size_t n) {
  double lanes[kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (size_t j = 0; j < kLanes; ++j) lanes[j] += x[i + j];
  }
  double sum = 0;
  for (; i < n; ++i) sum += x[i];
  for (double l : lanes) sum += l;
  return sum;
}

// A uniform double in [0, 1) from the top 53 bits: the same draws on every standard library
// (std::uniform_real_distribution's algorithm is implementation-defined).
double Uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

}  // namespace

void Validate(const SamplingParams& p) {
  GEMMAPOD_CHECK(std::isfinite(p.temperature) && p.temperature >= 0,
                 "sampling: temperature must be finite and >= 0 (0 = greedy), got ", p.temperature);
  GEMMAPOD_CHECK(p.top_k >= 0, "sampling: top_k must be >= 0 (0 = off), got ", p.top_k);
  GEMMAPOD_CHECK(p.top_p > 0 && p.top_p <= 1,  // false for NaN
                 "sampling: top_p must be in (0, 1] (1 = off), got ", p.top_p);
  GEMMAPOD_CHECK(p.min_p >= 0 && p.min_p < 1, "sampling: min_p must be in [0, 1) (0 = off), got ",
                 p.min_p);
  GEMMAPOD_CHECK(std::isfinite(p.repetition_penalty) && p.repetition_penalty > 0,
                 "sampling: repetition_penalty must be finite and > 0 (1 = off), got ",
                 p.repetition_penalty);
  GEMMAPOD_CHECK(p.presence_penalty >= -2 && p.presence_penalty <= 2,  // false for NaN
                 "sampling: presence_penalty must be in [-2, 2] (0 = off), got ",
                 p.presence_penalty);
  GEMMAPOD_CHECK(p.frequency_penalty >= -2 && p.frequency_penalty <= 2,
                 "sampling: frequency_penalty must be in [-2, 2] (0 = off), got ",
                 p.frequency_penalty);
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  Validate(params_);
  // Those penalties need to know where the prompt ends, which only ShardSampler tracks.
  GEMMAPOD_CHECK(params_.presence_penalty == 0 && params_.frequency_penalty == 0,
                 "sampling: presence and frequency penalties need the pipeline's sampler");
  // A temperature so small that its inverse overflows is greedy decoding, the limit it tends to.
  if (params_.temperature > 0) inv_temperature_ = 1.0f / params_.temperature;
  if (!std::isfinite(inv_temperature_)) params_.temperature = 0.0f;
}

int32_t Sampler::Sample(std::span<const float> logits, std::span<const int32_t> context) {
  const size_t n = logits.size();
  GEMMAPOD_CHECK(n > 0, "sampling: empty logits");
  GEMMAPOD_CHECK(n <= static_cast<size_t>(std::numeric_limits<int32_t>::max()), "sampling: ", n,
                 " logits are more than token ids can address");
  if (AnyNanOrPlusInf(logits)) {  // the culprit is looked for only on failure
    for (size_t i = 0; i < n; ++i) {
      GEMMAPOD_CHECK(logits[i] < kInf, "sampling: the logit of token ", i, " is ", logits[i]);
    }
  }
  const std::span<const float> scores = Penalise(logits, context);

  if (params_.temperature == 0.0f) {
    const float best = MaxOf(scores);
    GEMMAPOD_CHECK(best > -kInf, "sampling: every logit is -inf");
    // The first index holding the maximum wins ties.
    return static_cast<int32_t>(std::find(scores.begin(), scores.end(), best) - scores.begin());
  }

  // weights_[id] = exp((score - top) / temperature), the unnormalised tempered softmax, filled
  // for the ids in the running: all of them, or the top-k candidates.
  weights_.resize(n);
  bool all = true;
  float top;
  // k equal to the row's length still takes the top-k path (its candidates best-first): a row
  // that holds only the k best of a larger one (ShardSampler's exchanged candidates) then draws
  // exactly as that larger row does.
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) <= n) {
    SelectTop(scores, static_cast<size_t>(params_.top_k));
    KeepTiesWithLast(scores);
    all = false;
    top = scores[static_cast<size_t>(candidates_[0])];
  } else {
    top = MaxOf(scores);
  }
  GEMMAPOD_CHECK(top > -kInf, "sampling: every logit is -inf");
  if (all) {
    // The whole vocabulary through the vector exponential of the softmax kernels: a scalar exp
    // per id would dominate the call. -inf (masked) logits come out as exactly 0.
    for (size_t i = 0; i < n; ++i) weights_[i] = (scores[i] - top) * inv_temperature_;
    cpu::ExpShiftedSum(weights_.data(), 0.0f, static_cast<int64_t>(n));
  } else {
    for (int32_t id : candidates_) {
      const auto i = static_cast<size_t>(id);
      weights_[i] = std::exp((scores[i] - top) * inv_temperature_);
    }
  }

  if (params_.top_p < 1.0f) {
    KeepNucleus(scores, all);
    all = false;
  }
  if (params_.min_p > 0.0f) {
    KeepAboveMinP(all);
    all = false;
  }
  return Draw(all);
}

std::span<const float> Sampler::Penalise(std::span<const float> logits,
                                         std::span<const int32_t> context) {
  if (params_.repetition_penalty == 1.0f) return logits;
  const size_t n = logits.size();
  for (size_t pos = 0; pos < context.size(); ++pos) {
    GEMMAPOD_CHECK(context[pos] >= 0 && static_cast<size_t>(context[pos]) < n,
                   "sampling: context token ", context[pos], " (position ", pos,
                   ") is outside the ", n, " logits");
  }
  penalised_.assign(logits.begin(), logits.end());
  if (seen_.size() != n) seen_.assign(n, 0);
  // Each distinct id is penalised once, however often it occurs (as Hugging Face's gather and
  // scatter do); the marks are cleared again so that seen_ stays all zero between calls.
  const float p = params_.repetition_penalty;
  for (int32_t id : context) {
    const auto i = static_cast<size_t>(id);
    if (seen_[i]) continue;
    seen_[i] = 1;
    // A penalty far below 1 can overflow a positive logit to +inf; the largest finite float
    // ranks it the same without breaking the softmax.
    penalised_[i] = penalised_[i] > 0
                        ? std::min(penalised_[i] / p, std::numeric_limits<float>::max())
                        : penalised_[i] * p;
  }
  for (int32_t id : context) seen_[static_cast<size_t>(id)] = 0;
  return penalised_;
}

bool Sampler::Better(std::span<const float> scores, int32_t a, int32_t b) {
  const float sa = scores[static_cast<size_t>(a)], sb = scores[static_cast<size_t>(b)];
  return sa > sb || (sa == sb && a < b);
}

void Sampler::SelectTop(std::span<const float> scores, size_t m) {
  const size_t n = scores.size();
  auto better = [&](int32_t a, int32_t b) { return Better(scores, a, b); };
  candidates_.resize(std::min(n, m));
  if (m >= n) {
    std::iota(candidates_.begin(), candidates_.end(), 0);
  } else if (m * kHeapRatio <= n) {
    // A heap of the best m so far with the worst on top: `better` as the heap's "less". An id
    // equal in score to the worst comes later, so it is worse and never enters.
    std::iota(candidates_.begin(), candidates_.end(), 0);
    std::make_heap(candidates_.begin(), candidates_.end(), better);
    float worst = scores[static_cast<size_t>(candidates_.front())];
    for (size_t i = m; i < n; ++i) {
      if (scores[i] > worst) {
        std::pop_heap(candidates_.begin(), candidates_.end(), better);
        candidates_.back() = static_cast<int32_t>(i);
        std::push_heap(candidates_.begin(), candidates_.end(), better);
        worst = scores[static_cast<size_t>(candidates_.front())];
      }
    }
  } else {
    // The m-th best score by selection on plain floats (cheaper than on ids), then the ids above
    // it and, in id order, as many of those equal to it as fit.
    scratch_.assign(scores.begin(), scores.end());
    std::nth_element(scratch_.begin(), scratch_.begin() + static_cast<std::ptrdiff_t>(m - 1),
                     scratch_.end(), std::greater<float>());
    const float threshold = scratch_[m - 1];
    size_t out = 0;
    for (size_t i = 0; i < n; ++i) {
      if (scores[i] > threshold) candidates_[out++] = static_cast<int32_t>(i);
    }
    for (size_t i = 0; i < n && out < m; ++i) {
      if (scores[i] == threshold) candidates_[out++] = static_cast<int32_t>(i);
    }
  }
  std::sort(candidates_.begin(), candidates_.end(), better);
}

void Sampler::KeepTiesWithLast(std::span<const float> scores) {
  // Hugging Face's top-k drops only scores below the k-th one: every id tied with it stays.
  const float kth = scores[static_cast<size_t>(candidates_.back())];
  size_t tied_kept = 0;
  while (tied_kept < candidates_.size() &&
         scores[static_cast<size_t>(candidates_[candidates_.size() - 1 - tied_kept])] == kth) {
    ++tied_kept;
  }
  const std::vector<int32_t> kept(candidates_.end() - static_cast<std::ptrdiff_t>(tied_kept),
                                  candidates_.end());
  for (size_t i = 0; i < scores.size(); ++i) {
    const auto id = static_cast<int32_t>(i);
    if (scores[i] == kth && std::find(kept.begin(), kept.end(), id) == kept.end()) {
      candidates_.push_back(id);
    }
  }
}

void Sampler::KeepNucleus(std::span<const float> scores, bool all) {
  auto better = [&](int32_t a, int32_t b) { return Better(scores, a, b); };
  auto weight = [&](int32_t id) { return static_cast<double>(weights_[static_cast<size_t>(id)]); };
  double mass = 0;
  if (all) {
    mass = SumOf(weights_.data(), weights_.size());
  } else {
    for (int32_t id : candidates_) mass += weight(id);
  }
  const double target = params_.top_p * mass;
  // Walks candidates_[from, to), which must be best first, until the mass kept reaches `need`;
  // then drops the rest and returns true.
  auto walk = [&](size_t from, size_t to, double need) {
    double reached = 0;
    for (size_t i = from; i < to; ++i) {
      reached += weight(candidates_[i]);
      if (reached >= need) {
        candidates_.resize(i + 1);  // the token that crosses the target stays
        return true;
      }
    }
    return false;
  };
  if (!all) {
    walk(0, candidates_.size(), target);  // short only by rounding: then every candidate stays
    return;
  }
  SelectTop(scores, kNucleusGuess);
  if (walk(0, candidates_.size(), target)) return;

  // Quickselect by mass over every id: partition [lo, hi) around a pivot; when the better part
  // holds what is still needed the boundary lies inside it, otherwise all of it (and the pivot)
  // is kept and the search goes on in the worse part. Linear on average, unlike a full sort.
  candidates_.resize(scores.size());
  std::iota(candidates_.begin(), candidates_.end(), 0);
  const auto at = [&](size_t i) { return candidates_.begin() + static_cast<std::ptrdiff_t>(i); };
  size_t lo = 0, hi = candidates_.size();
  double need = target;
  while (hi - lo > kSortBelow) {
    int32_t a = candidates_[lo], b = candidates_[lo + (hi - lo) / 2], c = candidates_[hi - 1];
    if (better(b, a)) std::swap(a, b);
    if (better(c, b)) std::swap(b, c);
    if (better(b, a)) std::swap(a, b);
    const int32_t pivot = b;  // the median of three
    const size_t mid = static_cast<size_t>(
        std::partition(at(lo), at(hi), [&](int32_t id) { return better(id, pivot); }) -
        candidates_.begin());
    double upper = 0;
    for (size_t i = lo; i < mid; ++i) upper += weight(candidates_[i]);
    if (upper >= need) {
      hi = mid;
      continue;
    }
    need -= upper;
    std::iter_swap(at(mid), std::find(at(mid), at(hi), pivot));
    if (weight(pivot) >= need) {
      candidates_.resize(mid + 1);
      return;
    }
    need -= weight(pivot);
    lo = mid + 1;
  }
  std::sort(at(lo), at(hi), better);
  if (!walk(lo, hi, need)) candidates_.resize(hi);  // short only by rounding
}

void Sampler::KeepAboveMinP(bool all) {
  // weights_ are probabilities divided by the top one (whose weight is exactly exp(0) = 1), so
  // Hugging Face's test p < min_p * p_max reads weight < min_p. The top token always stays.
  const float floor = params_.min_p;
  if (all) {
    candidates_.clear();
    for (size_t i = 0; i < weights_.size(); ++i) {
      if (weights_[i] >= floor) candidates_.push_back(static_cast<int32_t>(i));
    }
  } else {
    std::erase_if(candidates_,
                  [&](int32_t id) { return weights_[static_cast<size_t>(id)] < floor; });
  }
}

int32_t Sampler::Draw(bool all) {
  // Scans ids in order until their weight passes r; rounding can leave r beyond the last sum,
  // so the last id with weight is the answer then.
  int32_t last = -1;
  auto scan = [&](auto ids, double r) -> std::optional<int32_t> {
    double acc = 0;
    for (const auto id : ids) {
      const float w = weights_[static_cast<size_t>(id)];
      if (w <= 0) continue;
      last = static_cast<int32_t>(id);
      acc += w;
      if (r < acc) return last;
    }
    return std::nullopt;
  };
  if (!all) {
    double total = 0;
    for (int32_t id : candidates_) total += weights_[static_cast<size_t>(id)];
    return scan(candidates_, Uniform01(rng_) * total).value_or(last);
  }
  // Over the whole vocabulary: block sums first, then a scan inside the block holding r.
  const size_t n = weights_.size();
  block_mass_.clear();
  double total = 0;
  for (size_t b = 0; b < n; b += kDrawBlock) {
    block_mass_.push_back(SumOf(weights_.data() + b, std::min(kDrawBlock, n - b)));
    total += block_mass_.back();
  }
  double r = Uniform01(rng_) * total;
  for (size_t block = 0; block < block_mass_.size(); ++block) {
    if (r < block_mass_[block] || block + 1 == block_mass_.size()) {
      const size_t begin = block * kDrawBlock, end = std::min(n, begin + kDrawBlock);
      if (auto id = scan(std::views::iota(begin, end), r)) return *id;
      if (last >= 0) return last;
      break;  // an empty last block: fall back to the last id with weight anywhere
    }
    r -= block_mass_[block];
  }
  for (size_t i = n; i-- > 0;) {
    if (weights_[i] > 0) return static_cast<int32_t>(i);
  }
  return 0;  // unreachable: the top token has weight 1
}

}  // namespace gemmapod
