#include "models/gemma/model_config.h"

#include <cmath>

#include "runtime/error.h"

namespace gemmapod {

const char* ArchitectureName(Architecture a) {
  switch (a) {
    case Architecture::kGemma:
      return "gemma";
    case Architecture::kGemma2:
      return "gemma2";
    case Architecture::kGemma3Text:
      return "gemma3_text";
  }
  return "?";
}

Architecture ParseArchitecture(const std::string& name, const std::string& where) {
  if (name == "gemma") return Architecture::kGemma;
  if (name == "gemma2") return Architecture::kGemma2;
  if (name == "gemma3_text") return Architecture::kGemma3Text;
  throw Error(StrCat(where, ": architecture: unknown '", name,
                     "' (decoder-only architectures: gemma, gemma2, gemma3_text)"));
}

const char* AttentionKindName(AttentionKind k) {
  return k == AttentionKind::kGlobal ? "global" : "sliding";
}

const char* EmbedScaleRoundingName(EmbedScaleRounding r) {
  switch (r) {
    case EmbedScaleRounding::kActivation:
      return "activation";
    case EmbedScaleRounding::kWeightDType:
      return "weight";
    case EmbedScaleRounding::kBF16:
      return "bf16";
  }
  return "?";
}

const char* WeightQuantizationName(WeightQuantization q) {
  return q == WeightQuantization::kInt8 ? "int8" : "none";
}

WeightQuantization ParseWeightQuantization(const std::string& name, const std::string& where) {
  if (name == "none") return WeightQuantization::kNone;
  if (name == "int8") return WeightQuantization::kInt8;
  throw Error(StrCat(where, ": quantization: unknown value '", name, "' (none, int8)"));
}

float ModelConfig::attention_scale() const {
  return static_cast<float>(1.0 / std::sqrt(query_pre_attn_scalar));
}

float ModelConfig::EmbedScale(DType table) const {
  const float s = static_cast<float>(std::sqrt(static_cast<double>(hidden_size)));
  const bool to_bf16 = embed_scale_rounding == EmbedScaleRounding::kBF16 ||
                       (embed_scale_rounding == EmbedScaleRounding::kWeightDType &&
                        (table == DType::kBF16 || table == DType::kI8));
  return to_bf16 ? BF16ToFloat(FloatToBF16(s)) : s;
}

int64_t ModelConfig::ParameterCount() const {
  const int64_t d = hidden_size;
  const int64_t norms = (post_norms ? 4 : 2) * d + (qk_norm ? 2 * head_dim : 0);
  const int64_t attention = d * q_width() + 2 * d * kv_width() + q_width() * d;
  const int64_t mlp = 3 * d * intermediate_size;
  return vocab_size * d + num_layers * (attention + mlp + norms) + d + num_labels * d;
}

std::vector<AttentionKind> DefaultLayerKinds(Architecture a, int64_t num_layers) {
  // Out of range: nothing (Validate then names the count and the file).
  if (num_layers > kMaxLayers) return {};
  std::vector<AttentionKind> kinds(static_cast<size_t>(std::max<int64_t>(num_layers, 0)));
  for (int64_t i = 0; i < num_layers; ++i) {
    AttentionKind k = AttentionKind::kGlobal;
    if (a == Architecture::kGemma2)
      k = i % 2 == 0 ? AttentionKind::kSliding : AttentionKind::kGlobal;
    if (a == Architecture::kGemma3Text) {
      k = (i + 1) % 6 == 0 ? AttentionKind::kGlobal : AttentionKind::kSliding;
    }
    kinds[static_cast<size_t>(i)] = k;
  }
  return kinds;
}

void CheckConfigSize(int64_t value, const char* field, int64_t max, const std::string& where) {
  GEMMAPOD_CHECK(value > 0 && value <= max, where, ": ", field, ": must be in [1, ", max, "], got ",
                 value);
}

void Validate(const ModelConfig& c, const std::string& where) {
  auto bounded = [&](int64_t v, const char* field, int64_t max) {
    CheckConfigSize(v, field, max, where);
  };
  bounded(c.vocab_size, "vocab_size", kMaxVocab);
  bounded(c.hidden_size, "hidden_size", kMaxWidth);
  bounded(c.num_layers, "num_layers", kMaxLayers);
  bounded(c.num_heads, "num_heads", kMaxHeads);
  bounded(c.num_kv_heads, "num_kv_heads", kMaxHeads);
  bounded(c.head_dim, "head_dim", kMaxHeadDim);
  bounded(c.intermediate_size, "intermediate_size", kMaxWidth);
  bounded(c.max_position_embeddings, "max_position_embeddings", kMaxContext);
  GEMMAPOD_CHECK(c.num_heads % c.num_kv_heads == 0, where, ": num_heads (", c.num_heads,
                 ") must be a multiple of num_kv_heads (", c.num_kv_heads, ")");
  GEMMAPOD_CHECK(c.head_dim % 2 == 0, where, ": head_dim: RoPE needs an even head_dim, got ",
                 c.head_dim);
  auto finite_positive = [&](double v, const char* field) {
    GEMMAPOD_CHECK(std::isfinite(v) && v > 0, where, ": ", field,
                   ": must be a positive number, got ", v);
  };
  finite_positive(c.rms_norm_eps, "rms_norm_eps");
  finite_positive(c.query_pre_attn_scalar, "query_pre_attn_scalar");
  finite_positive(c.rope_theta_global, "rope_theta.global");
  finite_positive(c.rope_theta_local, "rope_theta.local");
  finite_positive(c.rope_scaling_global, "rope_scaling_global");
  GEMMAPOD_CHECK(std::isfinite(c.attn_logit_softcap) && c.attn_logit_softcap >= 0, where,
                 ": attn_logit_softcap: must be >= 0 (0 = off), got ", c.attn_logit_softcap);
  GEMMAPOD_CHECK(std::isfinite(c.final_logit_softcap) && c.final_logit_softcap >= 0, where,
                 ": final_logit_softcap: must be >= 0 (0 = off), got ", c.final_logit_softcap);
  GEMMAPOD_CHECK(static_cast<int64_t>(c.layer_kinds.size()) == c.num_layers, where,
                 ": layer_kinds: ", c.layer_kinds.size(), " entries for ", c.num_layers, " layers");
  bool any_sliding = false;
  for (AttentionKind k : c.layer_kinds) any_sliding |= k == AttentionKind::kSliding;
  GEMMAPOD_CHECK(!any_sliding || c.sliding_window > 0, where,
                 ": sliding_window: sliding layers need a positive window, got ", c.sliding_window);
  auto token = [&](int32_t id, const char* field) {
    GEMMAPOD_CHECK(id >= 0 && id < c.vocab_size, where, ": ", field, ": id ", id,
                   " outside the vocabulary [0, ", c.vocab_size, ")");
  };
  token(c.bos_id, "tokens.bos");
  token(c.eos_id, "tokens.eos");
  token(c.pad_id, "tokens.pad");
}

namespace {

int64_t GetInt(const Attributes& a, const std::string& key, const std::string& where) {
  auto it = a.find(key);
  GEMMAPOD_CHECK(it != a.end(), where, ": model config attribute '", key, "' is missing");
  if (const auto* v = std::get_if<int64_t>(&it->second)) return *v;
  throw Error(StrCat(where, ": model config attribute '", key, "' must be an integer"));
}

double GetNumber(const Attributes& a, const std::string& key, const std::string& where) {
  auto it = a.find(key);
  GEMMAPOD_CHECK(it != a.end(), where, ": model config attribute '", key, "' is missing");
  if (const auto* v = std::get_if<double>(&it->second)) return *v;
  if (const auto* v = std::get_if<int64_t>(&it->second)) return static_cast<double>(*v);
  throw Error(StrCat(where, ": model config attribute '", key, "' must be a number"));
}

std::string GetString(const Attributes& a, const std::string& key, const std::string& where) {
  auto it = a.find(key);
  GEMMAPOD_CHECK(it != a.end(), where, ": model config attribute '", key, "' is missing");
  if (const auto* v = std::get_if<std::string>(&it->second)) return *v;
  throw Error(StrCat(where, ": model config attribute '", key, "' must be a string"));
}

}  // namespace

Attributes ToAttributes(const ModelConfig& c) {
  Attributes a;
  a["name"] = c.name;
  a["architecture"] = std::string(ArchitectureName(c.architecture));
  a["vocab_size"] = c.vocab_size;
  a["hidden_size"] = c.hidden_size;
  a["num_layers"] = c.num_layers;
  a["num_heads"] = c.num_heads;
  a["num_kv_heads"] = c.num_kv_heads;
  a["head_dim"] = c.head_dim;
  a["intermediate_size"] = c.intermediate_size;
  a["rms_norm_eps"] = c.rms_norm_eps;
  a["query_pre_attn_scalar"] = c.query_pre_attn_scalar;
  a["attn_logit_softcap"] = c.attn_logit_softcap;
  a["final_logit_softcap"] = c.final_logit_softcap;
  a["sliding_window"] = c.sliding_window;
  std::vector<std::string> kinds;
  for (AttentionKind k : c.layer_kinds) kinds.emplace_back(AttentionKindName(k));
  a["layer_kinds"] = kinds;
  a["rope_theta_global"] = c.rope_theta_global;
  a["rope_theta_local"] = c.rope_theta_local;
  a["rope_scaling_global"] = c.rope_scaling_global;
  a["qk_norm"] = static_cast<int64_t>(c.qk_norm);
  a["post_norms"] = static_cast<int64_t>(c.post_norms);
  a["embed_scale"] = std::string(EmbedScaleRoundingName(c.embed_scale_rounding));
  a["max_position_embeddings"] = c.max_position_embeddings;
  a["bos_id"] = static_cast<int64_t>(c.bos_id);
  a["eos_id"] = static_cast<int64_t>(c.eos_id);
  a["pad_id"] = static_cast<int64_t>(c.pad_id);
  // Written only when set, so files from before it read the same.
  if (c.quantization != WeightQuantization::kNone) {
    a["quantization"] = std::string(WeightQuantizationName(c.quantization));
  }
  if (c.num_labels > 0) a["num_labels"] = c.num_labels;
  return a;
}

ModelConfig FromAttributes(const Attributes& a, const std::string& where) {
  ModelConfig c;
  c.name = GetString(a, "name", where);
  c.architecture = ParseArchitecture(GetString(a, "architecture", where), where);
  c.vocab_size = GetInt(a, "vocab_size", where);
  c.hidden_size = GetInt(a, "hidden_size", where);
  c.num_layers = GetInt(a, "num_layers", where);
  c.num_heads = GetInt(a, "num_heads", where);
  c.num_kv_heads = GetInt(a, "num_kv_heads", where);
  c.head_dim = GetInt(a, "head_dim", where);
  c.intermediate_size = GetInt(a, "intermediate_size", where);
  c.rms_norm_eps = GetNumber(a, "rms_norm_eps", where);
  c.query_pre_attn_scalar = GetNumber(a, "query_pre_attn_scalar", where);
  c.attn_logit_softcap = GetNumber(a, "attn_logit_softcap", where);
  c.final_logit_softcap = GetNumber(a, "final_logit_softcap", where);
  c.sliding_window = GetInt(a, "sliding_window", where);
  auto it = a.find("layer_kinds");
  GEMMAPOD_CHECK(it != a.end(), where, ": model config attribute 'layer_kinds' is missing");
  const auto* kinds = std::get_if<std::vector<std::string>>(&it->second);
  GEMMAPOD_CHECK(kinds != nullptr, where, ": model config attribute 'layer_kinds' must be strings");
  for (const std::string& k : *kinds) {
    GEMMAPOD_CHECK(k == "global" || k == "sliding", where, ": layer_kinds: unknown kind '", k,
                   "' (global or sliding)");
    c.layer_kinds.push_back(k == "global" ? AttentionKind::kGlobal : AttentionKind::kSliding);
  }
  c.rope_theta_global = GetNumber(a, "rope_theta_global", where);
  c.rope_theta_local = GetNumber(a, "rope_theta_local", where);
  c.rope_scaling_global = GetNumber(a, "rope_scaling_global", where);
  c.qk_norm = GetInt(a, "qk_norm", where) != 0;
  c.post_norms = GetInt(a, "post_norms", where) != 0;
  const std::string scale = GetString(a, "embed_scale", where);
  if (scale == "activation") {
    c.embed_scale_rounding = EmbedScaleRounding::kActivation;
  } else if (scale == "weight") {
    c.embed_scale_rounding = EmbedScaleRounding::kWeightDType;
  } else if (scale == "bf16") {
    c.embed_scale_rounding = EmbedScaleRounding::kBF16;
  } else {
    throw Error(
        StrCat(where, ": embed_scale: unknown rounding '", scale, "' (activation, weight, bf16)"));
  }
  c.max_position_embeddings = GetInt(a, "max_position_embeddings", where);
  c.bos_id = static_cast<int32_t>(GetInt(a, "bos_id", where));
  c.eos_id = static_cast<int32_t>(GetInt(a, "eos_id", where));
  c.pad_id = static_cast<int32_t>(GetInt(a, "pad_id", where));
  if (a.count("num_labels") != 0) {
    c.num_labels = GetInt(a, "num_labels", where);
    GEMMAPOD_CHECK(c.num_labels >= 0, where, ": num_labels: must be >= 0, got ", c.num_labels);
  }
  if (a.count("quantization") != 0) {
    c.quantization = ParseWeightQuantization(GetString(a, "quantization", where), where);
  }
  Validate(c, where);
  return c;
}

}  // namespace gemmapod
