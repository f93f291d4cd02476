// RecurrentGemma through the `gemmapod` binary: convert (Hugging Face directory and DeepMind state
// dict), logits equal to the reference fixture, and the same logits and greedy text from one rank
// and from four pipeline stages (launch); bad layouts named once.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "tests/launch/npy_relative_error.h"
#include "tests/launch/run_gemmapod.h"

namespace {

namespace fs = std::filesystem;
using gemmapod::Contains;
using gemmapod::Gemmapod;
using gemmapod::MpirunGemmapod;
using Result = gemmapod::CliResult;

// Sequence 0 of tests/fixtures/models/recurrentgemma/reference.json (24 tokens, 3x the window).
constexpr const char* kTokens =
    "2,385,136,119,221,18,449,275,456,58,230,258,27,501,18,75,254,306,257,102,219,131,386,247";

using gemmapod::NpyRelativeError;

class RecurrentCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("rg-cli-" + std::to_string(getpid()));
    fs::create_directories(dir_);
    model_ = (dir_ / "rg.h5").string();
    const Result r = Gemmapod("convert tests/fixtures/models/recurrentgemma/hf " + model_);
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
  std::string model_;
};

TEST_F(RecurrentCli, LogitsMatchTheReferenceOnOneRankAndOnFourStages) {
  const std::string one = (dir_ / "one.npy").string(), four = (dir_ / "four.npy").string();
  Result r = Gemmapod("logits --model " + model_ + " --tokens " + kTokens + " --out " + one);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_LE(NpyRelativeError(one, "tests/fixtures/models/recurrentgemma/prefill_0.npy"), 1e-5);
  r = Gemmapod("launch --pod tests/launch/pods/pp4.yaml -- logits --model " + model_ +
                   " --tokens " + kTokens + " --out " + four,
               120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "tp=1 pp=4 dp=1 over 4 rank")) << r.output;
  EXPECT_LE(NpyRelativeError(four, one), 1e-6);
}

TEST_F(RecurrentCli, GreedyTextOfFourStagesEqualsOneRank) {
  const std::string args = "generate --model " + model_ + " --prompt 'The license' --max-tokens 20";
  const Result one = Gemmapod(args);
  ASSERT_EQ(one.exit_code, 0) << one.output;
  const Result four = Gemmapod("launch --pod tests/launch/pods/pp4.yaml -- " + args, 120);
  ASSERT_EQ(four.exit_code, 0) << four.output;
  EXPECT_NE(four.output.find(one.output), std::string::npos) << one.output << "\n" << four.output;
}

