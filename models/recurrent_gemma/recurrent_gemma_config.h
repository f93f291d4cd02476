// RecurrentGemmaConfig: everything that distinguishes one RecurrentGemma (Griffin) model from
// another, as plain data (configs/models/recurrentgemma-*.yaml, a Hugging Face config.json with
// model_type recurrent_gemma, or a checkpoint's attributes; every path ends in Validate()).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/checkpoint/attributes.h"

namespace gemmapod {

// A residual block's temporal mixer: the RG-LRU recurrence or local multi-query attention.
enum class TemporalBlock { kRecurrent, kAttention };
const char* TemporalBlockName(TemporalBlock b);  // "recurrent", "attention"

struct RecurrentGemmaConfig {
  std::string name;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;  // the residual width d
  int64_t num_layers = 0;
  int64_t num_heads = 0;            // attention heads, and the RG-LRU's gate blocks
  int64_t num_kv_heads = 1;         // MQA
  int64_t head_dim = 0;             // attention head width
  int64_t lru_width = 0;            // width of the recurrent branch (RG-LRU state per sequence)
  int64_t intermediate_size = 0;    // MLP width of each of the two up branches
  int64_t conv1d_width = 4;         // causal depthwise convolution taps
  int64_t attention_window = 2048;  // a query sees keys at q - k <= window
  double final_logit_softcap = 30;
  double rope_theta = 10000;
  double rotary_fraction = 0.5;  // RoPE on the first half of each head
  double rms_norm_eps = 1e-6;
  std::vector<TemporalBlock> blocks;  // one per layer
  int32_t bos_id = 2;
  int32_t eos_id = 1;
  int32_t pad_id = 0;

  // sqrt(hidden_size) rounded to bf16, as the references scale the embedding.
  float EmbedScale() const;
  int64_t lru_block_width() const { return lru_width / num_heads; }
  int64_t ParameterCount() const;
};

// The family's pattern: (recurrent, recurrent, attention) repeated.
std::vector<TemporalBlock> DefaultTemporalBlocks(int64_t num_layers);

void Validate(const RecurrentGemmaConfig& config, const std::string& where);
Attributes ToAttributes(const RecurrentGemmaConfig& config);  // architecture "recurrent_gemma"
RecurrentGemmaConfig RecurrentGemmaFromAttributes(const Attributes& a, const std::string& where);
// configs/models/recurrentgemma-*.yaml; errors name file:line:column and key.
RecurrentGemmaConfig LoadRecurrentGemmaConfigYaml(const std::string& path);
// A Hugging Face config.json of model_type recurrent_gemma.
RecurrentGemmaConfig ReadHfRecurrentGemmaConfig(const std::string& path);

}  // namespace gemmapod
