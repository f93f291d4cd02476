// Model configs: the published sizes add up to their published parameter counts, the YAML and
// checkpoint-attribute forms round-trip, and bad files fail with file:line:column and key.
#include "models/gemma/model_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "runtime/error.h"
#include "tests/error_of.h"

namespace gemmapod {
namespace {

using ::testing::HasSubstr;

struct Published {
  const char* file;
  int64_t parameters;  // the count published with the checkpoint (tied head counted once)
};

void PrintTo(const Published& p, std::ostream* os) { *os << p.file; }

class PublishedConfigTest : public ::testing::TestWithParam<Published> {};

TEST_P(PublishedConfigTest, ParameterCountMatchesThePublishedOne) {
  const ModelConfig c = LoadModelConfigYaml(StrCat("configs/models/", GetParam().file, ".yaml"));
  EXPECT_EQ(c.ParameterCount(), GetParam().parameters);
  EXPECT_EQ(c.name, GetParam().file);
}

INSTANTIATE_TEST_SUITE_P(
    AllSizes, PublishedConfigTest,
    ::testing::Values(Published{"gemma-2b", 2506172416}, Published{"gemma-7b", 8537680896},
                      Published{"gemma2-2b", 2614341888}, Published{"gemma2-9b", 9241705984},
                      Published{"gemma2-27b", 27227128320}, Published{"gemma3-270m", 268098176},
                      Published{"gemma3-1b", 999885952}),
    [](const auto& info) {
      std::string n = info.param.file;
      for (char& ch : n) ch = std::isalnum(ch) ? ch : '_';
      return n;
    });

TEST(ModelConfigTest, LayerKindsFollowEachFamily) {
  const ModelConfig g2 = LoadModelConfigYaml("configs/models/gemma2-2b.yaml");
  EXPECT_EQ(g2.layer_kinds[0], AttentionKind::kSliding);  // Gemma 2: even layers are local
  EXPECT_EQ(g2.layer_kinds[1], AttentionKind::kGlobal);
  EXPECT_EQ(g2.layer_kinds[25], AttentionKind::kGlobal);
  const ModelConfig g3 = LoadModelConfigYaml("configs/models/gemma3-1b.yaml");
  for (int64_t i = 0; i < g3.num_layers; ++i) {
    const bool global = i == 5 || i == 11 || i == 17 || i == 23;
    EXPECT_EQ(g3.layer_kinds[static_cast<size_t>(i)],
              global ? AttentionKind::kGlobal : AttentionKind::kSliding)
        << "layer " << i;
  }
  EXPECT_EQ(DefaultLayerKinds(Architecture::kGemma3Text, 26), g3.layer_kinds);
  const ModelConfig g1 = LoadModelConfigYaml("configs/models/gemma-2b.yaml");
  for (AttentionKind k : g1.layer_kinds) EXPECT_EQ(k, AttentionKind::kGlobal);
}

TEST(ModelConfigTest, AttentionScaleUsesQueryPreAttnScalar) {
  const ModelConfig g27 = LoadModelConfigYaml("configs/models/gemma2-27b.yaml");
  EXPECT_FLOAT_EQ(g27.attention_scale(), 1.0f / 12.0f);  // 144^-1/2, not head_dim 128's
  const ModelConfig g2 = LoadModelConfigYaml("configs/models/gemma2-2b.yaml");
  EXPECT_FLOAT_EQ(g2.attention_scale(), 1.0f / 16.0f);
}

TEST(ModelConfigTest, EmbedScaleIsRoundedAsEachFamilyDoes) {
  ModelConfig c = LoadModelConfigYaml("configs/models/gemma3-270m.yaml");
  EXPECT_FLOAT_EQ(c.EmbedScale(DType::kBF16), 25.25f);  // sqrt(640) rounded to the weights' bf16
  EXPECT_FLOAT_EQ(c.EmbedScale(DType::kF32), 25.298221f);
  c.embed_scale_rounding = EmbedScaleRounding::kActivation;
  EXPECT_FLOAT_EQ(c.EmbedScale(DType::kBF16), 25.298221f);
  c.embed_scale_rounding = EmbedScaleRounding::kBF16;
  c.hidden_size = 2560;
  EXPECT_FLOAT_EQ(c.EmbedScale(DType::kF32), 50.5f);  // RecurrentGemma's always-bf16 50.5
}

TEST(ModelConfigTest, AttributesRoundTrip) {
  for (const char* name : {"gemma-7b", "gemma2-27b", "gemma3-1b"}) {
    const ModelConfig c = LoadModelConfigYaml(StrCat("configs/models/", name, ".yaml"));
    const ModelConfig back = FromAttributes(ToAttributes(c), "test");
    EXPECT_EQ(ToAttributes(back), ToAttributes(c)) << name;
  }
}

TEST(ModelConfigTest, MissingAttributeIsNamed) {
  Attributes a = ToAttributes(LoadModelConfigYaml("configs/models/gemma2-2b.yaml"));
  a.erase("head_dim");
  EXPECT_THAT(ErrorOf([&] { FromAttributes(a, "m.h5"); }),
              HasSubstr("m.h5: model config attribute 'head_dim' is missing"));
  a = ToAttributes(LoadModelConfigYaml("configs/models/gemma2-2b.yaml"));
  a["num_heads"] = std::string("eight");
  EXPECT_THAT(ErrorOf([&] { FromAttributes(a, "m.h5"); }), HasSubstr("'num_heads' must be"));
}

struct BadYaml {
  const char* file;
  const char* message;
};

void PrintTo(const BadYaml& b, std::ostream* os) { *os << b.file; }

class BadModelYamlTest : public ::testing::TestWithParam<BadYaml> {};

TEST_P(BadModelYamlTest, FailsWithLocationAndKey) {
  const std::string path = StrCat("tests/models/configs/", GetParam().file);
  EXPECT_THAT(ErrorOf([&] { LoadModelConfigYaml(path); }), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Files, BadModelYamlTest,
    ::testing::Values(
        BadYaml{"missing-file.yaml", "missing-file.yaml: cannot read model config: No such file"},
        BadYaml{"unknown-key.yaml", "unknown-key.yaml:4:1: hidden: unknown key"},
        BadYaml{"bad-heads.yaml",
                "bad-heads.yaml: num_heads (6) must be a multiple of num_kv_heads (4)"},
        BadYaml{"bad-kind.yaml", "bad-kind.yaml:11:26: layer_pattern[1]"},
        BadYaml{"kinds-count.yaml", "kinds-count.yaml:11:14: layer_kinds: lists 3 kinds for 2"},
        BadYaml{"no-window.yaml", "sliding_window: sliding layers need a positive window"},
        BadYaml{"bad-arch.yaml", "bad-arch.yaml:2:15: architecture"},
        BadYaml{"negative.yaml", "negative.yaml:6:12: num_heads: must be positive, got -4"},
        BadYaml{"bad-quantization.yaml", "bad-quantization.yaml:11:15: quantization"},
        BadYaml{"bad-syntax.yaml",
                "bad-syntax.yaml:4:1: YAML syntax error: end of sequence flow not found"}),
    [](const auto& info) {
      std::string n = info.param.file;
      for (char& ch : n) ch = std::isalnum(ch) ? ch : '_';
      return n;
    });

}  // namespace
}  // namespace gemmapod
