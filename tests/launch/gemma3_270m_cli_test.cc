// The real Gemma 3 270M through the `gemmapod` binary, as the README's main job runs it: one rank
// and two ranks (tp = 2, mpirun directly) in bf16 and int8 give the same text and logits; GGUF
// conversion's bad input is named. The checkpoints come from the ctest fixture
// gemma3_270m_prepare ($GEMMAPOD_GEMMA3_270M_DIR, tests/models/gemma/prepare_gemma3_270m.sh).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "tests/launch/http_client.h"
#include "tests/launch/npy_relative_error.h"
#include "tests/launch/run_gemmapod.h"
#include "tests/launch/serve_process.h"

namespace {

namespace fs = std::filesystem;
using gemmapod::Contains;
using gemmapod::Gemmapod;
using gemmapod::MpirunGemmapod;
using Result = gemmapod::CliResult;

std::string ModelDir() {
  const char* dir = std::getenv("GEMMAPOD_GEMMA3_270M_DIR");
  return dir != nullptr ? dir : "build/gemma3-270m";
}

std::string Checkpoint(const std::string& which) { return ModelDir() + "/" + which + ".h5"; }

class Gemma3_270mCli : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(Checkpoint(GetParam())))
        << Checkpoint(GetParam()) << " is missing; the ctest fixture gemma3_270m_prepare makes it";
    dir_ = fs::temp_directory_path() / ("g3-cli-" + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_P(Gemma3_270mCli, TwoRanksGiveOneRanksTextAndItNamesParis) {
  const std::string args = "generate --model " + Checkpoint(GetParam()) +
                           " --prompt 'The Eiffel Tower is located in the city of' --max-tokens 12";
  const Result one = Gemmapod(args);
  ASSERT_EQ(one.exit_code, 0) << one.output;
  EXPECT_TRUE(Contains(one.output, "^ Paris")) << one.output;
  const Result two = MpirunGemmapod(2, args + " --pod configs/pods/local.yaml");
  ASSERT_EQ(two.exit_code, 0) << two.output;
  EXPECT_EQ(two.output, one.output);
}

TEST_P(Gemma3_270mCli, TwoRanksGiveOneRanksLogits) {
  // "Water is made of hydrogen and"
  const std::string args = "logits --model " + Checkpoint(GetParam()) +
                           " --tokens 2,17390,563,1603,529,13076,532 --out ";
  const std::string one = (dir_ / "one.npy").string(), two = (dir_ / "two.npy").string();
  const Result r1 = Gemmapod(args + one);
  ASSERT_EQ(r1.exit_code, 0) << r1.output;
  const Result r2 = MpirunGemmapod(2, args + two + " --pod configs/pods/local.yaml");
  ASSERT_EQ(r2.exit_code, 0) << r2.output;
  // The row-parallel products add their halves in another order (and bf16's exact products
  // split the activations into hi + lo per product): 1.1e-5 measured for bf16.
  EXPECT_LE(gemmapod::NpyRelativeError(two, one), 3e-5) << GetParam();
}

// The server on the real model: a greedy completion is generate's text, also with four clients
// at once, each prompt's answer its own.
TEST_P(Gemma3_270mCli, TheServerAnswersAsGenerateDoes) {
  const std::vector<std::string> prompts = {
      "The Eiffel Tower is located in the city of", "Water is made of hydrogen and",
      "The first president of the United States was", "Photosynthesis converts sunlight into"};
  std::vector<std::string> want;
  for (const std::string& p : prompts) {
    const Result g = Gemmapod("generate --model " + Checkpoint(GetParam()) + " --prompt '" + p +
                              "' --max-tokens 12");
    ASSERT_EQ(g.exit_code, 0) << g.output;
    want.push_back(g.output.substr(0, g.output.size() - 1));  // generate ends with a newline
  }
  gemmapod::ServeProcess server;
  ASSERT_TRUE(server.Start("--model " + Checkpoint(GetParam()) + " --context 512", 1, "", 120))
      << server.log();
  auto body = [&](size_t i) {
    return nlohmann::json{{"prompt", prompts[i]}, {"max_tokens", 12}, {"temperature", 0}}.dump();
  };
  const gemmapod::Reply alone = gemmapod::Post(server.port(), "/v1/completions", body(0));
  ASSERT_EQ(alone.status, 200) << alone.body;
  EXPECT_EQ(gemmapod::TextOf(alone.body), want[0]);
  std::vector<gemmapod::Reply> replies(prompts.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < prompts.size(); ++i) {
    clients.emplace_back(
        [&, i] { replies[i] = gemmapod::Post(server.port(), "/v1/completions", body(i)); });
  }
  for (auto& c : clients) c.join();
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_EQ(replies[i].status, 200) << replies[i].body;
    EXPECT_EQ(gemmapod::TextOf(replies[i].body), want[i]) << prompts[i];
  }
  EXPECT_EQ(server.Stop(), 0) << server.log();
}

INSTANTIATE_TEST_SUITE_P(Weights, Gemma3_270mCli, ::testing::Values("bf16", "int8"));

TEST(Gemma3_270mConvert, BadGgufInputIsNamed) {
  const fs::path dir = fs::temp_directory_path() / ("g3-convert-" + std::to_string(getpid()));
  fs::create_directories(dir);
  const std::string gguf = ModelDir() + "/model.gguf";
  ASSERT_TRUE(fs::exists(gguf));
  // A truncated download: the header is cut inside the tokenizer's vocabulary.
  const std::string cut = (dir / "cut.gguf").string();
  {
    std::ifstream in(gguf, std::ios::binary);
    std::string head(200000, '\0');
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    std::ofstream(cut, std::ios::binary)
        .write(head.data(), static_cast<std::streamsize>(head.size()));
  }
  const std::string out = (dir / "out.h5").string();
  Result r = Gemmapod("convert " + cut + " " + out);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "gemmapod: error: " + cut)) << r.output;
  EXPECT_FALSE(fs::exists(out));
  // A GGUF file converts to a .h5 file only; int8 is for writing .h5 files.
  r = Gemmapod("convert " + gguf + " " + (dir / "hf").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.output, "is a GGUF file; the destination must be a .h5 file")) << r.output;
  r = Gemmapod("convert " + Checkpoint("bf16") + " " + (dir / "hf").string() + " --quantize int8");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.output, "--quantize applies when writing a .h5")) << r.output;
  // An int8 checkpoint cannot become a Hugging Face directory, which has no int8 form.
  r = Gemmapod("convert " + Checkpoint("int8") + " " + (dir / "hf").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.output, "holds int8 weights")) << r.output;
  EXPECT_FALSE(fs::exists(dir / "hf"));
  fs::remove_all(dir);
}

TEST(Gemma3_270mPlan, AnInt8CheckpointPlansAtAByteAWeight) {
  const Result r = Gemmapod("plan --pod configs/pods/local.yaml --model " + Checkpoint("int8") +
                            " --context 2048");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "int8 \\(\\+ f32 row scales\\)")) << r.output;
  EXPECT_TRUE(Contains(r.output, "fits")) << r.output;
}

}  // namespace
