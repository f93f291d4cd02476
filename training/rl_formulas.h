// The formulas of preference tuning and reinforcement learning from feedback, on plain numbers:
// KL estimators and the adaptive KL coefficient, GAE and advantage whitening, GRPO's group
// advantages and loss weights, the clipped PPO policy and value terms, DPO and IPO, and the
// Bradley-Terry reward-model loss. Each returns its value and the derivatives the trainer feeds
// back into the model (with respect to a token's log-probability, a value or a reward), in
// double. tools/make_rl_fixtures.py checks every one against an independent implementation
// (PyTorch autograd for the derivatives); docs/rlhf.md states the conventions chosen where the
// literature varies (whitening's variance, GRPO's std and loss normalisation).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gemmapod {

// A value and its derivative with respect to the one input that trains.
struct ValueAndSlope {
  double value = 0;
  double slope = 0;
};

// Estimators of KL(pi || pi_ref) from one sampled token, with l = log pi - log pi_ref:
// k1 = l, k2 = l^2 / 2, k3 = exp(-l) - 1 + l (Schulman's unbiased, always >= 0). The slope is
// with respect to log pi.
enum class KlEstimator { kK1, kK2, kK3 };
KlEstimator ParseKlEstimator(const std::string& name);  // "k1" | "k2" | "k3"; errors name it
const char* KlEstimatorName(KlEstimator estimator);
ValueAndSlope KlEstimate(KlEstimator estimator, double logp, double ref_logp);

// The KL coefficient beta: fixed, or adapted towards a target KL (Ziegler et al. 2019):
// beta <- beta * (1 + clip(kl / target - 1, -0.2, 0.2) * n / horizon) after n samples.
struct KlController {
  double beta = 0.05;
  double target = 0;  // 0: fixed
  double horizon = 10000;
  void Update(double kl, int64_t samples);
};

// Generalised advantage estimation over one response of n tokens, the value after its last token
// taken as 0: delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lambda A_{t+1}; the
// returns are A + V.
struct Advantages {
  std::vector<double> advantages, returns;
};
Advantages Gae(const std::vector<double>& rewards, const std::vector<double>& values, double gamma,
               double lambda);

// (x - mean) / sqrt(var + 1e-8) over all of x, var the population variance (divided by n).
std::vector<double> Whiten(const std::vector<double>& x);

// GRPO: the rewards of `group_size` samples per prompt, prompt by prompt; each sample's advantage
// is (r - mean of its group) / (std of its group + eps), std the sample standard deviation
// (divided by G - 1).
std::vector<double> GroupAdvantages(const std::vector<double>& rewards, int64_t group_size,
                                    double eps = 1e-4);

// How a GRPO (or PPO) step's per-token losses are added up, for responses of the given lengths
// (the whole step's): per sequence (the mean over each response, then over the responses: the
// GRPO paper), per token (the sum over the step's tokens divided by their number: DAPO's), or by
// a constant length (the sum divided by responses x max_length: Dr. GRPO's). Returns each
// response's weight per token: the step's loss is sum_i w_i sum_t l_it.
enum class LossNormalization { kSequence, kToken, kConstant };
LossNormalization ParseLossNormalization(const std::string& name);  // sequence|token|constant
const char* LossNormalizationName(LossNormalization normalization);
std::vector<double> TokenWeights(LossNormalization normalization,
                                 const std::vector<int64_t>& lengths, int64_t max_length);

// The clipped surrogate of PPO at one token: rho = exp(logp - old_logp),
// loss = -min(rho A, clip(rho, 1 - eps, 1 + eps) A); `clipped` when the clipped term is the
// smaller objective (it then carries no gradient). Slope with respect to logp.
struct ClippedPolicyTerm {
  double loss = 0;
  double slope = 0;
  double ratio = 1;
  bool clipped = false;
};
ClippedPolicyTerm PpoPolicyTerm(double logp, double old_logp, double advantage, double eps);

// The clipped value loss: 1/2 max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2); slope
// with respect to V; `clipped` when the clipped branch is the larger.
struct ClippedValueTerm {
  double loss = 0;
  double slope = 0;
  bool clipped = false;
};
ClippedValueTerm PpoValueTerm(double value, double old_value, double ret, double eps);

// DPO and IPO on one preference pair from the sequences' log-probabilities under the policy and
// the reference: h = (logp_w - ref_w) - (logp_l - ref_l). DPO: -log sigmoid(beta h), with label
// smoothing s: -(1 - s) log sigmoid(beta h) - s log sigmoid(-beta h) (cDPO). IPO:
// (h - 1 / (2 beta))^2 (its log-probabilities are usually per-token means, the caller's choice).
// The reward margin is beta h; slopes with respect to logp_w and logp_l.
enum class PreferenceLoss { kDpo, kIpo };
PreferenceLoss ParsePreferenceLoss(const std::string& name);  // "dpo" | "ipo"
struct PairLoss {
  double loss = 0;
  double slope_chosen = 0;
  double slope_rejected = 0;
  double margin = 0;  // beta h: the implicit rewards' difference
};
PairLoss PreferencePairLoss(PreferenceLoss kind, double logp_chosen, double logp_rejected,
                            double ref_chosen, double ref_rejected, double beta,
                            double label_smoothing = 0);

// Bradley-Terry on a reward model's scores of a pair: -log sigmoid(r_w - r_l - margin); slopes
// with respect to r_w and r_l.
PairLoss BradleyTerryLoss(double reward_chosen, double reward_rejected, double margin = 0);

// log(1 + exp(x)) without overflow, and the logistic function.
double Softplus(double x);
double Sigmoid(double x);

}  // namespace gemmapod
