#include "models/recurrent_gemma/recurrent_gemma_config.h"

#include <cmath>

#include "models/gemma/model_config.h"
#include "models/import/json_file.h"
#include "runtime/config/yaml_reader.h"
#include "runtime/dtype.h"
#include "runtime/error.h"

namespace gemmapod {

const char* TemporalBlockName(TemporalBlock b) {
  return b == TemporalBlock::kRecurrent ? "recurrent" : "attention";
}

float RecurrentGemmaConfig::EmbedScale() const {
  return BF16ToFloat(FloatToBF16(static_cast<float>(std::sqrt(static_cast<double>(hidden_size)))));
}

int64_t RecurrentGemmaConfig::ParameterCount() const {
  const int64_t d = hidden_size, lru = lru_width, bw = lru_block_width();
  const int64_t recurrent = 2 * (d * lru + lru) + conv1d_width * lru + lru +
                            2 * (num_heads * bw * bw + lru) + lru + (lru * d + d);
  const int64_t attention =
      d * num_heads * head_dim + 2 * d * num_kv_heads * head_dim + num_heads * head_dim * d + d;
  const int64_t mlp = 2 * (d * intermediate_size + intermediate_size) + intermediate_size * d + d;
  int64_t total = vocab_size * d + d;
  for (TemporalBlock b : blocks) {
    total += 2 * d + mlp + (b == TemporalBlock::kRecurrent ? recurrent : attention);
  }
  return total;
}

std::vector<TemporalBlock> DefaultTemporalBlocks(int64_t num_layers) {
  std::vector<TemporalBlock> out;
  if (num_layers > kMaxLayers) return out;  // Validate names the count and the file
  for (int64_t i = 0; i < num_layers; ++i) {
    out.push_back(i % 3 == 2 ? TemporalBlock::kAttention : TemporalBlock::kRecurrent);
  }
  return out;
}

void Validate(const RecurrentGemmaConfig& c, const std::string& where) {
  auto bounded = [&](int64_t v, const char* field, int64_t max) {
    CheckConfigSize(v, field, max, where);
  };
  bounded(c.vocab_size, "vocab_size", kMaxVocab);
  bounded(c.hidden_size, "hidden_size", kMaxWidth);
  bounded(c.num_layers, "num_layers", kMaxLayers);
  bounded(c.num_heads, "num_heads", kMaxHeads);
  bounded(c.num_kv_heads, "num_kv_heads", kMaxHeads);
  bounded(c.head_dim, "head_dim", kMaxHeadDim);
  bounded(c.lru_width, "lru_width", kMaxWidth);
  bounded(c.intermediate_size, "intermediate_size", kMaxWidth);
  bounded(c.conv1d_width, "conv1d_width", 64);
  bounded(c.attention_window, "attention_window", kMaxContext);
  GEMMAPOD_CHECK(c.num_heads % c.num_kv_heads == 0, where, ": num_heads (", c.num_heads,
                 ") must be a multiple of num_kv_heads (", c.num_kv_heads, ")");
  GEMMAPOD_CHECK(c.lru_width % c.num_heads == 0, where, ": lru_width (", c.lru_width,
                 ") must be a multiple of num_heads (", c.num_heads,
                 "): the RG-LRU gates are one block per head");
  const double rotary = c.head_dim * c.rotary_fraction;
  GEMMAPOD_CHECK(c.rotary_fraction > 0 && c.rotary_fraction <= 1 && rotary == std::floor(rotary) &&
                     static_cast<int64_t>(rotary) % 2 == 0,
                 where, ": rotary_fraction: ", c.rotary_fraction, " of head_dim ", c.head_dim,
                 " must be an even number of features");
  GEMMAPOD_CHECK(std::isfinite(c.rms_norm_eps) && c.rms_norm_eps > 0, where,
                 ": rms_norm_eps: must be a positive number, got ", c.rms_norm_eps);
  GEMMAPOD_CHECK(std::isfinite(c.rope_theta) && c.rope_theta > 0, where,
                 ": rope_theta: must be a positive number, got ", c.rope_theta);
  GEMMAPOD_CHECK(std::isfinite(c.final_logit_softcap) && c.final_logit_softcap >= 0, where,
                 ": final_logit_softcap: must be >= 0 (0 = off), got ", c.final_logit_softcap);
  GEMMAPOD_CHECK(static_cast<int64_t>(c.blocks.size()) == c.num_layers, where,
                 ": blocks: ", c.blocks.size(), " entries for ", c.num_layers, " layers");
  for (int32_t id : {c.bos_id, c.eos_id, c.pad_id}) {
    GEMMAPOD_CHECK(id >= 0 && id < c.vocab_size, where, ": token id ", id,
                   " outside the vocabulary [0, ", c.vocab_size, ")");
  }
}

Attributes ToAttributes(const RecurrentGemmaConfig& c) {
  Attributes a;
  a["name"] = c.name;
  a["architecture"] = std::string("recurrent_gemma");
  a["vocab_size"] = c.vocab_size;
  a["hidden_size"] = c.hidden_size;
  a["num_layers"] = c.num_layers;
  a["num_heads"] = c.num_heads;
  a["num_kv_heads"] = c.num_kv_heads;
  a["head_dim"] = c.head_dim;
  a["lru_width"] = c.lru_width;
  a["intermediate_size"] = c.intermediate_size;
  a["conv1d_width"] = c.conv1d_width;
  a["attention_window"] = c.attention_window;
  a["final_logit_softcap"] = c.final_logit_softcap;
  a["rope_theta"] = c.rope_theta;
  a["rotary_fraction"] = c.rotary_fraction;
  a["rms_norm_eps"] = c.rms_norm_eps;
  std::vector<std::string> blocks;
  for (TemporalBlock b : c.blocks) blocks.emplace_back(TemporalBlockName(b));
  a["blocks"] = blocks;
  a["bos_id"] = static_cast<int64_t>(c.bos_id);
  a["eos_id"] = static_cast<int64_t>(c.eos_id);
  a["pad_id"] = static_cast<int64_t>(c.pad_id);
  return a;
}

namespace {

template <typename T>
const T& Get(const Attributes& a, const std::string& key, const std::string& where) {
  const auto it = a.find(key);
  GEMMAPOD_CHECK(it != a.end(), where, ": model config attribute '", key, "' is missing");
  const T* v = std::get_if<T>(&it->second);
  GEMMAPOD_CHECK(v != nullptr, where, ": model config attribute '", key, "' has the wrong type");
  return *v;
}

double GetNumber(const Attributes& a, const std::string& key, const std::string& where) {
  const auto it = a.find(key);
  if (it != a.end()) {
    if (const auto* i = std::get_if<int64_t>(&it->second)) return static_cast<double>(*i);
  }
  return Get<double>(a, key, where);
}

TemporalBlock ParseBlock(const std::string& s, const std::string& where) {
  if (s == "recurrent") return TemporalBlock::kRecurrent;
  if (s == "attention") return TemporalBlock::kAttention;
  throw Error(StrCat(where, ": unknown block '", s, "' (recurrent, attention)"));
}

}  // namespace

RecurrentGemmaConfig RecurrentGemmaFromAttributes(const Attributes& a, const std::string& where) {
  GEMMAPOD_CHECK(Get<std::string>(a, "architecture", where) == "recurrent_gemma", where,
                 ": not a RecurrentGemma checkpoint (architecture '",
                 Get<std::string>(a, "architecture", where), "')");
  RecurrentGemmaConfig c;
  c.name = Get<std::string>(a, "name", where);
  c.vocab_size = Get<int64_t>(a, "vocab_size", where);
  c.hidden_size = Get<int64_t>(a, "hidden_size", where);
  c.num_layers = Get<int64_t>(a, "num_layers", where);
  c.num_heads = Get<int64_t>(a, "num_heads", where);
  c.num_kv_heads = Get<int64_t>(a, "num_kv_heads", where);
  c.head_dim = Get<int64_t>(a, "head_dim", where);
  c.lru_width = Get<int64_t>(a, "lru_width", where);
  c.intermediate_size = Get<int64_t>(a, "intermediate_size", where);
  c.conv1d_width = Get<int64_t>(a, "conv1d_width", where);
  c.attention_window = Get<int64_t>(a, "attention_window", where);
  c.final_logit_softcap = GetNumber(a, "final_logit_softcap", where);
  c.rope_theta = GetNumber(a, "rope_theta", where);
  c.rotary_fraction = GetNumber(a, "rotary_fraction", where);
  c.rms_norm_eps = GetNumber(a, "rms_norm_eps", where);
  for (const std::string& b : Get<std::vector<std::string>>(a, "blocks", where)) {
    c.blocks.push_back(ParseBlock(b, where + ": blocks"));
  }
  c.bos_id = static_cast<int32_t>(Get<int64_t>(a, "bos_id", where));
  c.eos_id = static_cast<int32_t>(Get<int64_t>(a, "eos_id", where));
  c.pad_id = static_cast<int32_t>(Get<int64_t>(a, "pad_id", where));
  Validate(c, where);
  return c;
}

RecurrentGemmaConfig LoadRecurrentGemmaConfigYaml(const std::string& path) {
  const YamlValue doc = ParseYamlDocument(ReadConfigText(path, "model config"), path);
  const YamlMap m =
      doc.AsMap({"name", "architecture", "vocab_size", "hidden_size", "num_layers", "num_heads",
                 "num_kv_heads", "head_dim", "lru_width", "intermediate_size", "conv1d_width",
                 "attention_window", "final_logit_softcap", "rope_theta", "rotary_fraction",
                 "rms_norm_eps", "blocks", "tokens"});
  m.Require("architecture").AsChoice({"recurrent_gemma"});
  RecurrentGemmaConfig c;
  c.name = m.Require("name").AsString();
  auto integer = [&](const char* key, int64_t& field) {
    if (auto v = m.Find(key)) field = v->AsInt();
  };
  auto number = [&](const char* key, double& field) {
    if (auto v = m.Find(key)) field = v->AsNumber();
  };
  c.vocab_size = m.Require("vocab_size").AsInt();
  c.hidden_size = m.Require("hidden_size").AsInt();
  c.num_layers = m.Require("num_layers").AsInt();
  c.num_heads = m.Require("num_heads").AsInt();
  c.head_dim = m.Require("head_dim").AsInt();
  c.lru_width = m.Require("lru_width").AsInt();
  c.intermediate_size = m.Require("intermediate_size").AsInt();
  integer("num_kv_heads", c.num_kv_heads);
  integer("conv1d_width", c.conv1d_width);
  integer("attention_window", c.attention_window);
  number("final_logit_softcap", c.final_logit_softcap);
  number("rope_theta", c.rope_theta);
  number("rotary_fraction", c.rotary_fraction);
  number("rms_norm_eps", c.rms_norm_eps);
  if (auto v = m.Find("blocks")) {
    std::vector<TemporalBlock> pattern;
    for (const YamlValue& item : v->AsList()) {
      pattern.push_back(ParseBlock(item.AsChoice({"recurrent", "attention"}), path + ": blocks"));
    }
    if (pattern.empty()) v->Fail("must list at least one block");
    for (int64_t i = 0; i < c.num_layers; ++i) c.blocks.push_back(pattern[i % pattern.size()]);
  } else {
    c.blocks = DefaultTemporalBlocks(c.num_layers);
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

RecurrentGemmaConfig ReadHfRecurrentGemmaConfig(const std::string& path) {
  using Json = nlohmann::json;
  const nlohmann::json j = ReadJsonFile(path);
  GEMMAPOD_CHECK(j.is_object() && j.value("model_type", "") == "recurrent_gemma", path,
                 ": key 'model_type' must be 'recurrent_gemma'");
  auto integer = [&](const char* key) -> int64_t {
    GEMMAPOD_CHECK(j.contains(key) && j[key].is_number_integer(), path, ": key '", key,
                   "': expected an integer");
    return j[key].get<int64_t>();
  };
  auto number = [&](const char* key, double fallback) {
    if (!j.contains(key) || j[key].is_null()) return fallback;
    GEMMAPOD_CHECK(j[key].is_number(), path, ": key '", key, "': expected a number");
    return j[key].get<double>();
  };
  auto text = [&](const char* key, const std::string& fallback) {
    if (!j.contains(key) || j[key].is_null()) return fallback;
    GEMMAPOD_CHECK(j[key].is_string(), path, ": key '", key, "': expected a string");
    return j[key].get<std::string>();
  };
  RecurrentGemmaConfig c;
  c.name = text("_name_or_path", "recurrent_gemma");
  c.vocab_size = integer("vocab_size");
  c.hidden_size = integer("hidden_size");
  c.num_layers = integer("num_hidden_layers");
  c.num_heads = integer("num_attention_heads");
  GEMMAPOD_CHECK(c.num_heads > 0, path, ": key 'num_attention_heads': must be positive, got ",
                 c.num_heads);
  c.num_kv_heads = j.contains("num_key_value_heads") ? integer("num_key_value_heads") : 1;
  c.head_dim = j.contains("head_dim") ? integer("head_dim") : c.hidden_size / c.num_heads;
  c.lru_width =
      j.contains("lru_width") && !j["lru_width"].is_null() ? integer("lru_width") : c.hidden_size;
  // Hugging Face stores twice the width of one up branch (its MLP halves it).
  c.intermediate_size = integer("intermediate_size") / 2;
  c.conv1d_width = j.contains("conv1d_width") ? integer("conv1d_width") : 4;
  c.attention_window =
      j.contains("attention_window_size") ? integer("attention_window_size") : 2048;
  c.final_logit_softcap = number("logits_soft_cap", 30);
  c.rope_theta = number("rope_theta", 10000);
  c.rotary_fraction = number("partial_rotary_factor", 0.5);
  c.rms_norm_eps = number("rms_norm_eps", 1e-6);
  GEMMAPOD_CHECK(
      j.value("hidden_activation", std::string("gelu_pytorch_tanh")) == "gelu_pytorch_tanh", path,
      ": key 'hidden_activation': only gelu_pytorch_tanh is computed");
  GEMMAPOD_CHECK(!j.value("attention_bias", false), path,
                 ": key 'attention_bias': q/k/v biases are not part of RecurrentGemma");
  if (j.contains("block_types")) {
    GEMMAPOD_CHECK(j["block_types"].is_array() && !j["block_types"].empty(), path,
                   ": key 'block_types': expected a non-empty list");
    std::vector<TemporalBlock> pattern;
    for (const Json& b : j["block_types"]) {
      pattern.push_back(ParseBlock(b.is_string() ? b.get<std::string>() : b.dump(),
                                   path + ": key 'block_types'"));
    }
    for (int64_t i = 0; i < c.num_layers; ++i) c.blocks.push_back(pattern[i % pattern.size()]);
  } else {
    c.blocks = DefaultTemporalBlocks(c.num_layers);
  }
  if (j.contains("bos_token_id") && j["bos_token_id"].is_number_integer())
    c.bos_id = j["bos_token_id"].get<int32_t>();
  if (j.contains("eos_token_id") && j["eos_token_id"].is_number_integer())
    c.eos_id = j["eos_token_id"].get<int32_t>();
  if (j.contains("pad_token_id") && j["pad_token_id"].is_number_integer())
    c.pad_id = j["pad_token_id"].get<int32_t>();
  Validate(c, path);
  return c;
}

}  // namespace gemmapod
