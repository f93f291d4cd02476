// Hugging Face config.json -> ModelConfig: the golden fixtures' configs read as the tiny YAML
// configs say, both spellings of Gemma 3's RoPE settings, and what is refused.
#include "models/import/hf_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "runtime/error.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// Everything but the name must agree.
Attributes WithoutName(const ModelConfig& c) {
  Attributes a = ToAttributes(c);
  a.erase("name");
  return a;
}

TEST(HfConfig, FixturesReadAsTheirYamlTwins) {
  for (const auto& [fixture, yaml] :
       {std::pair{"gemma1", "tiny-gemma"}, std::pair{"gemma2", "tiny-gemma2"},
        std::pair{"gemma3", "tiny-gemma3"}}) {
    const ModelConfig hf = ReadHfConfig(StrCat("tests/fixtures/models/", fixture, "/config.json"));
    const ModelConfig ours = LoadModelConfigYaml(StrCat("configs/models/", yaml, ".yaml"));
    EXPECT_EQ(WithoutName(hf), WithoutName(ours)) << fixture;
  }
}

class HfConfigFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = fs::temp_directory_path() / ("hf-config-" + std::to_string(getpid()) + ".json");
  }
  void TearDown() override { fs::remove(path_); }

  ModelConfig Read(const std::string& json) {
    std::ofstream(path_) << json;
    return ReadHfConfig(path_.string());
  }
  std::string ErrorOf(const std::string& json) {
    try {
      Read(json);
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  }

  // A Gemma 3 config missing only its RoPE keys.
  std::string Gemma3(const std::string& rope) {
    return R"({"model_type": "gemma3_text", "vocab_size": 262144, "hidden_size": 1152,
      "num_hidden_layers": 26, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
      "intermediate_size": 6912, "sliding_window": 512, "eos_token_id": [1, 106],)" +
           rope + "}";
  }

  fs::path path_;
};

TEST_F(HfConfigFileTest, Gemma3RopeInBothSpellings) {
  const ModelConfig legacy = Read(Gemma3(R"("rope_theta": 1000000.0,
      "rope_local_base_freq": 10000.0, "rope_scaling": {"rope_type": "linear", "factor": 8.0})"));
  const ModelConfig keyed = Read(Gemma3(R"("rope_parameters": {
      "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
      "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}})"));
  for (const ModelConfig* c : {&legacy, &keyed}) {
    EXPECT_EQ(c->rope_theta_global, 1e6);
    EXPECT_EQ(c->rope_theta_local, 1e4);
    EXPECT_EQ(c->rope_scaling_global, 8.0);
    EXPECT_EQ(c->eos_id, 1);  // the first of [1, 106]
    EXPECT_EQ(c->layer_kinds, DefaultLayerKinds(Architecture::kGemma3Text, 26));
    EXPECT_TRUE(c->qk_norm);
    EXPECT_EQ(c->query_pre_attn_scalar, 256);  // the family default when absent
  }
}

TEST_F(HfConfigFileTest, SlidingWindowPatternWhenNoLayerTypes) {
  const ModelConfig c = Read(Gemma3(R"("rope_theta": 1e6, "sliding_window_pattern": 2)"));
  EXPECT_EQ(c.layer_kinds[0], AttentionKind::kSliding);
  EXPECT_EQ(c.layer_kinds[1], AttentionKind::kGlobal);
}

TEST_F(HfConfigFileTest, RefusesWhatTheRuntimeDoesNotCompute) {
  EXPECT_THAT(ErrorOf(R"({"model_type": "gemma3", "text_config": {}})"),
              HasSubstr("model_type 'gemma3' is the multimodal Gemma 3"));
  EXPECT_THAT(ErrorOf(R"({"model_type": "t5"})"), HasSubstr("unknown 't5'"));
  EXPECT_THAT(ErrorOf(Gemma3(R"("rope_theta": 1e6, "tie_word_embeddings": false)")),
              HasSubstr("key 'tie_word_embeddings'"));
  EXPECT_THAT(ErrorOf(Gemma3(R"("rope_theta": 1e6, "hidden_activation": "relu")")),
              HasSubstr("key 'hidden_activation': 'relu' is not supported"));
  EXPECT_THAT(ErrorOf(Gemma3(R"("rope_theta": 1e6, "use_bidirectional_attention": true)")),
              HasSubstr("key 'use_bidirectional_attention'"));
  EXPECT_THAT(ErrorOf(Gemma3(R"("rope_scaling": {"rope_type": "yarn", "factor": 4})")),
              HasSubstr("rope_type 'yarn' is not supported"));
  EXPECT_THAT(ErrorOf(R"({"model_type": "gemma2", "vocab_size": 10})"),
              HasSubstr("key 'hidden_size' is missing"));
  EXPECT_THAT(ErrorOf("{nope"), HasSubstr("not valid JSON"));
}

TEST_F(HfConfigFileTest, NullSoftCapMeansOffAndAbsentMeansTheDefault) {
  const std::string base = R"({"model_type": "gemma2", "vocab_size": 512, "hidden_size": 64,
      "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
      "intermediate_size": 128)";
  const ModelConfig off = Read(base + R"(, "attn_logit_softcapping": null,
      "final_logit_softcapping": null})");
  EXPECT_EQ(off.attn_logit_softcap, 0);
  EXPECT_EQ(off.final_logit_softcap, 0);
  const ModelConfig absent = Read(base + "}");
  EXPECT_EQ(absent.attn_logit_softcap, 50);  // Gemma2Config's defaults
  EXPECT_EQ(absent.final_logit_softcap, 30);
  // And a config with the caps off survives the trip through config.json.
  ModelConfig c = LoadModelConfigYaml("configs/models/tiny-gemma2.yaml");
  c.attn_logit_softcap = c.final_logit_softcap = 0;
  EXPECT_EQ(WithoutName(Read(HfConfigJson(c, "float32"))), WithoutName(c));
}

TEST_F(HfConfigFileTest, WrittenConfigReadsBack) {
  for (const char* name : {"gemma-7b", "gemma2-27b", "gemma3-1b"}) {
    const ModelConfig c = LoadModelConfigYaml(StrCat("configs/models/", name, ".yaml"));
    EXPECT_EQ(WithoutName(Read(HfConfigJson(c, "bfloat16"))), WithoutName(c)) << name;
  }
}

}  // namespace
}  // namespace gemmapod
