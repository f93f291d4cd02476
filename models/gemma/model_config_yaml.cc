// configs/models/*.yaml -> ModelConfig. The format is documented in docs/model-config.md.
#include "models/gemma/model_config_yaml.h"

#include "runtime/config/yaml_reader.h"
#include "runtime/error.h"

namespace gemmapod {
namespace {

int64_t ReadPositive(const YamlMap& m, std::string_view key) {
  const YamlValue v = m.Require(key);
  const int n = v.AsInt();
  if (n <= 0) v.Fail("must be positive, got " + std::to_string(n));
  return n;
}

std::vector<AttentionKind> ReadKinds(const YamlValue& list) {
  std::vector<AttentionKind> kinds;
  for (const YamlValue& item : list.AsList()) {
    kinds.push_back(item.AsChoice({"global", "sliding"}) == "global" ? AttentionKind::kGlobal
                                                                     : AttentionKind::kSliding);
  }
  if (kinds.empty()) list.Fail("must list at least one layer kind");
  return kinds;
}

}  // namespace

ModelConfig LoadModelConfigYaml(const std::string& path) {
  return ModelConfigFromYaml(ParseYamlDocument(ReadConfigText(path, "model config"), path), path,
                             false);
}

ModelConfig ModelConfigFromYaml(const YamlValue& doc, const std::string& path, bool stack) {
  const YamlMap m = doc.AsMap({"name",
                               "architecture",
                               "vocab_size",
                               "hidden_size",
                               "num_layers",
                               "num_heads",
                               "num_kv_heads",
                               "head_dim",
                               "intermediate_size",
                               "rms_norm_eps",
                               "query_pre_attn_scalar",
                               "attn_logit_softcap",
                               "final_logit_softcap",
                               "sliding_window",
                               "layer_pattern",
                               "layer_kinds",
                               "rope_theta",
                               "rope_scaling_global",
                               "qk_norm",
                               "post_norms",
                               "embed_scale",
                               "max_position_embeddings",
                               "tokens",
                               "quantization"});
  ModelConfig c;
  if (stack) {
    // A stack of an encoder-decoder model: a Gemma 2 stack unless it says otherwise; its name is
    // the model's.
    c.architecture = Architecture::kGemma2;
    if (auto v = m.Find("name")) c.name = v->AsString();
    if (auto v = m.Find("architecture")) {
      c.architecture = ParseArchitecture(v->AsChoice({"gemma2"}), path);
    }
  } else {
    c.name = m.Require("name").AsString();
    const YamlValue arch = m.Require("architecture");
    c.architecture = ParseArchitecture(arch.AsChoice({"gemma", "gemma2", "gemma3_text"}), path);
  }
  c.vocab_size = ReadPositive(m, "vocab_size");
  c.hidden_size = ReadPositive(m, "hidden_size");
  c.num_layers = ReadPositive(m, "num_layers");
  c.num_heads = ReadPositive(m, "num_heads");
  c.num_kv_heads = ReadPositive(m, "num_kv_heads");
  c.head_dim = ReadPositive(m, "head_dim");
  c.intermediate_size = ReadPositive(m, "intermediate_size");
  if (auto v = m.Find("rms_norm_eps")) c.rms_norm_eps = v->AsNumber();
  c.query_pre_attn_scalar = static_cast<double>(c.head_dim);
  if (auto v = m.Find("query_pre_attn_scalar")) c.query_pre_attn_scalar = v->AsNumber();
  if (auto v = m.Find("attn_logit_softcap")) c.attn_logit_softcap = v->AsNumber();
  if (auto v = m.Find("final_logit_softcap")) c.final_logit_softcap = v->AsNumber();
  if (auto v = m.Find("sliding_window")) c.sliding_window = v->AsInt();

  // Either the full list of kinds, or a pattern repeated over the layers; else the family's.
  const auto kinds = m.Find("layer_kinds");
  const auto pattern = m.Find("layer_pattern");
  if (kinds && pattern) pattern->Fail("give layer_kinds or layer_pattern, not both");
  if (kinds) {
    c.layer_kinds = ReadKinds(*kinds);
    if (static_cast<int64_t>(c.layer_kinds.size()) != c.num_layers) {
      kinds->Fail(StrCat("lists ", c.layer_kinds.size(), " kinds for ", c.num_layers, " layers"));
    }
  } else if (pattern) {
    const std::vector<AttentionKind> p = ReadKinds(*pattern);
    for (int64_t i = 0; i < c.num_layers; ++i) c.layer_kinds.push_back(p[i % p.size()]);
  } else {
    c.layer_kinds = DefaultLayerKinds(c.architecture, c.num_layers);
  }

  if (auto v = m.Find("rope_theta")) {
    if (v->is_map()) {
      const YamlMap t = v->AsMap({"global", "local"});
      c.rope_theta_global = t.Require("global").AsNumber();
      c.rope_theta_local = t.Find("local") ? t.Find("local")->AsNumber() : c.rope_theta_global;
    } else {
      c.rope_theta_global = c.rope_theta_local = v->AsNumber();
    }
  }
  if (auto v = m.Find("rope_scaling_global")) c.rope_scaling_global = v->AsNumber();
  if (auto v = m.Find("qk_norm")) c.qk_norm = v->AsBool();
  if (auto v = m.Find("post_norms")) c.post_norms = v->AsBool();
  if (auto v = m.Find("embed_scale")) {
    const std::string r = v->AsChoice({"activation", "weight", "bf16"});
    c.embed_scale_rounding = r == "activation" ? EmbedScaleRounding::kActivation
                             : r == "weight"   ? EmbedScaleRounding::kWeightDType
                                               : EmbedScaleRounding::kBF16;
  }
  if (auto v = m.Find("max_position_embeddings")) c.max_position_embeddings = v->AsInt();
  if (auto v = m.Find("quantization")) {
    c.quantization = ParseWeightQuantization(v->AsChoice({"none", "int8"}), path);
  }
  if (auto v = m.Find("tokens")) {
    const YamlMap t = v->AsMap({"bos", "eos", "pad"});
    if (auto b = t.Find("bos")) c.bos_id = b->AsInt();
    if (auto e = t.Find("eos")) c.eos_id = e->AsInt();
    if (auto p = t.Find("pad")) c.pad_id = p->AsInt();
  }
  Validate(c, path);
  return c;
}

}  // namespace gemmapod
