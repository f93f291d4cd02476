#include "training/preference_objective.h"

#include "runtime/error.h"

namespace gemmapod {
namespace {

// Each row's learned log-probabilities, summed (or averaged) from the head's flat list.
std::vector<double> PerSequence(const std::vector<const TrainingExample*>& rows,
                                const std::vector<double>& logp, bool mean,
                                std::vector<int64_t>& counts) {
  std::vector<double> out;
  size_t at = 0;
  for (const TrainingExample* e : rows) {
    const int64_t n = LearnedTargets(*e);
    GEMMAPOD_CHECK(n > 0 && at + static_cast<size_t>(n) <= logp.size(), "preference: line ",
                   e->line, " has ", n, " learned tokens where ", logp.size() - at,
                   " log-probabilities are left");
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += logp[at++];
    out.push_back(mean ? sum / static_cast<double>(n) : sum);
    counts.push_back(n);
  }
  GEMMAPOD_CHECK(at == logp.size(), "preference: ", logp.size(), " log-probabilities for ", at,
                 " learned tokens");
  return out;
}

double ReferenceOf(const ReferenceLogProbs& reference, const TrainingExample* e) {
  const auto it = reference.find(e);
  GEMMAPOD_CHECK(it != reference.end(), "preference: no reference log-probability for line ",
                 e->line);
  return it->second;
}

}  // namespace

bool MeanLogProbs(const PreferenceOptions& options) { return options.loss == PreferenceLoss::kIpo; }

std::vector<const TrainingExample*> PreferenceRows(
    const std::vector<const TrainingExample*>& chosen) {
  std::vector<const TrainingExample*> rows;
  for (const TrainingExample* e : chosen) {
    GEMMAPOD_CHECK(e->rejected != nullptr, "preference: line ", e->line,
                   " is not a preference pair");
    rows.push_back(e);
    rows.push_back(e->rejected.get());
  }
  return rows;
}

TokenObjective PreferenceObjective(const std::vector<const TrainingExample*>& rows,
                                   const PreferenceOptions& options,
                                   const ReferenceLogProbs& reference, PreferenceStats* stats) {
  GEMMAPOD_CHECK(rows.size() % 2 == 0, "preference: ", rows.size(),
                 " rows are not chosen/rejected pairs");
  return [rows, options, &reference, stats](const std::vector<double>& logp,
                                            std::vector<double>* dlogp) {
    const bool mean = MeanLogProbs(options);
    std::vector<int64_t> counts;
    const std::vector<double> seq = PerSequence(rows, logp, mean, counts);
    LossSum total;
    if (dlogp != nullptr) dlogp->clear();
    for (size_t p = 0; p < seq.size(); p += 2) {
      const double ref_chosen = ReferenceOf(reference, rows[p]);
      const double ref_rejected = ReferenceOf(reference, rows[p + 1]);
      const PairLoss pair = PreferencePairLoss(options.loss, seq[p], seq[p + 1], ref_chosen,
                                               ref_rejected, options.beta, options.label_smoothing);
      total.sum += pair.loss;
      total.targets += 1;
      if (dlogp != nullptr) {
        // d(mean)/d logp_t = 1 / n: each token of a sequence gets its share of the slope.
        const auto share = [&](double slope, int64_t n) {
          const double each = mean ? slope / static_cast<double>(n) : slope;
          dlogp->insert(dlogp->end(), static_cast<size_t>(n), each);
        };
        share(pair.slope_chosen, counts[p]);
        share(pair.slope_rejected, counts[p + 1]);
      }
      if (stats != nullptr) {
        stats->pairs += 1;
        stats->loss += pair.loss;
        stats->correct += pair.margin > 0 ? 1 : 0;
        stats->ranked += seq[p] > seq[p + 1] ? 1 : 0;
        stats->chosen_reward += options.beta * (seq[p] - ref_chosen);
        stats->rejected_reward += options.beta * (seq[p + 1] - ref_rejected);
      }
    }
    return total;
  };
}

ScoreObjective BradleyTerryObjective(const std::vector<const TrainingExample*>& rows, double margin,
                                     PreferenceStats* stats) {
  GEMMAPOD_CHECK(rows.size() % 2 == 0, "reward: ", rows.size(),
                 " rows are not chosen/rejected pairs");
  return [margin, stats, pairs = rows.size() / 2](const std::vector<double>& scores,
                                                  std::vector<double>* dscore) {
    GEMMAPOD_CHECK(scores.size() == 2 * pairs, "reward: ", scores.size(), " scores for ", pairs,
                   " pairs");
    LossSum total;
    if (dscore != nullptr) dscore->assign(scores.size(), 0.0);
    for (size_t p = 0; p < scores.size(); p += 2) {
      const PairLoss pair = BradleyTerryLoss(scores[p], scores[p + 1], margin);
      total.sum += pair.loss;
      total.targets += 1;
      if (dscore != nullptr) {
        (*dscore)[p] = pair.slope_chosen;
        (*dscore)[p + 1] = pair.slope_rejected;
      }
      if (stats != nullptr) {
        stats->pairs += 1;
        stats->loss += pair.loss;
        stats->correct += scores[p] > scores[p + 1] ? 1 : 0;
        stats->ranked += scores[p] > scores[p + 1] ? 1 : 0;
        stats->chosen_reward += scores[p];
        stats->rejected_reward += scores[p + 1];
      }
    }
    return total;
  };
}

TokenObjective SequenceLogProbObjective(const std::vector<const TrainingExample*>& rows, bool mean,
                                        ReferenceLogProbs& out) {
  return [rows, mean, &out](const std::vector<double>& logp, std::vector<double>* dlogp) {
    GEMMAPOD_CHECK(dlogp == nullptr, "scoring: sequences are scored without a gradient");
    std::vector<int64_t> counts;
    const std::vector<double> seq = PerSequence(rows, logp, mean, counts);
    for (size_t i = 0; i < rows.size(); ++i) out[rows[i]] = seq[i];
    return LossSum{0.0, static_cast<int64_t>(rows.size())};
  };
}

}  // namespace gemmapod
