#include "models/layers/attention.h"

#include <algorithm>
#include <vector>

#include "runtime/error.h"
#include "runtime/ops/ops.h"

namespace gemmapod {
namespace {

AttentionProblem ProblemOf(const AttentionShape& s, int64_t row_width) {
  AttentionProblem p;
  p.num_heads = s.num_heads;
  p.num_kv_heads = s.num_kv_heads;
  p.head_dim = s.head_dim;
  p.kv_row_stride = row_width;
  p.scale = s.scale;
  p.softcap = s.softcap;
  p.first_kv_head = s.first_kv_head;
  return p;
}

}  // namespace

void RingAttention(const AttentionShape& s, const Tensor& q, const Tensor& k_new,
                   const Tensor& v_new, int64_t start, const KeyRing& ring,
                   std::span<const int64_t> lo, std::span<const int64_t> hi, Tensor& out) {
  GEMMAPOD_CHECK(ring.to == start || ring.to <= ring.from,
                 "attention: the ring holds positions up to ", ring.to, ", the chunk starts at ",
                 start);
  GEMMAPOD_CHECK(ring.to - ring.from <= ring.capacity, "attention: ", ring.to - ring.from,
                 " positions cannot fit a ring of ", ring.capacity);
  std::vector<ops::KeyRunTensors> runs;
  // The held positions, cut where the ring wraps: each piece a view of the ring's rows.
  for (int64_t p = ring.from; p < ring.to;) {
    const int64_t slot = p % ring.capacity;
    const int64_t len = std::min(ring.to - p, ring.capacity - slot);
    runs.push_back({ring.keys.Slice(slot, slot + len), ring.values.Slice(slot, slot + len), p});
    p += len;
  }
  runs.push_back({k_new, v_new, start});
  ops::Attention(ProblemOf(s, k_new.dim(1)), q, runs, lo, hi, out);
}

void CachedSelfAttention(const AttentionShape& s, const Tensor& q, const Tensor& k_new,
                         const Tensor& v_new, int64_t start, const LayerKv& cache, Tensor& out) {
  const int64_t n = q.dim(0), cap = cache.capacity;
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
  RingAttention(s, q, k_new, v_new, start, ring, lo, hi, out);

  // Store the new keys and values; a chunk longer than a sliding ring keeps only its tail.
  std::vector<int64_t> slots(static_cast<size_t>(n), -1);
  for (int64_t i = std::max<int64_t>(0, n - cap); i < n; ++i) slots[i] = (start + i) % cap;
  Tensor keys = cache.keys, values = cache.values;
  ops::ScatterRows(k_new, slots, keys);
  ops::ScatterRows(v_new, slots, values);
}

void FullAttention(const AttentionShape& s, const Tensor& q, const Tensor& k, const Tensor& v,
                   const uint8_t* key_valid, Tensor& out) {
  const int64_t n = q.dim(0), m = k.dim(0);
  std::vector<int64_t> lo(static_cast<size_t>(n)), hi(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    lo[i] = s.window > 0 ? std::max<int64_t>(0, i - s.window + 1) : 0;
    hi[i] = s.window > 0 ? std::min<int64_t>(m, i + s.window) : m;
  }
  const ops::KeyRunTensors run{k, v, 0, key_valid};
  ops::Attention(ProblemOf(s, k.dim(1)), q, {&run, 1}, lo, hi, out);
}

}  // namespace gemmapod
