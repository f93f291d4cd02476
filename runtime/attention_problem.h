// The shape of an attention problem, the same on every device: query heads grouped over key/value
// heads, the scale and soft-cap of the scores, and where a head's key sits in a key row.
#pragma once

#include <cstdint>

namespace gemmapod {

struct AttentionProblem {
  int64_t num_heads = 0;     // query heads; query head h reads key/value head h / (H / KV)
  int64_t num_kv_heads = 0;  // key/value heads read
  int64_t head_dim = 0;
  int64_t kv_row_stride = 0;  // floats from one position's key row to the next (>= KV * hd)
  float scale = 1;            // multiplies q.k
  float softcap = 0;          // > 0: scores become cap * tanh(score / cap) before masking
  // The row holds more heads than are read (a tensor-parallel rank's): key/value head g of the
  // problem starts at (first_kv_head + g) * head_dim within a row.
  int64_t first_kv_head = 0;
};

}  // namespace gemmapod
