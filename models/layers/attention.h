// The attention of every Gemma family, on the CPU attention kernel (runtime/cpu/attention.h):
// causal self-attention over a KV cache (global or sliding window), T5Gemma's bidirectional
// encoder and its cross-attention, Griffin's local MQA over its ring. Exact semantics of the
// references: scores scaled, soft-capped (before the mask), masked, softmax in f32, then values.
// What differs between them is only which positions hold keys and which a query sees.
#pragma once

#include <cstdint>
#include <vector>

#include "models/kv_cache.h"

namespace gemmapod {

struct AttentionShape {
  int64_t num_heads = 0;     // query heads (this rank's)
  int64_t num_kv_heads = 0;  // key/value heads; query head h reads kv head h / (H / KV)
  int64_t head_dim = 0;
  float scale = 1;     // multiplies q.k
  float softcap = 0;   // 0: off
  int64_t window = 0;  // 0: global; else a query at p sees keys p - window < j <= p
  // Floats from one position's key row to the next; 0: num_kv_heads * head_dim (dense). Larger
  // when the heads read are some of the heads a row holds (a tensor-parallel rank's).
  int64_t kv_row_stride = 0;
};

// A ring of key/value rows [capacity, row stride]: position p lives in slot p % capacity, and the
// positions [from, to) are held (to - from <= capacity).
struct KeyRing {
  const float* keys = nullptr;
  const float* values = nullptr;
  int64_t capacity = 0;
  int64_t from = 0, to = 0;
};

// Attention of n queries at positions [start, start + n) over the keys `ring` holds (positions
// below start) and the chunk's own keys k_new, v_new [n, KV, hd]. Query i sees the positions
// [lo[i], hi[i]). q, out: [n, H, hd].
void RingAttention(const AttentionShape& shape, const float* q, const float* k_new,
                   const float* v_new, int64_t n, int64_t start, const KeyRing& ring,
                   const int64_t* lo, const int64_t* hi, float* out);

// q: [n, H, hd] and k_new, v_new: [n, KV, hd] for positions [start, start + n), RoPE applied.
// Positions below `start` are read from `cache`. out: [n, H, hd]. Afterwards the new keys and
// values are stored in `cache` (the caller advances the sequence length once all layers ran).
void CachedSelfAttention(const AttentionShape& shape, const float* q, const float* k_new,
                         const float* v_new, int64_t n, int64_t start, LayerKv cache, float* out);

// Attention of n queries over m keys known all at once, without a cache: T5Gemma's encoder
// self-attention (bidirectional; with shape.window > 0 query i sees key j only when
// |i - j| < window, queries and keys indexed alike) and its decoder's cross-attention over the
// encoder output (window 0: every key). Keys whose key_valid entry is 0 (padding) are never seen;
// a query that sees no key at all outputs zeros. q: [n, H, hd]; k, v: [m, KV, hd]; out: [n, H, hd].
void FullAttention(const AttentionShape& shape, const float* q, int64_t n, const float* k,
                   const float* v, int64_t m, const uint8_t* key_valid, float* out);

}  // namespace gemmapod
