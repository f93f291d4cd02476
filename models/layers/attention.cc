#include "models/layers/attention.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "runtime/cpu/attention.h"
#include "runtime/error.h"

namespace gemmapod {
namespace {

cpu::AttentionProblem ProblemOf(const AttentionShape& s) {
  return {s.num_heads, s.num_kv_heads,
          s.head_dim,  s.kv_row_stride > 0 ? s.kv_row_stride : s.num_kv_heads * s.head_dim,
          s.scale,     s.softcap};
}

}  // namespace

void RingAttention(const AttentionShape& s, const float* q, const float* k_new, const float* v_new,
                   int64_t n, int64_t start, const KeyRing& ring, const int64_t* lo,
                   const int64_t* hi, float* out) {
  GEMMAPOD_CHECK(ring.to == start || ring.to <= ring.from,
                 "attention: the ring holds positions up to ", ring.to, ", the chunk starts at ",
                 start);
  GEMMAPOD_CHECK(ring.to - ring.from <= ring.capacity, "attention: ", ring.to - ring.from,
                 " positions cannot fit a ring of ", ring.capacity);
  const int64_t row = ProblemOf(s).kv_row_stride;
  cpu::KeyRun runs[3];
  int64_t count = 0;
  // The held positions, cut where the ring wraps.
  for (int64_t p = ring.from; p < ring.to;) {
    const int64_t slot = p % ring.capacity;
    const int64_t len = std::min(ring.to - p, ring.capacity - slot);
    runs[count++] = {ring.keys + slot * row, ring.values + slot * row, p, len, nullptr};
    p += len;
  }
  runs[count++] = {k_new, v_new, start, n, nullptr};
  cpu::Attention(ProblemOf(s), q, n, runs, count, lo, hi, out);
}

void CachedSelfAttention(const AttentionShape& s, const float* q, const float* k_new,
                         const float* v_new, int64_t n, int64_t start, LayerKv cache, float* out) {
  const int64_t KV = s.num_kv_heads, hd = s.head_dim;
  const int64_t cap = cache.capacity;
  // The oldest position a query of this chunk may need must still be in the ring.
  GEMMAPOD_CHECK(s.window > 0 ? s.window <= cap || start + n <= cap : start + n <= cap,
                 "attention: cache capacity ", cap, " cannot hold the keys positions up to ",
                 start + n, " need");
  std::vector<int64_t> lo(static_cast<size_t>(n)), hi(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t p = start + i;
    lo[i] = s.window > 0 ? std::max<int64_t>(0, p - s.window + 1) : 0;
    hi[i] = p + 1;
  }
  const KeyRing ring{cache.keys, cache.values, cap, std::max<int64_t>(0, start - cap), start};
  RingAttention(s, q, k_new, v_new, n, start, ring, lo.data(), hi.data(), out);

  // Store the new keys and values; a chunk longer than a sliding ring keeps only its tail.
  const size_t row = static_cast<size_t>(KV * hd);
  for (int64_t i = std::max<int64_t>(0, n - cap); i < n; ++i) {
    const int64_t slot = (start + i) % cap;
    std::memcpy(cache.keys + slot * KV * hd, k_new + i * KV * hd, row * sizeof(float));
    std::memcpy(cache.values + slot * KV * hd, v_new + i * KV * hd, row * sizeof(float));
  }
}

void FullAttention(const AttentionShape& s, const float* q, int64_t n, const float* k,
                   const float* v, int64_t m, const uint8_t* key_valid, float* out) {
  std::vector<int64_t> lo(static_cast<size_t>(n)), hi(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    lo[i] = s.window > 0 ? std::max<int64_t>(0, i - s.window + 1) : 0;
    hi[i] = s.window > 0 ? std::min<int64_t>(m, i + s.window) : m;
  }
  const cpu::KeyRun run{k, v, 0, m, key_valid};
  cpu::Attention(ProblemOf(s), q, n, &run, 1, lo.data(), hi.data(), out);
}

}  // namespace gemmapod
