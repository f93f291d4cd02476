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
  const int64_t n = q.dim(0), B = cache.block_tokens;
  const int64_t from = s.window > 0 ? std::max<int64_t>(0, start - s.window + 1) : 0;
  // In a fixed slot's sliding ring, the oldest position a query of this chunk may need must not
  // have been overwritten yet.
  GEMMAPOD_CHECK(cache.ring_tokens == 0 || (s.window > 0 && start - from <= cache.ring_tokens),
                 "attention: a ring of ", cache.ring_tokens, " rows cannot hold the keys of ",
                 s.window > 0 ? "a window of " : "a global layer at position ",
                 s.window > 0 ? s.window : start);
  auto row_of = [&](int64_t p) {
    const int64_t b = p / B;
    GEMMAPOD_CHECK(b < static_cast<int64_t>(cache.blocks.size()) && cache.blocks[b] >= 0,
                   "attention: no KV block holds position ", p);
    return static_cast<int64_t>(cache.blocks[b]) * B + p % B;
  };
  std::vector<int64_t> lo(static_cast<size_t>(n)), hi(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t p = start + i;
    lo[i] = s.window > 0 ? std::max<int64_t>(0, p - s.window + 1) : 0;
    hi[i] = p + 1;
  }
  // The past positions, one run per stretch of consecutive rows (a fixed slot's blocks are
  // consecutive, a pool's wherever the scheduler put them), then the chunk's own keys.
  std::vector<ops::KeyRunTensors> runs;
  int64_t run_row = -1, run_first = 0, run_len = 0;
  auto close = [&] {
    if (run_len > 0) {
      runs.push_back({cache.keys.Slice(run_row, run_row + run_len),
                      cache.values.Slice(run_row, run_row + run_len), run_first});
    }
  };
  for (int64_t p = from; p < start;) {
    const int64_t row = row_of(p), len = std::min(start - p, B - p % B);
    if (run_len > 0 && run_row + run_len == row) {
      run_len += len;
    } else {
      close();
      run_row = row;
      run_first = p;
      run_len = len;
    }
    p += len;
  }
  close();
  runs.push_back({k_new, v_new, start});
  ops::Attention(ProblemOf(s, k_new.dim(1)), q, runs, lo, hi, out);

  // Store the new keys and values; a chunk longer than a ring keeps only its tail.
  std::vector<int64_t> rows(static_cast<size_t>(n), -1);
  const int64_t keep = cache.ring_tokens > 0 ? std::max<int64_t>(0, n - cache.ring_tokens) : 0;
  for (int64_t i = keep; i < n; ++i) rows[i] = row_of(start + i);
  Tensor keys = cache.keys, values = cache.values;
  ops::ScatterRows(k_new, rows, keys);
  ops::ScatterRows(v_new, rows, values);
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
