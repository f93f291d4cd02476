// Preference tuning (DPO, IPO) as a token objective: a micro-batch holds pairs, each chosen
// example followed by its rejected one (PreferenceRows), and the loss of a pair is a function of
// the two sequences' summed log-probabilities under the policy and under the frozen reference
// (training/rl_formulas.h). The head turns its slopes into per-token gradient scales, so the
// backward is the cross-entropy's, once per sequence, whatever the layout.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "training/data.h"
#include "training/gemma_lm.h"
#include "training/rl_formulas.h"

namespace gemmapod {

struct PreferenceOptions {
  PreferenceLoss loss = PreferenceLoss::kDpo;
  double beta = 0.1;
  double label_smoothing = 0;  // cDPO's; DPO only
};

// A sequence's log-probability as the pair loss reads it: the sum over its learned tokens (DPO),
// or their mean (IPO, as its authors and TRL use it).
bool MeanLogProbs(const PreferenceOptions& options);

// What the pairs of a step (or an evaluation) did, added over micro-batches and ranks.
struct PreferenceStats {
  int64_t pairs = 0;
  int64_t correct = 0;  // the chosen answer's implicit reward above the rejected one's
  // The policy itself gives the chosen answer the higher log-probability (what a model would
  // pick between the two; the reference's own ranking at step 0).
  int64_t ranked = 0;
  double loss = 0, chosen_reward = 0, rejected_reward = 0;  // sums over the pairs
  double accuracy() const { return pairs > 0 ? static_cast<double>(correct) / pairs : 0.0; }
  double ranking_accuracy() const { return pairs > 0 ? static_cast<double>(ranked) / pairs : 0.0; }
  double margin() const { return pairs > 0 ? (chosen_reward - rejected_reward) / pairs : 0.0; }
};

// Each sequence's reference log-probability (as MeanLogProbs says), by example.
using ReferenceLogProbs = std::unordered_map<const TrainingExample*, double>;

// The rows of micro-batch pairs: each chosen example followed by its rejected one.
std::vector<const TrainingExample*> PreferenceRows(
    const std::vector<const TrainingExample*>& chosen);

// The objective of a micro-batch of PreferenceRows: the summed pair losses (LossSum counts pairs),
// each pair's stats added to `stats` (null: none).
TokenObjective PreferenceObjective(const std::vector<const TrainingExample*>& rows,
                                   const PreferenceOptions& options,
                                   const ReferenceLogProbs& reference, PreferenceStats* stats);

// A reward model's objective over a micro-batch of PreferenceRows: the Bradley-Terry loss of each
// pair's scores, -log sigmoid(r_chosen - r_rejected - margin) (LossSum counts pairs); `stats`
// counts the pairs scored in the right order, and sums the scores as rewards.
ScoreObjective BradleyTerryObjective(const std::vector<const TrainingExample*>& rows, double margin,
                                     PreferenceStats* stats);

// Records each example's log-probability (sum or mean of its learned tokens) into `out`: what
// scoring sequences with a frozen model runs (no gradient; its loss is 0 over the sequences).
TokenObjective SequenceLogProbObjective(const std::vector<const TrainingExample*>& rows, bool mean,
                                        ReferenceLogProbs& out);

}  // namespace gemmapod
