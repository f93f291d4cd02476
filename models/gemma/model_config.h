// ModelConfig: everything that distinguishes one Gemma decoder from another, as plain data.
// There is no "if model == gemma2_9b" anywhere: the decoder reads these fields. A config comes
// from a YAML file (configs/models/*.yaml), from a Hugging Face config.json, or from a checkpoint's
// attributes, and every one of those paths ends in Validate().
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/checkpoint/attributes.h"
#include "runtime/dtype.h"

namespace gemmapod {

// The Hugging Face model_type each architecture reads and writes.
enum class Architecture { kGemma, kGemma2, kGemma3Text };
const char* ArchitectureName(Architecture a);  // "gemma", "gemma2", "gemma3_text"
Architecture ParseArchitecture(const std::string& name, const std::string& where);

// Self-attention layers either see the whole causal past or the last `sliding_window` keys.
enum class AttentionKind { kGlobal, kSliding };
const char* AttentionKindName(AttentionKind k);  // "global", "sliding"

// How sqrt(hidden_size), the embedding multiplier, is rounded before use. The references differ
// and the difference is visible in the logits (MODEL_SPEC §1.2).
enum class EmbedScaleRounding {
  kActivation,   // to the activation dtype (f32 here): Gemma 1, Gemma 2, T5Gemma
  kWeightDType,  // to the embedding table's stored dtype: Gemma 3
  kBF16,         // always to bf16: RecurrentGemma
};
const char* EmbedScaleRoundingName(EmbedScaleRounding r);

// How a checkpoint stores its weight matrices (the embedding included). kInt8: symmetric int8 per
// output row, each matrix with an f32 "<name>.weight_scale" of its rows (models/layers/linear.h).
enum class WeightQuantization { kNone, kInt8 };
const char* WeightQuantizationName(WeightQuantization q);  // "none", "int8"
WeightQuantization ParseWeightQuantization(const std::string& name, const std::string& where);

// What a config may say, so that a size read from a file is refused before anything is sized by
// it (a layer count of 10^7 once grew memory to tens of GB before any check). Far above every
// published Gemma (46 layers, 256k vocabulary, 4608 wide, 36864-wide MLP, 128k context).
inline constexpr int64_t kMaxLayers = 4096;
inline constexpr int64_t kMaxVocab = int64_t{1} << 24;
inline constexpr int64_t kMaxWidth = int64_t{1} << 20;  // hidden, MLP, LRU widths
inline constexpr int64_t kMaxHeads = 4096;
inline constexpr int64_t kMaxHeadDim = 8192;
inline constexpr int64_t kMaxContext = int64_t{1} << 26;
// "<where>: <field>: must be in [1, <max>], got <value>" unless 1 <= value <= max.
void CheckConfigSize(int64_t value, const char* field, int64_t max, const std::string& where);

struct ModelConfig {
  std::string name;  // "gemma2-2b"; informational
  Architecture architecture = Architecture::kGemma;

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t intermediate_size = 0;  // width of each of gate_proj and up_proj
  double rms_norm_eps = 1e-6;

  // Attention scores are scaled by query_pre_attn_scalar^-1/2 (head_dim for most sizes, 144 for
  // Gemma 2 27B).
  double query_pre_attn_scalar = 0;
  double attn_logit_softcap = 0;           // 0: off. Applied before the mask.
  double final_logit_softcap = 0;          // 0: off
  int64_t sliding_window = 0;              // keys per query on sliding layers, self included
  std::vector<AttentionKind> layer_kinds;  // one per layer

  double rope_theta_global = 10000;
  double rope_theta_local = 10000;
  double rope_scaling_global = 1;  // linear position scaling on global layers (1: none)

  bool qk_norm = false;     // Gemma 3: RMSNorm over head_dim on q and k
  bool post_norms = false;  // Gemma 2/3: RMSNorm on the attention and MLP outputs too
  EmbedScaleRounding embed_scale_rounding = EmbedScaleRounding::kActivation;
  // A property of the stored weights rather than of the architecture, kept here because it
  // decides which tensors a checkpoint holds (GemmaParameters).
  WeightQuantization quantization = WeightQuantization::kNone;
  // A sequence-scoring model (a reward model): the number of scores its head ("score.weight",
  // [num_labels, hidden]) reads off a sequence's last token after the final norm, as Hugging
  // Face's *ForSequenceClassification. 0: a language model only.
  int64_t num_labels = 0;

  int64_t max_position_embeddings = 8192;
  int32_t bos_id = 2;
  int32_t eos_id = 1;
  int32_t pad_id = 0;

  // Derived.
  int64_t q_width() const { return num_heads * head_dim; }
  int64_t kv_width() const { return num_kv_heads * head_dim; }
  float attention_scale() const;
  // sqrt(hidden_size) rounded as the family's reference does, for an embedding stored as `table`
  // (an int8 table counts as bf16: it is quantized from the released bf16 weights).
  float EmbedScale(DType table) const;
  // Parameters, tied head counted once.
  int64_t ParameterCount() const;
};

// Checks every field and the relations between them; the message starts with `where` (a file
// name) and names the field.
void Validate(const ModelConfig& config, const std::string& where);

// The layer kinds a family uses when a file does not list them: Gemma 1 all global, Gemma 2
// alternating from a sliding layer 0, Gemma 3 five sliding then one global.
std::vector<AttentionKind> DefaultLayerKinds(Architecture a, int64_t num_layers);

// Checkpoint attributes: one attribute per field, names as in the YAML file.
Attributes ToAttributes(const ModelConfig& config);
ModelConfig FromAttributes(const Attributes& attributes, const std::string& where);

// configs/models/*.yaml (format in docs/model-config.md); errors name file:line:column and key.
ModelConfig LoadModelConfigYaml(const std::string& path);

}  // namespace gemmapod
