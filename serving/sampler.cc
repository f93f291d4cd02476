#include "serving/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "runtime/error.h"

namespace gemmapod {

void Validate(const SamplingParams& p) {
  GEMMAPOD_CHECK(std::isfinite(p.temperature) && p.temperature >= 0,
                 "sampling: temperature must be >= 0 (0 = greedy), got ", p.temperature);
  GEMMAPOD_CHECK(p.top_k >= 0, "sampling: top_k must be >= 0 (0 = off), got ", p.top_k);
  GEMMAPOD_CHECK(std::isfinite(p.top_p) && p.top_p > 0 && p.top_p <= 1,
                 "sampling: top_p must be in (0, 1] (1 = off), got ", p.top_p);
  GEMMAPOD_CHECK(std::isfinite(p.min_p) && p.min_p >= 0 && p.min_p < 1,
                 "sampling: min_p must be in [0, 1) (0 = off), got ", p.min_p);
  GEMMAPOD_CHECK(std::isfinite(p.repetition_penalty) && p.repetition_penalty > 0,
                 "sampling: repetition_penalty must be > 0 (1 = off), got ", p.repetition_penalty);
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  Validate(params_);
}

int32_t Sampler::Sample(std::span<const float> logits, std::span<const int32_t> context) {
  const size_t n = logits.size();
  GEMMAPOD_CHECK(n > 0, "sampling: empty logits");
  work_.assign(logits.begin(), logits.end());
  for (size_t i = 0; i < n; ++i) {
    GEMMAPOD_CHECK(!std::isnan(work_[i]), "sampling: the logit of token ", i, " is NaN");
  }
  if (params_.repetition_penalty != 1.0f) {
    // Each seen token once, however often it appeared (as Hugging Face's processor does).
    std::vector<int32_t> seen(context.begin(), context.end());
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    for (int32_t id : seen) {
      if (id < 0 || static_cast<size_t>(id) >= n) continue;
      float& l = work_[static_cast<size_t>(id)];
      l = l > 0 ? l / params_.repetition_penalty : l * params_.repetition_penalty;
    }
  }
  if (params_.temperature == 0.0f) {
    return static_cast<int32_t>(std::max_element(work_.begin(), work_.end()) - work_.begin());
  }

  const float inv_t = 1.0f / params_.temperature;
  order_.resize(n);
  std::iota(order_.begin(), order_.end(), 0);
  auto by_logit = [&](int32_t a, int32_t b) {
    return work_[static_cast<size_t>(a)] > work_[static_cast<size_t>(b)] ||
           (work_[static_cast<size_t>(a)] == work_[static_cast<size_t>(b)] && a < b);
  };
  size_t keep = n;
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < n) {
    keep = static_cast<size_t>(params_.top_k);
    std::nth_element(order_.begin(), order_.begin() + static_cast<std::ptrdiff_t>(keep - 1),
                     order_.end(), by_logit);
    order_.resize(keep);
  }
  // Sorting is needed only for top-p; top-k alone and min-p work on an unordered set.
  if (params_.top_p < 1.0f) std::sort(order_.begin(), order_.end(), by_logit);

  float max_logit = -INFINITY;
  for (int32_t id : order_) max_logit = std::max(max_logit, work_[static_cast<size_t>(id)]);
  probs_.resize(order_.size());
  double sum = 0;
  for (size_t i = 0; i < order_.size(); ++i) {
    probs_[i] = std::exp((work_[static_cast<size_t>(order_[i])] - max_logit) * inv_t);
    sum += probs_[i];
  }
  for (float& p : probs_) p = static_cast<float>(p / sum);

  if (params_.top_p < 1.0f) {
    double cumulative = 0;
    size_t cut = 0;
    while (cut < probs_.size()) {
      cumulative += probs_[cut++];
      if (cumulative >= params_.top_p) break;
    }
    order_.resize(cut);
    probs_.resize(cut);
  }
  if (params_.min_p > 0.0f) {
    const float top = *std::max_element(probs_.begin(), probs_.end());
    const float floor = params_.min_p * top;
    size_t out = 0;
    for (size_t i = 0; i < probs_.size(); ++i) {
      if (probs_[i] >= floor) {
        order_[out] = order_[i];
        probs_[out] = probs_[i];
        ++out;
      }
    }
    order_.resize(out);
    probs_.resize(out);
  }
  double total = 0;
  for (float p : probs_) total += p;
  std::uniform_real_distribution<double> uniform(0.0, total);
  const double r = uniform(rng_);
  double acc = 0;
  for (size_t i = 0; i < probs_.size(); ++i) {
    acc += probs_[i];
    if (r < acc) return order_[i];
  }
  return order_.back();
}

}  // namespace gemmapod
