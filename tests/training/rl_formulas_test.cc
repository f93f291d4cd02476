// Every RLHF loss and advantage of training/rl_formulas.h against an independent implementation
// of the published formulas (tools/golden/make_rl_fixtures.py: PyTorch in float64, derivatives by
// autograd), to 1e-6 and mostly to rounding.
#include "training/rl_formulas.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "runtime/error.h"

namespace gemmapod {
namespace {

const nlohmann::json& Fixtures() {
  static const nlohmann::json fixtures = [] {
    std::ifstream in("tests/fixtures/rl/formulas.json");
    EXPECT_TRUE(in.good()) << "run from the repository root";
    return nlohmann::json::parse(in);
  }();
  return fixtures;
}

// Absolute below 1e-6, and relative to the value's size for large ones.
void ExpectClose(double ours, double reference, const std::string& what) {
  EXPECT_LE(std::abs(ours - reference), 1e-6 * std::max(1.0, std::abs(reference)))
      << what << ": " << ours << " vs " << reference;
}

std::vector<double> Doubles(const nlohmann::json& j) { return j.get<std::vector<double>>(); }

TEST(RlFormulas, KlEstimatorsAndTheirSlopes) {
  const nlohmann::json& cases = Fixtures()["kl"];
  ASSERT_GE(cases.size(), 30u);
  for (const auto& c : cases) {
    const ValueAndSlope kl = KlEstimate(ParseKlEstimator(c["estimator"]), c["logp"], c["ref_logp"]);
    const std::string what = c.dump();
    // k3 of nearly equal log-probabilities is ~1e-19: compare to rounding, not to 1e-6.
    EXPECT_LE(std::abs(kl.value - c["value"].get<double>()),
              1e-12 * std::max(1e-6, std::abs(c["value"].get<double>())) + 1e-15)
        << what << ": " << kl.value;
    ExpectClose(kl.slope, c["slope"], what);
  }
  EXPECT_THROW(ParseKlEstimator("k4"), Error);
}

TEST(RlFormulas, AdaptiveKlCoefficient) {
  for (const auto& c : Fixtures()["kl_controller"]) {
    KlController controller{c["beta"], c["target"], c["horizon"]};
    const auto& updates = c["updates"];
    for (size_t i = 0; i < updates.size(); ++i) {
      controller.Update(updates[i][0], updates[i][1]);
      ExpectClose(controller.beta, c["betas"][i], c.dump());
    }
  }
}

TEST(RlFormulas, GeneralisedAdvantagesAndReturns) {
  for (const auto& c : Fixtures()["gae"]) {
    const Advantages a = Gae(Doubles(c["rewards"]), Doubles(c["values"]), c["gamma"], c["lambda"]);
    const std::vector<double> adv = Doubles(c["advantages"]), ret = Doubles(c["returns"]);
    ASSERT_EQ(a.advantages.size(), adv.size());
    for (size_t i = 0; i < adv.size(); ++i) {
      ExpectClose(a.advantages[i], adv[i], "advantage " + std::to_string(i));
      ExpectClose(a.returns[i], ret[i], "return " + std::to_string(i));
    }
  }
  EXPECT_THROW(Gae({1, 2}, {1}, 1, 1), Error);
}

TEST(RlFormulas, Whitening) {
  for (const auto& c : Fixtures()["whiten"]) {
    const std::vector<double> ours = Whiten(Doubles(c["x"])), ref = Doubles(c["whitened"]);
    ASSERT_EQ(ours.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) ExpectClose(ours[i], ref[i], c.dump());
  }
}

TEST(RlFormulas, GroupNormalisedAdvantages) {
  for (const auto& c : Fixtures()["group_advantages"]) {
    const std::vector<double> ours = GroupAdvantages(Doubles(c["rewards"]), c["group_size"]);
    const std::vector<double> ref = Doubles(c["advantages"]);
    ASSERT_EQ(ours.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) ExpectClose(ours[i], ref[i], c.dump());
  }
  EXPECT_THROW(GroupAdvantages({1, 2, 3}, 2), Error);
  EXPECT_THROW(GroupAdvantages({1, 2}, 1), Error);
}

TEST(RlFormulas, LossNormalisations) {
  for (const auto& c : Fixtures()["token_weights"]) {
    const std::vector<double> ours =
        TokenWeights(ParseLossNormalization(c["mode"]), c["lengths"].get<std::vector<int64_t>>(),
                     c["max_length"]);
    const std::vector<double> ref = Doubles(c["weights"]);
    ASSERT_EQ(ours.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) ExpectClose(ours[i], ref[i], c.dump());
  }
  EXPECT_THROW(TokenWeights(LossNormalization::kConstant, {5}, 4), Error);
}

TEST(RlFormulas, ClippedPolicyTerm) {
  int clipped = 0;
  for (const auto& c : Fixtures()["ppo_policy"]) {
    const ClippedPolicyTerm t = PpoPolicyTerm(c["logp"], c["old_logp"], c["advantage"], c["eps"]);
    ExpectClose(t.loss, c["loss"], c.dump());
    ExpectClose(t.slope, c["slope"], c.dump());
    ExpectClose(t.ratio, c["ratio"], c.dump());
    EXPECT_EQ(t.clipped, c["clipped"].get<bool>()) << c.dump();
    clipped += t.clipped ? 1 : 0;
  }
  EXPECT_GT(clipped, 0);  // the fixtures reach both branches
}

TEST(RlFormulas, ClippedValueTerm) {
  int clipped = 0;
  for (const auto& c : Fixtures()["ppo_value"]) {
    const ClippedValueTerm t = PpoValueTerm(c["value"], c["old_value"], c["return"], c["eps"]);
    ExpectClose(t.loss, c["loss"], c.dump());
    ExpectClose(t.slope, c["slope"], c.dump());
    EXPECT_EQ(t.clipped, c["clipped"].get<bool>()) << c.dump();
    clipped += t.clipped ? 1 : 0;
  }
  EXPECT_GT(clipped, 0);
}

TEST(RlFormulas, DpoAndIpo) {
  for (const auto& c : Fixtures()["preference"]) {
    const PairLoss p =
        PreferencePairLoss(ParsePreferenceLoss(c["kind"]), c["logp_chosen"], c["logp_rejected"],
                           c["ref_chosen"], c["ref_rejected"], c["beta"], c["label_smoothing"]);
    ExpectClose(p.loss, c["loss"], c.dump());
    ExpectClose(p.slope_chosen, c["slope_chosen"], c.dump());
    ExpectClose(p.slope_rejected, c["slope_rejected"], c.dump());
    ExpectClose(p.margin, c["margin"], c.dump());
  }
  EXPECT_THROW(ParsePreferenceLoss("kto"), Error);
  EXPECT_THROW(PreferencePairLoss(PreferenceLoss::kDpo, -1, -2, -1, -2, 0.0), Error);
}

TEST(RlFormulas, BradleyTerry) {
  for (const auto& c : Fixtures()["bradley_terry"]) {
    const PairLoss p = BradleyTerryLoss(c["reward_chosen"], c["reward_rejected"], c["margin"]);
    ExpectClose(p.loss, c["loss"], c.dump());
    ExpectClose(p.slope_chosen, c["slope_chosen"], c.dump());
    ExpectClose(p.slope_rejected, c["slope_rejected"], c.dump());
    EXPECT_TRUE(std::isfinite(p.loss));
  }
}

}  // namespace
}  // namespace gemmapod
