// The generation loop: greedy output is the argmax chain, streamed text adds up to the decoded
// tokens, and stop tokens, stop strings and the length limit end it as documented.
#include "serving/generator.h"

#include <gtest/gtest.h>

#include <limits>

#include "models/gemma/gemma_random.h"
#include "runtime/cpu/ops.h"
#include "runtime/error.h"
#include "tests/small_gemma_config.h"

namespace gemmapod {
namespace {

ModelConfig TinyConfig() {
  // Vocabulary 512: the tiny tokenizer's pieces.
  return SmallGemma2Config("tiny", {512, 32, 2, 2, 1, 16, 64});
}

class GeneratorTest : public ::testing::Test {
 protected:
  GeneratorTest()
      : tokenizer_(Tokenizer::FromFile("tests/fixtures/tokenizer/tiny_gemma.model")),
        model_(TinyConfig(), RandomGemmaWeights(TinyConfig(), DType::kF32, 11)) {}

  GenerationResult Run(GenerationRequest request, std::string* streamed = nullptr) {
    std::string text;
    GenerationResult r =
        Generate(model_, tokenizer_, request, [&](std::string_view piece) { text.append(piece); });
    EXPECT_EQ(text, r.text);
    if (streamed) *streamed = text;
    return r;
  }

  // The greedy continuation computed by hand, one full forward per token.
  std::vector<int32_t> ArgmaxChain(std::vector<int32_t> tokens, int n) {
    std::vector<int32_t> out;
    for (int i = 0; i < n; ++i) {
      KvCache cache(model_.config(), 1, static_cast<int64_t>(tokens.size()));
      const Tensor logits =
          model_.Forward({{SequenceChunk{0, tokens}}}, cache, LogitRows::kLastToken);
      const int32_t id = static_cast<int32_t>(cpu::ArgMax(logits.data<float>(), logits.dim(1)));
      out.push_back(id);
      tokens.push_back(id);
    }
    return out;
  }

  Tokenizer tokenizer_;
  GemmaDecoder model_;
};

TEST_F(GeneratorTest, GreedyFollowsTheArgmaxChainAndStreamsItsText) {
  GenerationRequest request;
  request.prompt = tokenizer_.Encode("The Program", true);
  request.max_new_tokens = 12;
  const GenerationResult r = Run(request);
  EXPECT_EQ(r.tokens, ArgmaxChain(request.prompt, 12));
  EXPECT_EQ(r.finish, FinishReason::kLength);
  EXPECT_EQ(r.text, tokenizer_.Decode(r.tokens));
}

TEST_F(GeneratorTest, StopTokenEndsGenerationAndIsNotEmitted) {
  GenerationRequest request;
  request.prompt = tokenizer_.Encode("The Program", true);
  request.max_new_tokens = 12;
  const std::vector<int32_t> chain = ArgmaxChain(request.prompt, 12);
  request.stop_tokens = {chain[3]};
  const GenerationResult r = Run(request);
  EXPECT_EQ(r.finish, FinishReason::kStopToken);
  // Everything before the first occurrence of the stop token.
  const auto first = std::find(chain.begin(), chain.end(), chain[3]);
  EXPECT_EQ(r.tokens, std::vector<int32_t>(chain.begin(), first));
}

TEST_F(GeneratorTest, StopStringCutsTheTextBeforeIt) {
  GenerationRequest request;
  request.prompt = tokenizer_.Encode("The Program", true);
  request.max_new_tokens = 16;
  const GenerationResult free_run = Run(request);
  ASSERT_GE(free_run.text.size(), 6u) << free_run.text;
  const std::string stop = free_run.text.substr(free_run.text.size() / 2, 3);
  request.stop_strings = {stop};
  const GenerationResult r = Run(request);
  EXPECT_EQ(r.finish, FinishReason::kStopString);
  EXPECT_EQ(r.text, free_run.text.substr(0, free_run.text.find(stop)));
}

TEST_F(GeneratorTest, ContextIsCheckedBeforeAnyWork) {
  GenerationRequest request;
  request.prompt = tokenizer_.Encode("The Program", true);
  request.max_new_tokens = 64;  // prompt + 64 > max_position_embeddings 64
  EXPECT_THROW(Run(request), Error);
  request.max_new_tokens = std::numeric_limits<int64_t>::max();  // must not overflow the check
  try {
    Run(request);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exceeds the model's context of 64"), std::string::npos)
        << e.what();
  }
  request.max_new_tokens = 4;
  request.sampling.top_p = 0;
  EXPECT_THROW(Run(request), Error);
}

// The same check serves the pipeline engine's loop, against the context its state holds.
TEST_F(GeneratorTest, TheEnginesContextCheckNamesItsHolder) {
  GenerationRequest request;
  request.prompt = {2, 5, 7};
  request.max_new_tokens = 8;
  EXPECT_NO_THROW(CheckRequest(request, 11, "the pipeline's context"));
  try {
    CheckRequest(request, 10, "the pipeline's context");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("prompt (3 tokens) + max_new_tokens (8) exceeds the "
                                         "pipeline's context of 10 tokens"),
              std::string::npos)
        << e.what();
  }
}

TEST_F(GeneratorTest, SampledGenerationIsReproducibleFromItsSeed) {
  GenerationRequest request;
  request.prompt = tokenizer_.Encode("The Program", true);
  request.max_new_tokens = 10;
  request.sampling.temperature = 1.5f;
  request.sampling.seed = 42;
  const GenerationResult a = Run(request);
  const GenerationResult b = Run(request);
  EXPECT_EQ(a.tokens, b.tokens);
  request.sampling.seed = 43;
  const GenerationResult c = Run(request);
  EXPECT_NE(a.tokens, c.tokens);  // 10 draws at temperature 1.5 over 512 tokens
}

}  // namespace
}  // namespace gemmapod
