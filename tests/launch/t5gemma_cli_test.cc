// T5Gemma through the `gemmapod` binary: a converted fixture's logits equal transformers' (one
// sequence and a right-padded batch), the encoder on two tensor-parallel ranks and the decoder on
// two pipeline stages give one rank's logits and greedy text, the plan of the 9B-2B pair on two
// nodes, and bad input named once.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/launch/npy_relative_error.h"
#include "tests/launch/run_gemmapod.h"

namespace {

namespace fs = std::filesystem;
using gemmapod::Gemmapod;
using gemmapod::NpyRelativeError;
using Result = gemmapod::CliResult;

const fs::path kFixture = "tests/fixtures/models/t5gemma/unbalanced";

// Whether `text` holds `literal` (plain text: the messages are full of regex characters).
bool Has(const std::string& text, const std::string& literal) {
  return text.find(literal) != std::string::npos;
}

std::string Join(const std::vector<int32_t>& ids) {
  std::string out;
  for (int32_t id : ids) {
    if (!out.empty()) out += ',';
    out += std::to_string(id);
  }
  return out;
}

class T5GemmaCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("t5g-cli-" + std::to_string(getpid()));
    fs::create_directories(dir_);
    model_ = (dir_ / "t5.h5").string();
    const Result r = Gemmapod("convert " + kFixture.string() + " " + model_);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    std::ifstream in(kFixture / "reference.json");
    reference_ = nlohmann::json::parse(in);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string CaseArgs(size_t i) const {
    const auto& c = reference_.at("cases")[i];
    return " --encoder-tokens " + Join(c.at("encoder_ids").get<std::vector<int32_t>>()) +
           " --tokens " + Join(c.at("decoder_ids").get<std::vector<int32_t>>());
  }

  fs::path dir_;
  std::string model_;
  nlohmann::json reference_;
};

TEST_F(T5GemmaCli, LogitsMatchTheReferenceOnOneRankAndSplitOverFour) {
  const std::string one = (dir_ / "one.npy").string(), four = (dir_ / "four.npy").string();
  Result r = Gemmapod("logits --model " + model_ + CaseArgs(0) + " --out " + one);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_LE(NpyRelativeError(one, (kFixture / "case_0_logits.npy").string()), 1e-4);
  r = Gemmapod("launch --pod tests/launch/pods/t5gemma-split.yaml -- logits --model " + model_ +
                   CaseArgs(0) + " --out " + four,
               120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "encoder tp 2 x 1 stage(s) | decoder tp 1 x 2 stage(s)")) << r.output;
  EXPECT_LE(NpyRelativeError(four, one), 1e-5);
}

