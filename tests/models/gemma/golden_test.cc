// Our Gemma 1, 2 and 3 against Hugging Face transformers. tools/golden/make_gemma_fixtures.py built
// tiny random models with the reference implementation (versions pinned there) and recorded their
// logits for three token sequences longer than the sliding window, plus a greedy continuation.
// Each fixture is converted with the code behind `gemmapod convert`, loaded back from the .h5
// file, and must reproduce the reference for a full prefill, for step-by-step decode through the
// KV cache, and for the three sequences batched together.
//
// Tolerance: the issue's bound is max |ours - reference| <= 1e-4 * max |reference logit| in f32.
// What we reach (printed as GOLDEN_MEASURED by each run), max error / max |logit|:
//   gemma1, gemma3 (f32 weights):  4.8e-7 .. 7.8e-7, prefill and step-by-step decode
//   gemma2 (bf16 weights, sharded): 8.9e-6 .. 1.5e-5 (the split-activation bf16 products)
// Each fixture is held to a bound a few times above what it reaches, so a regression far below
// the issue's 1e-4 still fails.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "models/gemma/gemma_checkpoint.h"
#include "models/import/convert.h"
#include "runtime/checkpoint/npy.h"
#include "runtime/cpu/ops.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;

constexpr double kIssueBound = 1e-4;

double Tolerance(const std::string& fixture) {
  const double reached = fixture == "gemma2" ? 5e-5 : 2.5e-6;
  return std::min(reached, kIssueBound);
}

struct Reference {
  std::vector<std::vector<int32_t>> sequences;
  std::vector<Tensor> logits;  // per sequence, f32 [len, vocab]
  std::vector<int32_t> greedy_prompt;
  std::vector<int32_t> greedy_continuation;
};

Reference LoadReference(const fs::path& dir) {
  std::ifstream in(dir / "reference.json");
  EXPECT_TRUE(in.good()) << dir;
  const nlohmann::json j = nlohmann::json::parse(in);
  Reference r;
  r.sequences = j.at("sequences").get<std::vector<std::vector<int32_t>>>();
  for (size_t i = 0; i < r.sequences.size(); ++i) {
    r.logits.push_back(ReadNpy((dir / StrCat("logits_", i, ".npy")).string()));
  }
  r.greedy_prompt = j.at("greedy_prompt").get<std::vector<int32_t>>();
  r.greedy_continuation = j.at("greedy_continuation").get<std::vector<int32_t>>();
  return r;
}

// max |ours - ref| / max |ref| over rows [row_begin, row_begin + ours.dim(0)) of ref.
double RelativeError(const Tensor& ours, const Tensor& ref, int64_t row_begin) {
  const int64_t cols = ref.dim(1);
  EXPECT_EQ(ours.dim(1), cols);
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < ref.numel(); ++i)
    scale = std::max<double>(scale, std::abs(ref.data<float>()[i]));
  for (int64_t r = 0; r < ours.dim(0); ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const double d =
          ours.data<float>()[r * cols + c] - ref.data<float>()[(row_begin + r) * cols + c];
      diff = std::max(diff, std::abs(d));
    }
  }
  return diff / scale;
}

class GoldenTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    fixture_ = fs::path("tests/fixtures/models") / GetParam();
    ASSERT_TRUE(fs::exists(fixture_ / "config.json")) << fixture_;
    reference_ = LoadReference(fixture_);
    checkpoint_ = fs::temp_directory_path() / StrCat("golden-", GetParam(), "-", getpid(), ".h5");
    Convert(fixture_.string(), checkpoint_.string(), ConvertOptions{});
  }
  void TearDown() override { fs::remove(checkpoint_); }

  fs::path fixture_;
  fs::path checkpoint_;
  Reference reference_;
};

TEST_P(GoldenTest, FullPrefillMatchesReference) {
  GemmaDecoder model = LoadGemmaCheckpoint(checkpoint_.string());
  for (size_t s = 0; s < reference_.sequences.size(); ++s) {
    const auto& tokens = reference_.sequences[s];
    KvCache cache(model.config(), 1, static_cast<int64_t>(tokens.size()));
    const Tensor logits = model.Forward({{SequenceChunk{0, tokens}}}, cache, LogitRows::kAllTokens);
    const double err = RelativeError(logits, reference_.logits[s], 0);
    std::printf("GOLDEN_MEASURED %s prefill seq %zu: %.3g\n", GetParam(), s, err);
    EXPECT_LE(err, Tolerance(GetParam())) << "sequence " << s;
  }
}

TEST_P(GoldenTest, StepByStepDecodeMatchesReference) {
  GemmaDecoder model = LoadGemmaCheckpoint(checkpoint_.string());
  for (size_t s = 0; s < reference_.sequences.size(); ++s) {
    const auto& tokens = reference_.sequences[s];
    KvCache cache(model.config(), 1, static_cast<int64_t>(tokens.size()));
    double worst = 0;
    for (size_t i = 0; i < tokens.size(); ++i) {
      const Tensor row =
          model.Forward({{SequenceChunk{0, {tokens[i]}}}}, cache, LogitRows::kLastToken);
      worst = std::max(worst, RelativeError(row, reference_.logits[s], static_cast<int64_t>(i)));
    }
    std::printf("GOLDEN_MEASURED %s decode seq %zu: %.3g\n", GetParam(), s, worst);
    EXPECT_LE(worst, Tolerance(GetParam())) << "sequence " << s;
  }
}

TEST_P(GoldenTest, BatchedSequencesMatchReference) {
  GemmaDecoder model = LoadGemmaCheckpoint(checkpoint_.string());
  const int64_t n = static_cast<int64_t>(reference_.sequences.size());
  KvCache cache(model.config(), n, 64);
  std::vector<SequenceChunk> batch;
  for (int64_t s = 0; s < n; ++s)
    batch.push_back({s, reference_.sequences[static_cast<size_t>(s)]});
  const Tensor logits = model.Forward(batch, cache, LogitRows::kAllTokens);
  int64_t row = 0;
  for (int64_t s = 0; s < n; ++s) {
    const int64_t len = static_cast<int64_t>(reference_.sequences[static_cast<size_t>(s)].size());
    const Tensor mine = logits.Slice(row, row + len).Clone();
    EXPECT_LE(RelativeError(mine, reference_.logits[static_cast<size_t>(s)], 0),
              Tolerance(GetParam()))
        << "sequence " << s;
    row += len;
  }
}

TEST_P(GoldenTest, GreedyContinuationMatchesReference) {
  GemmaDecoder model = LoadGemmaCheckpoint(checkpoint_.string());
  const int64_t new_tokens = static_cast<int64_t>(reference_.greedy_continuation.size());
  KvCache cache(model.config(), 1,
                static_cast<int64_t>(reference_.greedy_prompt.size()) + new_tokens);
  Tensor logits =
      model.Forward({{SequenceChunk{0, reference_.greedy_prompt}}}, cache, LogitRows::kLastToken);
  std::vector<int32_t> generated;
  for (int64_t i = 0; i < new_tokens; ++i) {
    const int32_t id = static_cast<int32_t>(cpu::ArgMax(logits.data<float>(), logits.dim(1)));
    generated.push_back(id);
    if (i + 1 < new_tokens) {
      logits = model.Forward({{SequenceChunk{0, {id}}}}, cache, LogitRows::kLastToken);
    }
  }
  EXPECT_EQ(generated, reference_.greedy_continuation);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenTest, ::testing::Values("gemma1", "gemma2", "gemma3"));

}  // namespace
}  // namespace gemmapod
