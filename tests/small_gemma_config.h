// For tests that need some small Gemma model rather than a particular one: the shape is given,
// the rest is Gemma 2's (post-norms, a sliding window of 4, query_pre_attn_scalar = head_dim,
// 64 positions), and the config is validated.
#pragma once

#include <cstdint>
#include <string>

#include "models/gemma/model_config.h"

namespace gemmapod {

struct SmallShape {
  int64_t vocab = 64;
  int64_t hidden = 16;
  int64_t layers = 2;
  int64_t heads = 2;
  int64_t kv_heads = 1;
  int64_t head_dim = 8;
  int64_t ffn = 24;
};

inline ModelConfig SmallGemma2Config(const std::string& name, const SmallShape& s) {
  ModelConfig c;
  c.name = name;
  c.architecture = Architecture::kGemma2;
  c.vocab_size = s.vocab;
  c.hidden_size = s.hidden;
  c.num_layers = s.layers;
  c.num_heads = s.heads;
  c.num_kv_heads = s.kv_heads;
  c.head_dim = s.head_dim;
  c.intermediate_size = s.ffn;
  c.query_pre_attn_scalar = static_cast<double>(s.head_dim);
  c.sliding_window = 4;
  c.layer_kinds = DefaultLayerKinds(c.architecture, c.num_layers);
  c.post_norms = true;
  c.max_position_embeddings = 64;
  Validate(c, name);
  return c;
}

}  // namespace gemmapod
