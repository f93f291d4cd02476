// T5Gemma configs: every released pair's YAML adds up to MODEL_SPEC §6's parameter counts, stack
// by stack; cross-attention reads the encoder's width; the tiny YAML is the unbalanced golden
// fixture's config; attributes round-trip; bad YAML and Hugging Face files fail naming the file
// and the key.
#include "models/t5gemma/t5gemma_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include "models/t5gemma/t5gemma_weights.h"
#include "runtime/error.h"
#include "tests/error_of.h"

namespace gemmapod {
namespace {

using ::testing::HasSubstr;

constexpr const char* kTiny = "configs/models/tiny-t5gemma.yaml";
constexpr const char* kUnbalancedHf = "tests/fixtures/models/t5gemma/unbalanced/config.json";

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Writes `text` to a file named `name` in the test's temporary directory; returns its path.
std::string WriteTemp(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + name;
  std::ofstream(path) << text;
  return path;
}

// `text` with its first occurrence of `from` (which must be there) replaced by `to`.
std::string Replace(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

Attributes WithoutName(Attributes a) {
  a.erase("name");
  return a;
}

struct Pair {
  const char* file;
  int64_t encoder;  // MODEL_SPEC §6: the encoder stack
  int64_t decoder;  // the decoder stack with its cross-attention
  int64_t total;
  int64_t cross_projections;  // one decoder layer's cross-attention q/k/v/o (0: not listed)
};

void PrintTo(const Pair& p, std::ostream* os) { *os << p.file; }

class ReleasedPairTest : public ::testing::TestWithParam<Pair> {};

TEST_P(ReleasedPairTest, ParameterCountsMatchTheSpec) {
  const Pair& p = GetParam();
  const T5GemmaConfig c = LoadT5GemmaConfigYaml(StrCat("configs/models/", p.file, ".yaml"));
  EXPECT_EQ(c.name, p.file);
  EXPECT_EQ(c.ParameterCount(), p.total);
  EXPECT_EQ(c.encoder.ParameterCount(), p.encoder);
  EXPECT_EQ(c.decoder.ParameterCount() + c.decoder.num_layers * c.CrossAttentionParameters(),
            p.decoder);
  if (p.cross_projections != 0) {
    // CrossAttentionParameters counts the block's two norms too; the spec lists the projections.
    EXPECT_EQ(c.CrossAttentionParameters(), p.cross_projections + 2 * c.decoder.hidden_size);
  }
  // The checkpoint's tensors (tied head not stored) hold exactly that many parameters.
  int64_t stored = 0;
  for (const GemmaParameter& param : T5GemmaParameters(c)) {
    int64_t n = 1;
    for (int64_t dim : param.shape) n *= dim;
    stored += n;
  }
  EXPECT_EQ(stored, p.total);
}

TEST_P(ReleasedPairTest, StacksUseTheCommonSettings) {
  const T5GemmaConfig c =
      LoadT5GemmaConfigYaml(StrCat("configs/models/", GetParam().file, ".yaml"));
  for (const ModelConfig* s : {&c.encoder, &c.decoder}) {
    SCOPED_TRACE(s->name);
    EXPECT_EQ(s->architecture, Architecture::kGemma2);
    EXPECT_EQ(s->vocab_size, 256000);
    EXPECT_DOUBLE_EQ(s->final_logit_softcap, 30.0);
    EXPECT_DOUBLE_EQ(s->attn_logit_softcap, 50.0);
    EXPECT_EQ(s->sliding_window, 4096);
    EXPECT_DOUBLE_EQ(s->query_pre_attn_scalar, static_cast<double>(s->head_dim));
    EXPECT_FLOAT_EQ(s->attention_scale(), 1.0f / std::sqrt(static_cast<float>(s->head_dim)));
    EXPECT_DOUBLE_EQ(s->rope_theta_global, 10000.0);
    EXPECT_DOUBLE_EQ(s->rope_theta_local, 10000.0);
    EXPECT_DOUBLE_EQ(s->rms_norm_eps, 1e-6);
    EXPECT_TRUE(s->post_norms);
    EXPECT_FALSE(s->qk_norm);
    EXPECT_EQ(s->embed_scale_rounding, EmbedScaleRounding::kActivation);
    EXPECT_EQ(s->max_position_embeddings, 8192);
    EXPECT_EQ(s->bos_id, 2);
    EXPECT_EQ(s->eos_id, 1);
    EXPECT_EQ(s->pad_id, 0);
    ASSERT_EQ(static_cast<int64_t>(s->layer_kinds.size()), s->num_layers);
    for (size_t i = 0; i < s->layer_kinds.size(); ++i) {
      EXPECT_EQ(s->layer_kinds[i], i % 2 == 0 ? AttentionKind::kSliding : AttentionKind::kGlobal)
          << "layer " << i;
    }
  }
  EXPECT_EQ(c.encoder.name, c.name + " encoder");
  EXPECT_EQ(c.decoder.name, c.name + " decoder");
}

INSTANTIATE_TEST_SUITE_P(
    AllPairs, ReleasedPairTest,
    ::testing::Values(Pair{"t5gemma-s-s", 152060416, 160457216, 312517632, 0},
                      Pair{"t5gemma-b-b", 281580288, 309910272, 591490560, 0},
                      Pair{"t5gemma-l-l", 570524672, 671237120, 1241761792, 0},
                      Pair{"t5gemma-ml-ml", 1038801024, 1161544320, 2200345344, 0},
                      Pair{"t5gemma-xl-xl", 1682114560, 2084866048, 3766980608, 0},
                      Pair{"t5gemma-2b-2b", 2614341888, 2982511872, 5596853760, 14155776},
                      Pair{"t5gemma-9b-2b", 9241705984, 3050669312, 12292375296, 16777216},
                      Pair{"t5gemma-9b-9b", 9241705984, 11091695104, 20333401088, 44040192}),
    [](const auto& info) {
      std::string n = info.param.file;
      for (char& ch : n) ch = std::isalnum(ch) ? ch : '_';
      return n;
    });

TEST(T5GemmaConfigTest, CrossAttentionKeysAndValuesTakeTheEncoderWidth) {
  const T5GemmaConfig c = LoadT5GemmaConfigYaml("configs/models/t5gemma-9b-2b.yaml");
  EXPECT_EQ(c.encoder.hidden_size, 3584);
  EXPECT_EQ(c.decoder.hidden_size, 2304);
  std::map<std::string, Shape> shapes;
  for (const GemmaParameter& p : T5GemmaParameters(c)) shapes[p.name] = p.shape;
  const std::string cross = "model.decoder.layers.0.cross_attn.";
  EXPECT_EQ(shapes[cross + "q_proj.weight"], (Shape{2048, 2304}));
  EXPECT_EQ(shapes[cross + "k_proj.weight"], (Shape{1024, 3584}));
  EXPECT_EQ(shapes[cross + "v_proj.weight"], (Shape{1024, 3584}));
  EXPECT_EQ(shapes[cross + "o_proj.weight"], (Shape{2304, 2048}));
  EXPECT_EQ(shapes["model.decoder.layers.25.cross_attn.k_proj.weight"], (Shape{1024, 3584}));
  EXPECT_EQ(shapes.count("model.decoder.layers.26.cross_attn.k_proj.weight"), 0u);
  EXPECT_EQ(shapes["model.decoder.layers.0.self_attn.k_proj.weight"], (Shape{1024, 2304}));
  EXPECT_EQ(shapes["model.encoder.layers.41.self_attn.k_proj.weight"], (Shape{2048, 3584}));
  EXPECT_EQ(shapes.count("model.encoder.layers.0.cross_attn.k_proj.weight"), 0u);
}

TEST(T5GemmaConfigTest, TinyYamlIsTheUnbalancedFixtureConfig) {
  const T5GemmaConfig yaml = LoadT5GemmaConfigYaml(kTiny);
  const T5GemmaConfig hf = ReadHfT5GemmaConfig(kUnbalancedHf);
  EXPECT_EQ(yaml.name, "tiny-t5gemma");
  EXPECT_EQ(WithoutName(ToAttributes(yaml.encoder)), WithoutName(ToAttributes(hf.encoder)));
  EXPECT_EQ(WithoutName(ToAttributes(yaml.decoder)), WithoutName(ToAttributes(hf.decoder)));
  EXPECT_EQ(yaml.ParameterCount(), hf.ParameterCount());
  // Unbalanced on purpose: every width the cross-attention could confuse differs.
  EXPECT_NE(yaml.encoder.hidden_size, yaml.decoder.hidden_size);
  EXPECT_NE(yaml.encoder.head_dim, yaml.decoder.head_dim);
  EXPECT_NE(yaml.encoder.num_kv_heads, yaml.decoder.num_kv_heads);
  EXPECT_NE(yaml.encoder.num_layers, yaml.decoder.num_layers);
}

TEST(T5GemmaConfigTest, AttributesRoundTrip) {
  for (const char* file : {kTiny, "configs/models/t5gemma-9b-2b.yaml"}) {
    const T5GemmaConfig c = LoadT5GemmaConfigYaml(file);
    const Attributes a = ToAttributes(c);
    EXPECT_TRUE(IsT5GemmaAttributes(a)) << file;
    EXPECT_EQ(std::get<int64_t>(a.at("encoder.hidden_size")), c.encoder.hidden_size) << file;
    EXPECT_EQ(std::get<int64_t>(a.at("decoder.hidden_size")), c.decoder.hidden_size) << file;
    const T5GemmaConfig back = T5GemmaFromAttributes(a, "test.h5");
    EXPECT_EQ(back.name, c.name);
    EXPECT_EQ(ToAttributes(back), a) << file;
    EXPECT_EQ(back.ParameterCount(), c.ParameterCount()) << file;
  }
  // A decoder-only checkpoint's attributes are not a T5Gemma's.
  const Attributes g2 = ToAttributes(LoadModelConfigYaml("configs/models/gemma2-2b.yaml"));
  EXPECT_FALSE(IsT5GemmaAttributes(g2));
  EXPECT_THAT(ErrorOf([&] { T5GemmaFromAttributes(g2, "g2.h5"); }),
              HasSubstr("g2.h5: model config attribute 'architecture' is not t5gemma"));
}

TEST(T5GemmaConfigTest, MissingStackAttributeIsNamed) {
  Attributes a = ToAttributes(LoadT5GemmaConfigYaml(kTiny));
  a.erase("decoder.head_dim");
  EXPECT_THAT(ErrorOf([&] { T5GemmaFromAttributes(a, "m.h5"); }),
              HasSubstr("m.h5 (decoder.*): model config attribute 'head_dim' is missing"));
}

TEST(T5GemmaConfigTest, IsT5GemmaYamlTellsTheFormats) {
  EXPECT_TRUE(IsT5GemmaYaml(kTiny));
  EXPECT_TRUE(IsT5GemmaYaml("configs/models/t5gemma-b-b.yaml"));
  EXPECT_FALSE(IsT5GemmaYaml("configs/models/gemma2-2b.yaml"));
  EXPECT_FALSE(IsT5GemmaYaml("configs/models/no-such-file.yaml"));
}

TEST(T5GemmaConfigTest, UnknownKeyInAStackIsNamed) {
  const std::string path = WriteTemp(
      "unknown-stack-key.yaml", Replace(ReadText(kTiny), "encoder:\n", "encoder:\n  foo: 1\n"));
  // Four comment lines, name, architecture, encoder: the key is on line 8, column 3.
  EXPECT_THAT(ErrorOf([&] { LoadT5GemmaConfigYaml(path); }),
              HasSubstr(path + ":8:3: encoder.foo: unknown key"));
}

TEST(T5GemmaConfigTest, BadStackValueIsNamed) {
  const std::string text = ReadText(kTiny);
  const std::string path =
      WriteTemp("bad-decoder-heads.yaml",
                text.substr(0, text.find("decoder:")) +
                    Replace(text.substr(text.find("decoder:")), "num_heads: 4", "num_heads: -4"));
  EXPECT_THAT(ErrorOf([&] { LoadT5GemmaConfigYaml(path); }),
              HasSubstr("decoder.num_heads: must be positive, got -4"));
  EXPECT_THAT(ErrorOf([&] { LoadT5GemmaConfigYaml(path); }), HasSubstr(path + ":"));
}

TEST(T5GemmaConfigTest, MissingDecoderIsNamed) {
  const std::string text = ReadText(kTiny);
  const std::string path = WriteTemp("no-decoder.yaml", text.substr(0, text.find("decoder:")));
  const std::string message = ErrorOf([&] { LoadT5GemmaConfigYaml(path); });
  EXPECT_THAT(message, HasSubstr(path + ":"));
  EXPECT_THAT(message, HasSubstr("decoder: missing required key"));
}

TEST(T5GemmaConfigTest, ArchitectureMustBeT5Gemma) {
  const std::string path =
      WriteTemp("gemma2-arch.yaml",
                Replace(ReadText(kTiny), "architecture: t5gemma", "architecture: gemma2"));
  EXPECT_THAT(ErrorOf([&] { LoadT5GemmaConfigYaml(path); }),
              HasSubstr(path + ":6:15: architecture"));
  EXPECT_FALSE(IsT5GemmaYaml(path));
}

TEST(T5GemmaConfigTest, StacksMustBeGemma2Stacks) {
  const std::string text = ReadText(kTiny);
  const std::string path =
      WriteTemp("qk-norm-decoder.yaml",
                text.substr(0, text.find("decoder:")) +
                    Replace(text.substr(text.find("decoder:")), "qk_norm: false", "qk_norm: true"));
  const std::string message = ErrorOf([&] { LoadT5GemmaConfigYaml(path); });
  EXPECT_THAT(message, HasSubstr(path + ": decoder"));
  EXPECT_THAT(message, HasSubstr("Gemma 2 stacks"));

  T5GemmaConfig c = LoadT5GemmaConfigYaml(kTiny);
  c.encoder.post_norms = false;
  EXPECT_THAT(ErrorOf([&] { Validate(c, "x"); }), HasSubstr("x: encoder"));
  EXPECT_THAT(ErrorOf([&] { Validate(c, "x"); }), HasSubstr("Gemma 2 stacks"));
}

TEST(T5GemmaConfigTest, HfCrossAttentionWidthMustBeTheEncoders) {
  const std::string path = WriteTemp(
      "cross-width.json", Replace(ReadText(kUnbalancedHf), "\"cross_attention_hidden_size\": 96",
                                  "\"cross_attention_hidden_size\": 64"));
  const std::string message = ErrorOf([&] { ReadHfT5GemmaConfig(path); });
  EXPECT_THAT(message, HasSubstr(path + ": key 'decoder.cross_attention_hidden_size'"));
  EXPECT_THAT(message, HasSubstr("96"));
}

TEST(T5GemmaConfigTest, HfConfigWithoutEncoderIsRefused) {
  const std::string path = WriteTemp(
      "no-encoder.json", Replace(ReadText(kUnbalancedHf), "\"encoder\": {", "\"encoders\": {"));
  EXPECT_THAT(ErrorOf([&] { ReadHfT5GemmaConfig(path); }),
              HasSubstr(path + ": key 'encoder' is missing or not an object"));
}

TEST(T5GemmaConfigTest, HfConfigMustBeT5Gemma) {
  const std::string path =
      WriteTemp("gemma2-type.json", Replace(ReadText(kUnbalancedHf), "\"model_type\": \"t5gemma\"",
                                            "\"model_type\": \"gemma2\""));
  EXPECT_THAT(ErrorOf([&] { ReadHfT5GemmaConfig(path); }),
              HasSubstr(path + ": key 'model_type': expected \"t5gemma\""));
}

TEST(T5GemmaConfigTest, HfTopLevelTokenIdsReachTheStacks) {
  // transformers writes the ids at the top level only; another EOS there must be the model's.
  const std::string path = WriteTemp(
      "eos.json", Replace(ReadText(kUnbalancedHf), "\"eos_token_id\": 1", "\"eos_token_id\": 5"));
  const T5GemmaConfig c = ReadHfT5GemmaConfig(path);
  EXPECT_EQ(c.decoder.eos_id, 5);
  EXPECT_EQ(c.encoder.eos_id, 5);
  EXPECT_EQ(c.decoder.bos_id, 2);
}

TEST(T5GemmaConfigTest, StacksShareOneVocabulary) {
  T5GemmaConfig c = LoadT5GemmaConfigYaml(kTiny);
  c.encoder.vocab_size = 1024;
  EXPECT_THAT(ErrorOf([&] { Validate(c, "x"); }),
              HasSubstr("x: vocab_size: the encoder has 1024, the decoder 512"));
}

TEST(T5GemmaConfigTest, RulesAcrossFieldsNameTheStack) {
  const std::string path =
      WriteTemp("heads.yaml", Replace(ReadText(kTiny), "  num_kv_heads: 2", "  num_kv_heads: 4"));
  EXPECT_THAT(ErrorOf([&] { LoadT5GemmaConfigYaml(path); }),
              HasSubstr(path + ": encoder: num_heads (6) must be a multiple of num_kv_heads (4)"));
}

}  // namespace
}  // namespace gemmapod