// --precision fast rounds the activations to bf16 before each product with bf16 weights: the
// logits move by bf16's rounding, and the four-rank split gives one rank's logits.
TEST_F(T5GemmaCli, FastPrecisionSplitOverFourEqualsOneRank) {
  const std::string bf16 = (dir_ / "t5-bf16.h5").string();
  Result r = Gemmapod("convert " + kFixture.string() + " " + bf16 + " --dtype bf16");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string exact = (dir_ / "exact.npy").string(), fast = (dir_ / "fast.npy").string(),
                    four = (dir_ / "fast4.npy").string();
  const std::string args = "logits --model " + bf16 + CaseArgs(0) + " --out ";
  r = Gemmapod(args + exact);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = Gemmapod(args + fast + " --precision fast");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = Gemmapod(
      "launch --pod tests/launch/pods/t5gemma-split.yaml -- " + args + four + " --precision fast",
      120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const double moved = NpyRelativeError(fast, exact);
  EXPECT_GT(moved, 1e-5) << "--precision fast changed nothing";
  EXPECT_LE(moved, 3e-2);
  EXPECT_LE(NpyRelativeError(four, fast), 1e-5);
}

TEST_F(T5GemmaCli, APaddedBatchMatchesTheReference) {
  const auto& padded = reference_.at("padded");
  const auto encoder = padded.at("encoder_ids").get<std::vector<std::vector<int32_t>>>();
  const auto decoder = padded.at("decoder_ids").get<std::vector<std::vector<int32_t>>>();
  const std::string out = (dir_ / "padded.npy").string();
  const Result r = Gemmapod("logits --model " + model_ + " --encoder-tokens " + Join(encoder[0]) +
                            " --tokens " + Join(decoder[0]) + " --encoder-tokens " +
                            Join(encoder[1]) + " --tokens " + Join(decoder[1]) + " --out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "[2, 7, 512]")) << r.output;
  EXPECT_LE(NpyRelativeError(out, (kFixture / "padded_logits.npy").string()), 1e-4);
}

TEST_F(T5GemmaCli, GreedyTextSplitOverFourEqualsOneRank) {
  const std::string args = "generate --model " + model_ + " --prompt 'The license' --max-tokens 12";
  const Result one = Gemmapod(args);
  ASSERT_EQ(one.exit_code, 0) << one.output;
  ASSERT_FALSE(one.output.empty());
  const Result four = Gemmapod("launch --pod tests/launch/pods/t5gemma-split.yaml -- " + args, 120);
  ASSERT_EQ(four.exit_code, 0) << four.output;
  EXPECT_NE(four.output.find(one.output), std::string::npos) << one.output << "\n" << four.output;
}

// Three prompts through two decoder stages move as micro-batches in flight (the engine's
// generation loop, tokens sampled on the vocabulary shards) and give one rank's texts.
TEST_F(T5GemmaCli, BatchedPromptsSplitOverFourEqualOneRank) {
  const std::string args = "generate --model " + model_ +
                           " --prompt 'The license' --prompt 'Hello world, again' --prompt 'a b c'"
                           " --max-tokens 10";
  const Result one = Gemmapod(args);
  ASSERT_EQ(one.exit_code, 0) << one.output;
  ASSERT_TRUE(Has(one.output, "--- prompt 2 ---")) << one.output;
  const Result four = Gemmapod("launch --pod tests/launch/pods/t5gemma-split.yaml -- " + args, 120);
  ASSERT_EQ(four.exit_code, 0) << four.output;
  EXPECT_TRUE(Has(four.output, one.output)) << one.output << "\n" << four.output;
}

// Two data-parallel replicas (encoder and decoder on a stage each) split the sequences and the
// prompts, and give one rank's logits and texts in order.
TEST_F(T5GemmaCli, DataParallelReplicasEqualOneRank) {
  const std::string one = (dir_ / "one.npy").string(), two = (dir_ / "dp.npy").string();
  // Three sequences of one decoder length: case 0, then case 1's encoder input under case 0's
  // decoder ids, then case 0 again.
  const auto& cases = reference_.at("cases");
  const std::string other =
      " --encoder-tokens " + Join(cases[1].at("encoder_ids").get<std::vector<int32_t>>()) +
      " --tokens " + Join(cases[0].at("decoder_ids").get<std::vector<int32_t>>());
  const std::string args =
      "logits --model " + model_ + CaseArgs(0) + other + CaseArgs(0) + " --out ";
  Result r = Gemmapod(args + one);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = Gemmapod("launch --pod tests/launch/pods/t5gemma-dp2.yaml -- " + args + two, 120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "x dp 2, 4 rank(s)")) << r.output;
  // One rank runs the three sequences as one batch, the replicas two and one: products of other
  // row counts, so f32 rounding differs (measured 1.6e-6), as for the split layouts above.
  EXPECT_LE(NpyRelativeError(two, one), 1e-5);

  const std::string prompts = "generate --model " + model_ +
                              " --prompt 'The license' --prompt 'Hello world, again'"
                              " --prompt 'a b c' --max-tokens 10";
  const Result ref = Gemmapod(prompts);
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  const Result got = Gemmapod("launch --pod tests/launch/pods/t5gemma-dp2.yaml -- " + prompts, 120);
  ASSERT_EQ(got.exit_code, 0) << got.output;
  EXPECT_TRUE(Has(got.output, ref.output)) << ref.output << "\n" << got.output;
}

TEST_F(T5GemmaCli, PromptsBatchedTogetherGiveWhatEachGivesAlone) {
  const std::string model = "generate --model " + model_ + " --max-tokens 10";
  const Result a = Gemmapod(model + " --prompt 'The license'");
  const Result b = Gemmapod(model + " --prompt 'Hello world, again'");
  ASSERT_EQ(a.exit_code, 0) << a.output;
  ASSERT_EQ(b.exit_code, 0) << b.output;
  const std::string batch = " --prompt 'The license' --prompt 'Hello world, again'";
  const std::string want = "--- prompt 0 ---\n" + a.output + "--- prompt 1 ---\n" + b.output;
  const Result one = Gemmapod(model + batch);
  ASSERT_EQ(one.exit_code, 0) << one.output;
  EXPECT_EQ(one.output, want);
  const Result four =
      Gemmapod("launch --pod tests/launch/pods/t5gemma-split.yaml -- " + model + batch, 120);
  ASSERT_EQ(four.exit_code, 0) << four.output;
  EXPECT_TRUE(Has(four.output, want)) << four.output;
}

TEST_F(T5GemmaCli, PlansTheNineBTwoBPairOnTwoNodes) {
  const Result r = Gemmapod(
      "plan --pod configs/pods/2-node-t5gemma.yaml --model configs/models/t5gemma-9b-2b.yaml "
      "--context 4096");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "12292375296 parameters")) << r.output;
  EXPECT_TRUE(Has(r.output, "encoder tp 2 x 1 stage(s) | decoder tp 2 x 1 stage(s)"));
  // The encoder's ranks on the first node hold half the 9B stack each and no decoder cache; the
  // decoder's on the second hold the 2B stack's halves and both caches.
  EXPECT_TRUE(Has(r.output, "gpu-b0           0     enc      0-41      EN       8815.3 MiB"))
      << r.output;
  EXPECT_TRUE(Has(r.output, "gpu-b1           1     dec      0-25      eH       2910.4 MiB"))
      << r.output;
  EXPECT_TRUE(Has(r.output, "fits"));
}

