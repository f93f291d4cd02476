// The attention of every Gemma family, through the device seam (runtime/ops/ops.h: one kernel
// family, flash-attention style): causal self-attention over a KV cache (global or sliding
// window), T5Gemma's bidirectional encoder and its cross-attention, Griffin's local MQA over its
// ring. Exact semantics of the references: scores scaled, soft-capped (before the mask), masked,
// softmax in f32, then values. What differs between them is only which positions hold keys and
// which a query sees.
#pragma once

#include <cstdint>
#include <span>

#include "models/layers/kv_cache.h"
#include "runtime/tensor.h"

namespace gemmapod {

struct AttentionShape {
  int64_t num_heads = 0;     // query heads (this rank's)
  int64_t num_kv_heads = 0;  // key/value heads; query head h reads kv head h / (H / KV)
  int64_t head_dim = 0;
  float scale = 1;     // multiplies q.k
  float softcap = 0;   // 0: off
  int64_t window = 0;  // 0: global; else a query at p sees keys p - window < j <= p
  // The key/value rows hold more heads than are read (a tensor-parallel rank's share of a
  // replicated head set): the heads read start at this one.
  int64_t first_kv_head = 0;
};

// A ring of key/value rows [capacity, row width] (tensors): position p lives in slot
// p % capacity, and the positions [from, to) are held (to - from <= capacity).
struct KeyRing {
  Tensor keys;
  Tensor values;
  int64_t capacity = 0;
  int64_t from = 0, to = 0;
};

// Attention of n = q.dim(0) queries at positions [start, start + n) over the keys `ring` holds
// (positions below start) and the chunk's own keys k_new, v_new [n, row width]. Query i sees the
// positions [lo[i], hi[i]). q, out: [n, H * hd].
void RingAttention(const AttentionShape& shape, const Tensor& q, const Tensor& k_new,
                   const Tensor& v_new, int64_t start, const KeyRing& ring,
                   std::span<const int64_t> lo, std::span<const int64_t> hi, Tensor& out);

// q: [n, H * hd] and k_new, v_new: [n, KV * hd] for positions [start, start + n), RoPE applied.
// Positions below `start` are read from `cache` through its block table. out: [n, H * hd].
// Afterwards the new keys and values are stored in `cache` (the caller advances the sequence length
// once all layers ran).
void CachedSelfAttention(const AttentionShape& shape, const Tensor& q, const Tensor& k_new,
                         const Tensor& v_new, int64_t start, const LayerKv& cache, Tensor& out);

// Attention of n queries over m keys known all at once, without a cache: T5Gemma's encoder
// self-attention (bidirectional; with shape.window > 0 query i sees key j only when
// |i - j| < window, queries and keys indexed alike) and its decoder's cross-attention over the
// encoder output (window 0: every key). Keys whose key_valid entry is 0 (padding) are never seen;
// a query that sees no key at all outputs zeros. q: [n, H * hd]; k, v: [m, KV * hd];
// out: [n, H * hd].
void FullAttention(const AttentionShape& shape, const Tensor& q, const Tensor& k, const Tensor& v,
                   const uint8_t* key_valid, Tensor& out);

}  // namespace gemmapod
