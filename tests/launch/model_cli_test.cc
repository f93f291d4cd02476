// The model subcommands as a user runs them: convert a Hugging Face fixture, tokenize, write
// logits, generate, and the errors of bad input.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/checkpoint/npy.h"
#include "tests/launch/run_gemmapod.h"

namespace {

namespace fs = std::filesystem;

using gemmapod::Contains;
using gemmapod::Gemmapod;
using Result = gemmapod::CliResult;

class ModelCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("model-cli-" + std::to_string(getpid()));
    fs::create_directories(dir_);
    model_ = (dir_ / "gemma3.h5").string();
    convert_ = Gemmapod("convert tests/fixtures/models/gemma3 " + model_);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static inline fs::path dir_;
  static inline std::string model_;
  static inline Result convert_;
};

TEST_F(ModelCli, ConvertReportsWhatItWrote) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  EXPECT_TRUE(Contains(convert_.output,
                       "converted .*\\(gemma3_text\\): [0-9]+ tensors, [0-9]+ "
                       "parameters.*, tokenizer -> "))
      << convert_.output;
  EXPECT_TRUE(fs::exists(model_));
}

TEST_F(ModelCli, TokenizeUsesTheEmbeddedTokenizer) {
  const Result embedded = Gemmapod("tokenize --model " + model_ + " --text 'Hello, world!'");
  ASSERT_EQ(embedded.exit_code, 0) << embedded.output;
  EXPECT_TRUE(Contains(embedded.output, "^2(,[0-9]+)+\n$")) << embedded.output;
  const Result file = Gemmapod(
      "tokenize --tokenizer tests/fixtures/tokenizer/tiny_gemma.model --text 'Hello, world!'");
  EXPECT_EQ(file.output, embedded.output);
  const Result no_bos = Gemmapod("tokenize --model " + model_ + " --no-bos --text 'Hello, world!'");
  EXPECT_EQ("2," + no_bos.output, embedded.output);
}

TEST_F(ModelCli, LogitsMatchTheReferenceFile) {
  // Sequence 0 of the fixture (tools/golden/make_gemma_fixtures.py), whose reference logits are
  // tests/fixtures/models/gemma3/logits_0.npy.
  const gemmapod::Tensor ref = gemmapod::ReadNpy("tests/fixtures/models/gemma3/logits_0.npy");
  const std::string out = (dir_ / "logits.npy").string();
  std::ifstream in("tests/fixtures/models/gemma3/reference.json");
  const auto sequence = nlohmann::json::parse(in).at("sequences").at(0).get<std::vector<int>>();
  std::string tokens;
  for (int id : sequence) {
    if (!tokens.empty()) tokens += ',';
    tokens += std::to_string(id);
  }
  const Result r = Gemmapod("logits --model " + model_ + " --tokens " + tokens + " --out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const gemmapod::Tensor ours = gemmapod::ReadNpy(out);
  ASSERT_EQ(ours.shape(), ref.shape());
  float scale = 0, diff = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    scale = std::max(scale, std::abs(ref.data<float>()[i]));
    diff = std::max(diff, std::abs(ref.data<float>()[i] - ours.data<float>()[i]));
  }
  EXPECT_LE(diff, 1e-4f * scale);
}

TEST_F(ModelCli, GenerateStreamsDeterministicGreedyText) {
  const std::string cmd = "generate --model " + model_ + " --prompt 'The license' --max-tokens 12";
  const Result a = Gemmapod(cmd + " --stats");
  ASSERT_EQ(a.exit_code, 0) << a.output;
  EXPECT_TRUE(Contains(a.output, "generated [0-9]+ tokens in")) << a.output;
  const Result b = Gemmapod(cmd);
  const Result c = Gemmapod(cmd);
  EXPECT_EQ(b.output, c.output);
  EXPECT_GT(b.output.size(), 1u);
  const Result chat = Gemmapod("generate --model " + model_ +
                               " --chat --system 'Be brief.' --prompt 'Hi' --max-tokens 4 "
                               "--temperature 0.8 --top-k 20 --top-p 0.9 --seed 3 --stats");
  EXPECT_EQ(chat.exit_code, 0) << chat.output;
}

