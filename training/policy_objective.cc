#include "training/policy_objective.h"

#include <algorithm>
#include <cmath>

#include "runtime/error.h"

namespace gemmapod {

TokenObjective GrpoObjective(const std::vector<const TrainingExample*>& rows,
                             const GrpoOptions& options, const PolicySamples& samples,
                             PolicyStats* stats) {
  return [rows, options, &samples, stats](const std::vector<double>& logp,
                                          std::vector<double>* dlogp) {
    LossSum total;
    if (dlogp != nullptr) dlogp->assign(logp.size(), 0.0);
    size_t at = 0;
    for (const TrainingExample* e : rows) {
      const auto it = samples.find(e);
      GEMMAPOD_CHECK(it != samples.end(), "grpo: no rollout record for a sampled answer");
      const PolicySample& s = it->second;
      const auto n = static_cast<size_t>(LearnedTargets(*e));
      GEMMAPOD_CHECK(s.old_logp.size() == n && at + n <= logp.size() &&
                         (options.beta == 0 || s.ref_logp.size() == n),
                     "grpo: an answer of ", n, " tokens with ", s.old_logp.size(),
                     " generator log-probabilities");
      for (size_t t = 0; t < n; ++t, ++at) {
        const ClippedPolicyTerm term =
            PpoPolicyTerm(logp[at], s.old_logp[t], s.advantage, options.clip);
        double loss = term.loss, slope = term.slope;
        if (options.beta > 0) {
          const ValueAndSlope kl = KlEstimate(options.kl, logp[at], s.ref_logp[t]);
          loss += options.beta * kl.value;
          slope += options.beta * kl.slope;
          if (stats != nullptr) stats->kl += kl.value;
        }
        total.sum += s.weight * loss;
        total.targets += 1;
        if (dlogp != nullptr) (*dlogp)[at] = s.weight * slope;
        if (stats != nullptr) {
          stats->tokens += 1;
          stats->clipped += term.clipped ? 1 : 0;
          stats->ratio_gap = std::max(stats->ratio_gap, std::abs(logp[at] - s.old_logp[t]));
        }
      }
    }
    GEMMAPOD_CHECK(at == logp.size(), "grpo: ", logp.size(), " log-probabilities for ", at,
                   " answer tokens");
    return total;
  };
}

TokenObjective TokenLogProbObjective(
    const std::vector<const TrainingExample*>& rows,
    std::unordered_map<const TrainingExample*, std::vector<double>>& out) {
  return [rows, &out](const std::vector<double>& logp, std::vector<double>* dlogp) {
    GEMMAPOD_CHECK(dlogp == nullptr, "scoring: answers are scored without a gradient");
    size_t at = 0;
    for (const TrainingExample* e : rows) {
      const auto n = static_cast<size_t>(LearnedTargets(*e));
      GEMMAPOD_CHECK(at + n <= logp.size(), "scoring: too few log-probabilities");
      out[e].assign(logp.begin() + static_cast<std::ptrdiff_t>(at),
                    logp.begin() + static_cast<std::ptrdiff_t>(at + n));
      at += n;
    }
    return LossSum{0.0, static_cast<int64_t>(at)};
  };
}

}  // namespace gemmapod
