// The family table: which row a model file gets (YAML configs and .h5 checkpoints of each
// family, and files no family can read, which go to Gemma's loaders for their messages).
#include "launch/families.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "models/gemma/gemma_checkpoint.h"
#include "models/gemma/gemma_random.h"
#include "models/gemma/model_config_yaml.h"
#include "models/recurrent_gemma/recurrent_gemma_config.h"
#include "models/recurrent_gemma/recurrent_gemma_weights.h"
#include "models/t5gemma/t5gemma.h"
#include "models/t5gemma/t5gemma_random.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "tests/error_of.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;

TEST(Families, YamlConfigsNameTheirFamily) {
  EXPECT_EQ(FamilyOf("configs/models/gemma3-270m.yaml").name, "gemma");
  EXPECT_EQ(FamilyOf("configs/models/recurrentgemma-2b.yaml").name, "recurrent_gemma");
  EXPECT_EQ(FamilyOf("configs/models/t5gemma-9b-2b.yaml").name, "t5gemma");
  EXPECT_TRUE(FamilyOf("configs/models/t5gemma-9b-2b.yaml").encoder_decoder);
  EXPECT_FALSE(FamilyOf("configs/models/recurrentgemma-2b.yaml").encoder_decoder);
}

TEST(Families, CheckpointsAreRecognisedByTheirAttributes) {
  const fs::path dir = fs::temp_directory_path() / ("families-" + std::to_string(getpid()));
  fs::create_directories(dir);
  const ModelConfig gemma = LoadModelConfigYaml("configs/models/tiny-gemma2.yaml");
  GemmaWeights gw = RandomGemmaWeights(gemma, DType::kF32, 1);
  SaveGemmaCheckpoint((dir / "g.h5").string(), gemma, gw, std::nullopt);
  const T5GemmaConfig t5 = LoadT5GemmaConfigYaml("configs/models/tiny-t5gemma.yaml");
  T5GemmaWeights tw = RandomT5GemmaWeights(t5, DType::kF32, 1);
  SaveT5GemmaCheckpoint((dir / "t5.h5").string(), t5, tw, std::nullopt);
  EXPECT_EQ(FamilyOf((dir / "g.h5").string()).name, "gemma");
  EXPECT_EQ(FamilyOf((dir / "t5.h5").string()).name, "t5gemma");
  // Unreadable files go to Gemma, whose loader names the problem.
  EXPECT_EQ(FamilyOf((dir / "missing.h5").string()).name, "gemma");
  fs::remove_all(dir);
}

// Every family writes random checkpoints (RecurrentGemma's for trying layouts its fixture's
// shape cannot take): every parameter at its shape, the config readable back.
TEST(Families, RecurrentGemmaWritesARandomCheckpoint) {
  RandomCheckpointOptions o;
  o.config_path = "configs/models/tiny-recurrentgemma.yaml";
  o.out = (fs::temp_directory_path() / ("random-rg-" + std::to_string(getpid()) + ".h5")).string();
  o.dtype = "f32";
  RunRandomCheckpoint(o);
  const auto reader = Hdf5CheckpointReader::Open(o.out);
  const RecurrentGemmaConfig config = RecurrentGemmaFromAttributes(reader->config(), o.out);
  EXPECT_EQ(config.num_heads, 3);
  for (const RecurrentGemmaParameter& p : RecurrentGemmaParameters(config)) {
    ASSERT_TRUE(reader->Has(p.name)) << p.name;
    EXPECT_EQ(reader->Read(p.name).shape(), p.shape) << p.name;
  }
  fs::remove(o.out);
}

}  // namespace
}  // namespace gemmapod