TEST_F(ModelCli, BadInputIsNamed) {
  Result r = Gemmapod("logits --model " + model_ + " --tokens 2,x,5 --out /tmp/x.npy");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.output, "--tokens: entry 1 \\('x'\\) is not a token id")) << r.output;
  r = Gemmapod("logits --model " + model_ + " --tokens 2,999999 --out /tmp/x.npy");
  EXPECT_TRUE(Contains(r.output, "entry 1 \\(999999\\) is outside the vocabulary of 512"))
      << r.output;
  r = Gemmapod("generate --model /nonexistent/m.h5 --prompt hi");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.output, "/nonexistent/m.h5")) << r.output;
  r = Gemmapod("generate --model " + model_ + " --prompt hi --temperature -1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.output, "temperature")) << r.output;
  r = Gemmapod("generate --model " + model_ + " --prompt hi --system 'Be brief.'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.output, "--system needs --chat")) << r.output;
  r = Gemmapod("tokenize --text hi");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.output, "give --model .* or --tokenizer")) << r.output;
  r = Gemmapod("convert " + model_ + " " + (dir_ / "hf-out").string() + " --max-shard-mib 0");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(Contains(r.output, "--max-shard-mib: Value 0 not in range 1 to")) << r.output;
  r = Gemmapod("convert tests/fixtures/models/gemma3 " + (dir_ / "out-dir").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.output, "destination must be a .h5 file")) << r.output;
}

// A NaN in the weights is refused where it enters (convert names the tensor), and a checkpoint
// that holds one anyway (its checksum is valid: it was written that way) makes `logits` fail
// naming where the NaN came out, instead of writing a file of NaN with exit 0.
TEST_F(ModelCli, NonFiniteWeightsAreRefusedAndNonFiniteLogitsReported) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  // A Hugging Face directory whose final norm holds a NaN (written into the safetensors bytes).
  const fs::path hf = dir_ / "nan-hf";
  fs::create_directories(hf);
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model"}) {
    fs::copy_file(fs::path("tests/fixtures/models/gemma3") / f, hf / f,
                  fs::copy_options::overwrite_existing);
  }
  {
    std::fstream st(hf / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    uint64_t header_bytes = 0;
    st.read(reinterpret_cast<char*>(&header_bytes), 8);
    std::string header(header_bytes, '\0');
    st.read(header.data(), static_cast<std::streamsize>(header_bytes));
    const nlohmann::json h = nlohmann::json::parse(header);
    const auto& entry = h.at("model.norm.weight");
    ASSERT_EQ(entry.at("dtype"), "F32");
    const uint64_t at = 8 + header_bytes + entry.at("data_offsets")[0].get<uint64_t>();
    const float nan = std::nanf("");
    st.seekp(static_cast<std::streamoff>(at + 4 * 3));
    st.write(reinterpret_cast<const char*>(&nan), 4);
  }
  const Result refused = Gemmapod("convert " + hf.string() + " " + (dir_ / "nan.h5").string());
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_TRUE(Contains(refused.output,
                       "tensor 'model.norm.weight' \\[64\\] holds a NaN or infinity at element 3"))
      << refused.output;
  EXPECT_FALSE(fs::exists(dir_ / "nan.h5"));

  // The same NaN written into a checkpoint directly, checksum and all.
  const std::string poisoned = (dir_ / "poisoned.h5").string();
  {
    const auto reader = gemmapod::Hdf5CheckpointReader::Open(model_);
    gemmapod::Hdf5CheckpointWriter writer = gemmapod::Hdf5CheckpointWriter::Create(poisoned);
    writer.SetConfig(reader->config());
    for (const gemmapod::TensorInfo& info : reader->List()) {
      gemmapod::Tensor t = reader->Read(info.name);
      if (info.name == "model.norm.weight") t.data<float>()[3] = std::nanf("");
      writer.Write(info.name, t);
    }
    writer.WriteFile("tokenizer.model", reader->ReadFile("tokenizer.model"));
    writer.Commit();
  }
  const std::string out = (dir_ / "nan-logits.npy").string();
  const Result logits = Gemmapod("logits --model " + poisoned + " --tokens 2,51,7 --out " + out);
  EXPECT_NE(logits.exit_code, 0);
  EXPECT_TRUE(Contains(logits.output,
                       "logits: sequence 0, position 0, vocabulary entry 0 is "
                       "nan: the model computes non-finite values"))
      << logits.output;
  EXPECT_FALSE(fs::exists(out));
  // generate fails with the sampler's finding rather than printing nothing.
  const Result generated = Gemmapod("generate --model " + poisoned + " --prompt hi");
  EXPECT_EQ(generated.exit_code, 1) << generated.output;
  EXPECT_TRUE(Contains(generated.output, "generate: request 0: sampling: .*NaN"))
      << generated.output;
}

}  // namespace
