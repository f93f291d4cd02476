// A command opens its checkpoint once per rank: the family, the config, the tokenizer and the
// weights all come from that one open (launch/model_files.h, CheckpointFile), for every family's
// logits and generate entries.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "launch/commands.h"
#include "launch/families.h"
#include "models/gemma/gemma_checkpoint.h"
#include "models/gemma/gemma_random.h"
#include "models/gemma/model_config_yaml.h"
#include "models/import/convert.h"
#include "models/t5gemma/t5gemma.h"
#include "models/t5gemma/t5gemma_random.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/comm/mpi_communicator.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;

class OneOpen : public ::testing::Test {
 protected:
  void SetUp() override {
    world_ = MpiCommunicator::World();
    // Every rank writes its own files: no rank reads a file another is still writing.
    dir_ = fs::temp_directory_path() /
           ("one-open-" + std::to_string(getpid()) + "-" + std::to_string(world_->rank()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Runs `command` and returns how many checkpoints it opened on this rank.
  template <typename F>
  int64_t OpensOf(F command) {
    const int64_t before = Hdf5CheckpointReader::files_opened();
    EXPECT_EQ(command(), 0);
    return Hdf5CheckpointReader::files_opened() - before;
  }

  std::unique_ptr<Communicator> world_;
  fs::path dir_;
};

TEST_F(OneOpen, EveryFamilysCommandsOpenTheCheckpointOnce) {
  const std::string gemma = (dir_ / "gemma.h5").string(), t5 = (dir_ / "t5.h5").string(),
                    recurrent = (dir_ / "rg.h5").string();
  const ModelConfig g = LoadModelConfigYaml("configs/models/tiny-gemma2.yaml");
  GemmaWeights gw = RandomGemmaWeights(g, DType::kF32, 1);
  SaveGemmaCheckpoint(gemma, g, gw, std::nullopt);
  const T5GemmaConfig t = LoadT5GemmaConfigYaml("configs/models/tiny-t5gemma.yaml");
  T5GemmaWeights tw = RandomT5GemmaWeights(t, DType::kF32, 1);
  SaveT5GemmaCheckpoint(t5, t, tw, std::nullopt);
  ConvertOptions convert;
  Convert("tests/fixtures/models/recurrentgemma/hf", recurrent, convert);

  LogitsOptions logits;
  logits.tokens = {"2,17,300,41"};
  for (const std::string& path : {gemma, recurrent}) {
    logits.files.model_path = path;
    logits.out = path + ".npy";
    EXPECT_EQ(OpensOf([&] { return FamilyOf(path).logits(logits, *world_); }), 1) << path;
  }
  logits.files.model_path = t5;
  logits.encoder_tokens = {"2,5,9"};
  logits.tokens = {"2,7"};
  logits.out = t5 + ".npy";
  EXPECT_EQ(OpensOf([&] { return FamilyOf(t5).logits(logits, *world_); }), 1);

  // Generate reads the embedded tokenizer too, from the same open (a fresh copy of the file, so
  // the open above does not count for it).
  const std::string again = (dir_ / "rg-again.h5").string();
  fs::copy_file(recurrent, again);
  GenerateOptions generate;
  generate.files.model_path = again;
  generate.prompts = {"The license"};
  generate.max_tokens = 3;
  testing::internal::CaptureStdout();
  EXPECT_EQ(OpensOf([&] { return FamilyOf(again).generate(generate, *world_); }), 1);
  testing::internal::GetCapturedStdout();
}

}  // namespace
}  // namespace gemmapod
