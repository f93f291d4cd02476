#include "training/rl_formulas.h"

#include <algorithm>
#include <cmath>

#include "runtime/error.h"

namespace gemmapod {

double Softplus(double x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }

double Sigmoid(double x) {
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}

KlEstimator ParseKlEstimator(const std::string& name) {
  if (name == "k1") return KlEstimator::kK1;
  if (name == "k2") return KlEstimator::kK2;
  if (name == "k3") return KlEstimator::kK3;
  throw Error(StrCat("KL estimator '", name, "': expected k1, k2 or k3"));
}

const char* KlEstimatorName(KlEstimator estimator) {
  switch (estimator) {
    case KlEstimator::kK1:
      return "k1";
    case KlEstimator::kK2:
      return "k2";
    case KlEstimator::kK3:
      return "k3";
  }
  return "?";
}

ValueAndSlope KlEstimate(KlEstimator estimator, double logp, double ref_logp) {
  const double l = logp - ref_logp;
  switch (estimator) {
    case KlEstimator::kK1:
      return {l, 1.0};
    case KlEstimator::kK2:
      return {0.5 * l * l, l};
    case KlEstimator::kK3: {
      // exp(-l) - 1 + l loses every digit to cancellation for small l: expm1 keeps them.
      const double e = std::expm1(-l);
      return {e + l, -e};
    }
  }
  return {};
}

void KlController::Update(double kl, int64_t samples) {
  if (target <= 0) return;
  const double error = std::clamp(kl / target - 1.0, -0.2, 0.2);
  beta *= 1.0 + error * static_cast<double>(samples) / horizon;
}

Advantages Gae(const std::vector<double>& rewards, const std::vector<double>& values, double gamma,
               double lambda) {
  GEMMAPOD_CHECK(rewards.size() == values.size(), "GAE: ", rewards.size(), " rewards and ",
                 values.size(), " values");
  const size_t n = rewards.size();
  Advantages out;
  out.advantages.assign(n, 0.0);
  out.returns.assign(n, 0.0);
  double next_advantage = 0, next_value = 0;
  for (size_t t = n; t-- > 0;) {
    const double delta = rewards[t] + gamma * next_value - values[t];
    next_advantage = delta + gamma * lambda * next_advantage;
    next_value = values[t];
    out.advantages[t] = next_advantage;
    out.returns[t] = next_advantage + values[t];
  }
  return out;
}

std::vector<double> Whiten(const std::vector<double>& x) {
  if (x.empty()) return {};
  double mean = 0;
  for (double v : x) mean += v;
  mean /= static_cast<double>(x.size());
  double var = 0;
  for (double v : x) var += (v - mean) * (v - mean);
  var /= static_cast<double>(x.size());
  const double scale = 1.0 / std::sqrt(var + 1e-8);
  std::vector<double> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = (x[i] - mean) * scale;
  return out;
}

std::vector<double> GroupAdvantages(const std::vector<double>& rewards, int64_t group_size,
                                    double eps) {
  GEMMAPOD_CHECK(group_size >= 2, "GRPO: a group of ", group_size,
                 " sample(s) has no spread; use at least 2 samples per prompt");
  const auto n = static_cast<int64_t>(rewards.size());
  GEMMAPOD_CHECK(n % group_size == 0, "GRPO: ", n, " rewards are not groups of ", group_size);
  std::vector<double> out(rewards.size());
  for (int64_t g = 0; g < n; g += group_size) {
    double mean = 0;
    for (int64_t i = g; i < g + group_size; ++i) mean += rewards[static_cast<size_t>(i)];
    mean /= static_cast<double>(group_size);
    double var = 0;
    for (int64_t i = g; i < g + group_size; ++i) {
      const double d = rewards[static_cast<size_t>(i)] - mean;
      var += d * d;
    }
    const double std = std::sqrt(var / static_cast<double>(group_size - 1));
    for (int64_t i = g; i < g + group_size; ++i) {
      out[static_cast<size_t>(i)] = (rewards[static_cast<size_t>(i)] - mean) / (std + eps);
    }
  }
  return out;
}

LossNormalization ParseLossNormalization(const std::string& name) {
  if (name == "sequence") return LossNormalization::kSequence;
  if (name == "token") return LossNormalization::kToken;
  if (name == "constant") return LossNormalization::kConstant;
  throw Error(StrCat("loss normalisation '", name, "': expected sequence, token or constant"));
}

const char* LossNormalizationName(LossNormalization normalization) {
  switch (normalization) {
    case LossNormalization::kSequence:
      return "sequence";
    case LossNormalization::kToken:
      return "token";
    case LossNormalization::kConstant:
      return "constant";
  }
  return "?";
}

std::vector<double> TokenWeights(LossNormalization normalization,
                                 const std::vector<int64_t>& lengths, int64_t max_length) {
  const auto n = static_cast<double>(lengths.size());
  int64_t tokens = 0;
  for (int64_t l : lengths) tokens += l;
  std::vector<double> out(lengths.size(), 0.0);
  for (size_t i = 0; i < lengths.size(); ++i) {
    if (lengths[i] <= 0) continue;  // an empty response adds nothing
    switch (normalization) {
      case LossNormalization::kSequence:
        out[i] = 1.0 / (n * static_cast<double>(lengths[i]));
        break;
      case LossNormalization::kToken:
        out[i] = 1.0 / static_cast<double>(tokens);
        break;
      case LossNormalization::kConstant:
        GEMMAPOD_CHECK(max_length >= lengths[i], "loss normalisation: a response of ", lengths[i],
                       " tokens is longer than the constant ", max_length);
        out[i] = 1.0 / (n * static_cast<double>(max_length));
        break;
    }
  }
  return out;
}

ClippedPolicyTerm PpoPolicyTerm(double logp, double old_logp, double advantage, double eps) {
  ClippedPolicyTerm t;
  t.ratio = std::exp(logp - old_logp);
  const double unclipped = t.ratio * advantage;
  const double clipped = std::clamp(t.ratio, 1.0 - eps, 1.0 + eps) * advantage;
  t.clipped = clipped < unclipped;
  t.loss = -std::min(unclipped, clipped);
  // d(rho A)/d logp = rho A; the clipped term is constant where it is the minimum.
  t.slope = t.clipped ? 0.0 : -unclipped;
  return t;
}

ClippedValueTerm PpoValueTerm(double value, double old_value, double ret, double eps) {
  ClippedValueTerm t;
  const double step = value - old_value;
  const double kept = old_value + std::clamp(step, -eps, eps);
  const double plain = (value - ret) * (value - ret);
  const double held = (kept - ret) * (kept - ret);
  t.clipped = held > plain;
  t.loss = 0.5 * std::max(plain, held);
  // The clipped branch moves with V only inside the clip range.
  t.slope = t.clipped ? (std::abs(step) <= eps ? kept - ret : 0.0) : value - ret;
  return t;
}

PreferenceLoss ParsePreferenceLoss(const std::string& name) {
  if (name == "dpo") return PreferenceLoss::kDpo;
  if (name == "ipo") return PreferenceLoss::kIpo;
  throw Error(StrCat("preference loss '", name, "': expected dpo or ipo"));
}

PairLoss PreferencePairLoss(PreferenceLoss kind, double logp_chosen, double logp_rejected,
                            double ref_chosen, double ref_rejected, double beta,
                            double label_smoothing) {
  GEMMAPOD_CHECK(beta > 0, "preference loss: beta ", beta, " must be positive");
  const double h = (logp_chosen - ref_chosen) - (logp_rejected - ref_rejected);
  PairLoss out;
  out.margin = beta * h;
  double dh = 0;
  if (kind == PreferenceLoss::kDpo) {
    const double z = beta * h, s = label_smoothing;
    out.loss = (1.0 - s) * Softplus(-z) + s * Softplus(z);
    dh = beta * (-(1.0 - s) * Sigmoid(-z) + s * Sigmoid(z));
  } else {
    const double d = h - 1.0 / (2.0 * beta);
    out.loss = d * d;
    dh = 2.0 * d;
  }
  out.slope_chosen = dh;
  out.slope_rejected = -dh;
  return out;
}

PairLoss BradleyTerryLoss(double reward_chosen, double reward_rejected, double margin) {
  const double x = reward_chosen - reward_rejected - margin;
  PairLoss out;
  out.loss = Softplus(-x);
  out.slope_chosen = -Sigmoid(-x);
  out.slope_rejected = Sigmoid(-x);
  out.margin = reward_chosen - reward_rejected;
  return out;
}

}  // namespace gemmapod
