#include "models/t5gemma/t5gemma_config.h"

#include "models/gemma/model_config_yaml.h"
#include "models/import/hf_config.h"
#include "models/import/json_file.h"
#include "runtime/config/yaml_reader.h"
#include "runtime/error.h"

namespace gemmapod {
namespace {

using Json = nlohmann::json;

constexpr const char* kArchitecture = "t5gemma";

void ValidateStack(const ModelConfig& s, const std::string& where) {
  Validate(s, where);
  // The checkpoint names four norms per block (pre/post self-attention, pre/post feed-forward):
  // T5Gemma's stacks are Gemma 2 stacks.
  GEMMAPOD_CHECK(s.architecture == Architecture::kGemma2 && s.post_norms && !s.qk_norm, where,
                 ": T5Gemma stacks are Gemma 2 stacks (architecture gemma2, post_norms true, "
                 "qk_norm false)");
}

}  // namespace

int64_t T5GemmaConfig::CrossAttentionParameters() const {
  const int64_t d = decoder.hidden_size, e = encoder.hidden_size;
  return d * decoder.q_width() + 2 * e * decoder.kv_width() + decoder.q_width() * d + 2 * d;
}

int64_t T5GemmaConfig::ParameterCount() const {
  return encoder.ParameterCount() + decoder.ParameterCount() +
         decoder.num_layers * CrossAttentionParameters();
}

void Validate(const T5GemmaConfig& c, const std::string& where) {
  GEMMAPOD_CHECK(!c.name.empty(), where, ": name: must not be empty");
  ValidateStack(c.encoder, where + ": encoder");
  ValidateStack(c.decoder, where + ": decoder");
  GEMMAPOD_CHECK(c.encoder.quantization == c.decoder.quantization, where,
                 ": quantization: the encoder says ",
                 WeightQuantizationName(c.encoder.quantization), ", the decoder ",
                 WeightQuantizationName(c.decoder.quantization));
  // One tokenizer feeds both stacks (the prompt is tokenized once).
  GEMMAPOD_CHECK(c.encoder.vocab_size == c.decoder.vocab_size, where,
                 ": vocab_size: the encoder has ", c.encoder.vocab_size, ", the decoder ",
                 c.decoder.vocab_size, "; one tokenizer feeds both");
}

Attributes ToAttributes(const T5GemmaConfig& c) {
  Attributes a;
  a["architecture"] = std::string(kArchitecture);
  a["name"] = c.name;
  for (const auto& [prefix, stack] :
       {std::pair<const char*, const ModelConfig*>{"encoder.", &c.encoder},
        {"decoder.", &c.decoder}}) {
    for (auto& [key, value] : ToAttributes(*stack)) a[prefix + key] = value;
  }
  return a;
}

bool IsT5GemmaAttributes(const Attributes& a) {
  const auto it = a.find("architecture");
  if (it == a.end()) return false;
  const auto* name = std::get_if<std::string>(&it->second);
  return name != nullptr && *name == kArchitecture;
}

T5GemmaConfig T5GemmaFromAttributes(const Attributes& a, const std::string& where) {
  GEMMAPOD_CHECK(IsT5GemmaAttributes(a), where, ": model config attribute 'architecture' is not ",
                 kArchitecture);
  T5GemmaConfig c;
  const auto name = a.find("name");
  GEMMAPOD_CHECK(name != a.end() && std::holds_alternative<std::string>(name->second), where,
                 ": model config attribute 'name' is missing or not a string");
  c.name = std::get<std::string>(name->second);
  Attributes encoder, decoder;
  for (const auto& [key, value] : a) {
    if (key.rfind("encoder.", 0) == 0) encoder[key.substr(8)] = value;
    if (key.rfind("decoder.", 0) == 0) decoder[key.substr(8)] = value;
  }
  c.encoder = FromAttributes(encoder, where + " (encoder.*)");
  c.decoder = FromAttributes(decoder, where + " (decoder.*)");
  Validate(c, where);
  return c;
}

T5GemmaConfig LoadT5GemmaConfigYaml(const std::string& path) {
  const YamlValue doc = ParseYamlDocument(ReadConfigText(path, "model config"), path);
  const YamlMap m = doc.AsMap({"name", "architecture", "encoder", "decoder"});
  T5GemmaConfig c;
  c.name = m.Require("name").AsString();
  m.Require("architecture").AsChoice({kArchitecture});
  c.encoder = ModelConfigFromYaml(m.Require("encoder"), path + ": encoder", true);
  c.decoder = ModelConfigFromYaml(m.Require("decoder"), path + ": decoder", true);
  if (c.encoder.name.empty()) c.encoder.name = c.name + " encoder";
  if (c.decoder.name.empty()) c.decoder.name = c.name + " decoder";
  Validate(c, path);
  return c;
}

bool IsT5GemmaYaml(const std::string& path) {
  try {
    const YamlValue doc = ParseYamlDocument(ReadConfigText(path, "model config"), path);
    if (!doc.is_map()) return false;
    const YamlMap m = doc.AsOpenMap();
    const auto arch = m.Find("architecture");
    return arch && arch->is_scalar() && arch->scalar_text() == kArchitecture;
  } catch (const Error&) {
    return false;
  }
}

T5GemmaConfig ReadHfT5GemmaConfig(const std::string& path) {
  const nlohmann::json j = ReadJsonFile(path);
  GEMMAPOD_CHECK(j.is_object() && j.value("model_type", std::string()) == kArchitecture, path,
                 ": key 'model_type': expected \"t5gemma\"");
  T5GemmaConfig c;
  c.name = j.value("_name_or_path", std::string(kArchitecture));
  if (c.name.empty()) c.name = kArchitecture;
  auto stack = [&](const char* key) {
    GEMMAPOD_CHECK(j.contains(key) && j[key].is_object(), path, ": key '", key,
                   "' is missing or not an object");
    Json s = j[key];
    // transformers keeps the token ids at the top level (T5GemmaConfig copies the decoder's
    // there); a stack without its own takes them.
    for (const char* id : {"bos_token_id", "eos_token_id", "pad_token_id"}) {
      if (!s.contains(id) && j.contains(id)) s[id] = j[id];
    }
    GEMMAPOD_CHECK(!s.contains("attention_bias") || s["attention_bias"] == false, path, ": key '",
                   key, ".attention_bias': T5Gemma attention has no biases");
    ModelConfig m = HfConfigFromJsonText(s.dump(), StrCat(path, ": ", key), "gemma2");
    m.name = StrCat(c.name, " ", key);
    return m;
  };
  c.encoder = stack("encoder");
  c.decoder = stack("decoder");
  const Json& dec = j["decoder"];
  if (dec.contains("cross_attention_hidden_size") &&
      !dec["cross_attention_hidden_size"].is_null()) {
    GEMMAPOD_CHECK(dec["cross_attention_hidden_size"].is_number_integer() &&
                       dec["cross_attention_hidden_size"].get<int64_t>() == c.encoder.hidden_size,
                   path, ": key 'decoder.cross_attention_hidden_size': ",
                   dec["cross_attention_hidden_size"].dump(), " is not the encoder's hidden_size ",
                   c.encoder.hidden_size);
  }
  GEMMAPOD_CHECK(j.value("tie_word_embeddings", true), path,
                 ": key 'tie_word_embeddings': untied output heads are not supported");
  Validate(c, path);
  return c;
}

std::string T5GemmaHfConfigJson(const T5GemmaConfig& c, const std::string& torch_dtype) {
  auto stack = [&](const ModelConfig& m, bool decoder) {
    Json s = Json::parse(HfConfigJson(m, torch_dtype));
    s.erase("architectures");
    s.erase("torch_dtype");
    s["model_type"] = "t5gemma_module";
    s["is_decoder"] = decoder;
    if (decoder) s["cross_attention_hidden_size"] = c.encoder.hidden_size;
    return s;
  };
  Json j;
  j["architectures"] = {"T5GemmaForConditionalGeneration"};
  j["model_type"] = kArchitecture;
  j["encoder"] = stack(c.encoder, false);
  j["decoder"] = stack(c.decoder, true);
  j["is_encoder_decoder"] = true;
  j["tie_word_embeddings"] = true;
  j["vocab_size"] = c.decoder.vocab_size;
  j["bos_token_id"] = c.decoder.bos_id;
  j["eos_token_id"] = c.decoder.eos_id;
  j["pad_token_id"] = c.decoder.pad_id;
  j["torch_dtype"] = torch_dtype;
  return j.dump(2) + "\n";
}

}  // namespace gemmapod