TEST_F(RecurrentCli, TheDeepMindStateDictConvertsToTheSameModel) {
  const std::string dm = (dir_ / "dm.h5").string(), out = (dir_ / "dm.npy").string();
  Result r = Gemmapod("convert tests/fixtures/models/recurrentgemma/dm.safetensors " + dm +
                      " --config configs/models/tiny-recurrentgemma.yaml");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = Gemmapod("logits --model " + dm + " --tokens " + kTokens + " --out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // The state dict holds bf16 weights (the same values as the f32 Hugging Face ones).
  EXPECT_LE(NpyRelativeError(out, "tests/fixtures/models/recurrentgemma/prefill_0.npy"), 1e-4);
}

// --precision fast rounds the activations to bf16 before each product with bf16 weights: the
// logits move by bf16's rounding, and four pipeline stages give one rank's logits.
TEST_F(RecurrentCli, FastPrecisionOnFourStagesEqualsOneRank) {
  const std::string bf16 = (dir_ / "rg-bf16.h5").string();
  Result r = Gemmapod("convert tests/fixtures/models/recurrentgemma/hf " + bf16 + " --dtype bf16");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string exact = (dir_ / "exact.npy").string(), fast = (dir_ / "fast.npy").string(),
                    four = (dir_ / "fast4.npy").string();
  // Two sequences: two micro-batches in flight over the four stages.
  const std::string args =
      "logits --model " + bf16 + " --tokens " + kTokens + " --tokens " + kTokens + " --out ";
  r = Gemmapod(args + exact);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = Gemmapod(args + fast + " --precision fast");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = Gemmapod("launch --pod tests/launch/pods/pp4.yaml -- " + args + four + " --precision fast",
               120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const double moved = NpyRelativeError(fast, exact);
  EXPECT_GT(moved, 1e-5) << "--precision fast changed nothing";
  EXPECT_LE(moved, 3e-2);
  EXPECT_LE(NpyRelativeError(four, fast), 1e-6);
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Two data-parallel replicas of a two-stage pipeline score two sequences each as one rank does,
// and four stages generate three prompts at once (micro-batches in flight) with one rank's text.
TEST_F(RecurrentCli, DataParallelReplicasAndMicroBatchesEqualOneRank) {
  const std::string second = "2,17,300,41,42,43,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22";
  const std::string one = (dir_ / "one.npy").string(), two = (dir_ / "dp.npy").string();
  const std::string args =
      "logits --model " + model_ + " --tokens " + kTokens + " --tokens " + second + " --out ";
  Result r = Gemmapod(args + one);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = Gemmapod("launch --pod tests/launch/pods/pp2-dp2.yaml -- " + args + two, 120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "tp=1 pp=2 dp=2 over 4 rank")) << r.output;
  EXPECT_LE(NpyRelativeError(two, one), 1e-6);

  const std::string prompts =
      "generate --model " + model_ +
      " --prompt 'The license' --prompt 'Copyright holders' --prompt 'a b c' --max-tokens 12";
  const Result ref = Gemmapod(prompts);
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  EXPECT_EQ(Count(ref.output, "--- prompt "), 3u) << ref.output;
  for (const char* pod : {"pp4", "pp2-dp2"}) {
    const Result got =
        Gemmapod("launch --pod tests/launch/pods/" + std::string(pod) + ".yaml -- " + prompts, 120);
    ASSERT_EQ(got.exit_code, 0) << got.output;
    EXPECT_NE(got.output.find(ref.output), std::string::npos) << pod << "\n"
                                                              << ref.output << "\n"
                                                              << got.output;
  }
}

TEST_F(RecurrentCli, LayoutsThatCannotWorkAreNamedOnce) {
  // 3 heads do not split over 2 ranks.
  Result r = MpirunGemmapod(2, "generate --model " + model_ + " --prompt hi");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(Count(r.output, "tp 2 does not divide its 3 heads"), 1u) << r.output;
  r = Gemmapod("generate --model " + model_ + " --prompt hi --precision half");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(Contains(r.output, "--precision: half not in")) << r.output;
}

TEST_F(RecurrentCli, PlanShowsEachRanksWeightsAndState) {
  Result r = Gemmapod(
      "plan --pod configs/pods/local-4.yaml --model "
      "configs/models/recurrentgemma-2b.yaml --batch 8");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "2682862080 parameters")) << r.output;
  EXPECT_TRUE(Contains(r.output, "\\(0,1,1\\) +13-25")) << r.output;
  EXPECT_TRUE(Contains(r.output, "fits")) << r.output;
  r = Gemmapod("plan --pod configs/pods/local.yaml --model " + model_);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "tp 2 does not divide its 3 heads")) << r.output;
}

TEST_F(RecurrentCli, BadConversionInputIsNamed) {
  // A Hugging Face config with no heads.
  const fs::path hf = dir_ / "hf";
  fs::copy("tests/fixtures/models/recurrentgemma/hf", hf);
  {
    std::ifstream in(hf / "config.json");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::string heads = "\"num_attention_heads\": 3";
    text.replace(text.find(heads), heads.size(), "\"num_attention_heads\": 0");
    std::ofstream(hf / "config.json") << text;
  }
  const std::string out = (dir_ / "bad.h5").string();
  Result r = Gemmapod("convert " + hf.string() + " " + out);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "key 'num_attention_heads': must be positive")) << r.output;
  EXPECT_FALSE(fs::exists(out));
  // A DeepMind state dict against a config of another shape: the tensor is named.
  r = Gemmapod("convert tests/fixtures/models/recurrentgemma/dm.safetensors " + out +
               " --config configs/models/recurrentgemma-2b.yaml");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "tensor 'blocks.0.recurrent_block.conv_1d.w' has shape"))
      << r.output;
  EXPECT_FALSE(fs::exists(out));
  // --config means nothing for a source that carries its config.
  r = Gemmapod("convert tests/fixtures/models/recurrentgemma/hf " + out +
               " --config configs/models/tiny-recurrentgemma.yaml");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "--config applies to a state dict")) << r.output;
}

}  // namespace