TEST_F(T5GemmaCli, BadInputIsNamed) {
  const std::string out = (dir_ / "bad.npy").string();
  Result r = Gemmapod("logits --model " + model_ + " --tokens 2,5 --out " + out);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(Has(r.output, "give the encoder's ids with --encoder-tokens")) << r.output;
  r = Gemmapod("logits --model " + model_ + " --encoder-tokens 2,5 --tokens 3,5 --out " + out);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(Has(r.output, "must start with BOS (2)")) << r.output;
  r = Gemmapod("logits --model " + model_ + " --encoder-tokens 2,900 --tokens 2,5 --out " + out);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(Has(r.output, "--encoder-tokens: entry 1 (900) is outside the vocabulary of 512"))
      << r.output;
  r = Gemmapod("logits --model " + model_ +
               " --encoder-tokens 2,5 --tokens 2,5 --tokens 2,6 --out " + out);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(Has(r.output, "1 --encoder-tokens sequence(s) for 2 --tokens")) << r.output;
  // The tiny model's encoder takes 256 positions.
  std::string long_ids = "2";
  for (int i = 0; i < 256; ++i) long_ids += ",7";
  r = Gemmapod("logits --model " + model_ + " --encoder-tokens " + long_ids +
               " --tokens 2,5 --out " + out);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(Has(r.output,
                  "--encoder-tokens: 257 ids, more than the encoder's "
                  "max_position_embeddings 256"))
      << r.output;
  EXPECT_FALSE(fs::exists(out));
  // A layout the model cannot take: the pod's encoder tp 2 over the 4-rank job is fine, but tp 3
  // does not divide the decoder's heads.
  const fs::path pod = dir_ / "tp3.yaml";
  std::ofstream(pod) << "version: 1\nnodes:\n  - {host: localhost, devices: 3, kind: cpu}\n"
                        "parallelism: {tp: 3, pp: 1}\nlaunch: {oversubscribe: true}\n";
  r = Gemmapod("launch --pod " + pod.string() + " -- logits --model " + model_ + CaseArgs(0) +
                   " --out " + out,
               120);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(Has(r.output, "decoder tp: tp 3 does not divide the 4 query heads")) << r.output;
}

TEST_F(T5GemmaCli, ARandomCheckpointOfAConfigRunsSplitAsOnOneRank) {
  const std::string random = (dir_ / "random.h5").string();
  Result r = Gemmapod("random-checkpoint --config configs/models/tiny-t5gemma.yaml --out " +
                      random + " --tokenizer tests/fixtures/tokenizer/tiny_gemma.model");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "tiny-t5gemma with RANDOM weights (seed 1, bf16, 655008 parameters)"))
      << r.output;
  const std::string one = (dir_ / "r1.npy").string(), four = (dir_ / "r4.npy").string();
  r = Gemmapod("logits --model " + random + CaseArgs(1) + " --out " + one);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = Gemmapod("launch --pod tests/launch/pods/t5gemma-split.yaml -- logits --model " + random +
                   CaseArgs(1) + " --out " + four,
               120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_LE(NpyRelativeError(four, one), 1e-5);
  // Not the fixture's weights: the random model's logits are its own.
  EXPECT_GT(NpyRelativeError(one, (kFixture / "case_1_logits.npy").string()), 0.1);
}

TEST_F(T5GemmaCli, EncoderTokensOnADecoderOnlyModelAreRefused) {
  const std::string gemma = (dir_ / "g.h5").string(), out = (dir_ / "g.npy").string();
  ASSERT_EQ(Gemmapod("convert tests/fixtures/models/gemma1 " + gemma).exit_code, 0);
  const Result r =
      Gemmapod("logits --model " + gemma + " --encoder-tokens 2,5 --tokens 2,5 --out " + out);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(Has(r.output, "is a decoder-only model; it takes --tokens alone")) << r.output;
}

}  // namespace
