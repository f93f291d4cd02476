// Attention driver: tiles of query rows sharing a key/value head, key blocks of 16 positions with
// an online softmax, partial results merged per 512 positions. The microkernels
// (attention_kernels.h) compute a tile's scores and accumulate its values; everything else here
// is bookkeeping in plain C++.
#include "runtime/cpu/attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "runtime/cpu/attention_kernels.h"
#include "runtime/cpu/gemv.h"
#include "runtime/cpu/ops.h"
#include "runtime/error.h"

namespace gemmapod::cpu {
namespace {

using internal::kAttentionKeyBlock;
using internal::kAttentionRowTile;

// Positions per partial softmax. Partials are merged in position order, so the sum a query gets
// does not depend on whether its chunks ran on one thread or several (split-key decode).
constexpr int64_t kKeyChunk = 512;
static_assert(kKeyChunk % kAttentionKeyBlock == 0);

constexpr float kNoScore = -std::numeric_limits<float>::infinity();

struct Microkernels {
  void (*scores)(const float* const*, int, const float* const*, int64_t, float*);
  void (*accumulate)(float*, int, const float*, const float*, const float* const*, int64_t);
};

Microkernels PickMicrokernels(int64_t head_dim) {
  if (head_dim % 16 == 0 && ActiveCpuIsa() >= CpuIsa::kAvx512) {
    return {internal::AttentionScoresAvx512, internal::AttentionAccumulateAvx512};
  }
  return {internal::AttentionScoresPortable, internal::AttentionAccumulatePortable};
}

// Up to 8 query rows reading one key/value head. Rows of a head group are numbered
// row = query * group + (head - kv_head * group), so a tile holds neighbouring queries, whose
// visible ranges overlap; [lo, hi) is the union of its rows' ranges, cut to the held positions.
struct Tile {
  int64_t kv_head = 0;
  int64_t first_row = 0;
  int rows = 0;
  int64_t lo = 0, hi = 0;
};

// The running softmax of a tile's rows: max score, sum of exponentials, weighted values.
struct Softmax {
  float m[kAttentionRowTile];
  float l[kAttentionRowTile];
  float* o = nullptr;  // [rows, head_dim]
  void Reset(int rows, int64_t head_dim) {
    std::fill(m, m + kAttentionRowTile, kNoScore);
    std::fill(l, l + kAttentionRowTile, 0.0f);
    std::fill(o, o + rows * head_dim, 0.0f);
  }
};

class AttentionRun {
 public:
  AttentionRun(const AttentionProblem& p, const float* q, int64_t n, std::vector<KeyRun> runs,
               const int64_t* lo, const int64_t* hi, float* out)
      : p_(p),
        q_(q),
        n_(n),
        runs_(std::move(runs)),
        lo_(lo),
        hi_(hi),
        out_(out),
        group_(p.num_heads / p.num_kv_heads),
        kernels_(PickMicrokernels(p.head_dim)),
        zeros_(static_cast<size_t>(p.head_dim), 0.0f) {}

  void Run();

 private:
  // Computes the softmax of tile t over the positions of chunk c into `s`.
  void Chunk(const Tile& t, int64_t c, Softmax& s, std::vector<float>& scratch) const;
  // Points keys[j], values[j] at the rows of position b + j (head offset kv_offset added), or at
  // zeros where no run holds it (held[j] false). False when the block holds nothing.
  bool Locate(int64_t b, int64_t kv_offset, const float** keys, const float** values,
              bool* held) const;
  // Folds `part` into `acc` (acc = part when acc has seen nothing yet).
  void Merge(const Tile& t, Softmax& acc, const Softmax& part) const;
  void Write(const Tile& t, const Softmax& acc) const;
  int64_t FirstChunk(const Tile& t) const { return t.lo / kKeyChunk; }
  int64_t EndChunk(const Tile& t) const {
    return t.hi <= t.lo ? t.lo / kKeyChunk : (t.hi - 1) / kKeyChunk + 1;
  }
  int64_t QueryOf(int64_t row) const { return row / group_; }
  const float* QueryRow(const Tile& t, int r) const {
    const int64_t row = t.first_row + r;
    const int64_t head = t.kv_head * group_ + row % group_;
    return q_ + (QueryOf(row) * p_.num_heads + head) * p_.head_dim;
  }

  const AttentionProblem& p_;
  const float* q_;
  int64_t n_;
  std::vector<KeyRun> runs_;  // sorted by position
  const int64_t* lo_;
  const int64_t* hi_;
  float* out_;
  int64_t group_;
  Microkernels kernels_;
  std::vector<float> zeros_;  // what hidden positions point at
};

bool AttentionRun::Locate(int64_t b, int64_t kv_offset, const float** keys, const float** values,
                          bool* held) const {
  constexpr int B = kAttentionKeyBlock;
  for (int j = 0; j < B; ++j) {
    keys[j] = values[j] = zeros_.data();
    held[j] = false;
  }
  bool any = false;
  // Runs are sorted and disjoint: the first that ends after b, then on while they start inside.
  auto run = std::partition_point(runs_.begin(), runs_.end(),
                                  [&](const KeyRun& r) { return r.first + r.count <= b; });
  for (; run != runs_.end() && run->first < b + B; ++run) {
    const int64_t from = std::max(b, run->first), to = std::min(b + B, run->first + run->count);
    for (int64_t pos = from; pos < to; ++pos) {
      const int64_t i = pos - run->first;
      if (run->valid != nullptr && run->valid[i] == 0) continue;
      const int j = static_cast<int>(pos - b);
      keys[j] = run->keys + i * p_.kv_row_stride + kv_offset;
      values[j] = run->values + i * p_.kv_row_stride + kv_offset;
      held[j] = any = true;
    }
  }
  return any;
}

void AttentionRun::Chunk(const Tile& t, int64_t c, Softmax& s, std::vector<float>& scratch) const {
  const int64_t hd = p_.head_dim;
  s.Reset(t.rows, hd);
  constexpr int B = kAttentionKeyBlock;
  float* scores = scratch.data();  // [rows, B]
  float* rescale = scores + kAttentionRowTile * B;
  const float* keys[B];
  const float* values[B];
  bool held[B];
  const float* q_rows[kAttentionRowTile];
  int64_t row_lo[kAttentionRowTile], row_hi[kAttentionRowTile];
  for (int r = 0; r < t.rows; ++r) {
    q_rows[r] = QueryRow(t, r);
    row_lo[r] = lo_[QueryOf(t.first_row + r)];
    row_hi[r] = hi_[QueryOf(t.first_row + r)];
  }
  const int64_t begin = std::max(c * kKeyChunk, t.lo) / B * B;
  const int64_t end = std::min((c + 1) * kKeyChunk, t.hi);
  const int64_t kv_offset = t.kv_head * hd;
  // The key and value rows of block b (positions b..b+B-1) and of the block after it, whose rows
  // are prefetched a block ahead: a head's rows are hd floats every kv_row_stride, a pattern the
  // hardware prefetchers do not follow across pages, and in a paged cache the next block's rows
  // may be anywhere.
  const float* next_keys[B];
  const float* next_values[B];
  bool next_held[B];
  bool next_any = Locate(begin, kv_offset, next_keys, next_values, next_held);
  for (int64_t b = begin; b < end; b += B) {
    const bool any = next_any;
    std::copy(next_keys, next_keys + B, keys);
    std::copy(next_values, next_values + B, values);
    std::copy(next_held, next_held + B, held);
    if (b + B < end) {
      next_any = Locate(b + B, kv_offset, next_keys, next_values, next_held);
      for (int j = 0; j < B; ++j) {
        if (!next_held[j]) continue;
        for (int64_t e = 0; e < hd; e += 16) {
          __builtin_prefetch(next_keys[j] + e, 0, 1);
          __builtin_prefetch(next_values[j] + e, 0, 1);
        }
      }
    }
    if (!any) continue;
    kernels_.scores(q_rows, t.rows, keys, hd, scores);
    for (int i = 0; i < t.rows * B; ++i) scores[i] *= p_.scale;
    // Soft-cap before the mask, as the references do.
    if (p_.softcap > 0) SoftCap(scores, p_.softcap, scores, t.rows * B);
    for (int r = 0; r < t.rows; ++r) {
      float* sr = scores + r * B;
      float block_max = kNoScore;
      bool sees[B];
      for (int j = 0; j < B; ++j) {
        sees[j] = held[j] && b + j >= row_lo[r] && b + j < row_hi[r];
        if (sees[j]) block_max = std::max(block_max, sr[j]);
      }
      if (block_max == kNoScore) {  // nothing in this block for this row
        std::fill(sr, sr + B, 0.0f);
        rescale[r] = 1.0f;
        continue;
      }
      const float m = std::max(s.m[r], block_max);
      const float correction = s.m[r] == kNoScore ? 1.0f : std::exp(s.m[r] - m);
      for (int j = 0; j < B; ++j) {
        if (!sees[j]) sr[j] = m;  // exp(0), zeroed below
      }
      ExpShiftedSum(sr, m, B);
      float sum = 0;
      for (int j = 0; j < B; ++j) {
        if (!sees[j]) sr[j] = 0.0f;
        sum += sr[j];
      }
      s.l[r] = s.l[r] * correction + sum;
      s.m[r] = m;
      rescale[r] = correction;
    }
    kernels_.accumulate(s.o, t.rows, rescale, scores, values, hd);
  }
}

void AttentionRun::Merge(const Tile& t, Softmax& acc, const Softmax& part) const {
  const int64_t hd = p_.head_dim;
  for (int r = 0; r < t.rows; ++r) {
    if (part.l[r] == 0.0f) continue;  // the chunk held nothing this row sees
    float* o = acc.o + r * hd;
    const float* po = part.o + r * hd;
    if (acc.l[r] == 0.0f) {
      std::copy(po, po + hd, o);
      acc.m[r] = part.m[r];
      acc.l[r] = part.l[r];
      continue;
    }
    const float m = std::max(acc.m[r], part.m[r]);
    const float a = std::exp(acc.m[r] - m), b = std::exp(part.m[r] - m);
    for (int64_t e = 0; e < hd; ++e) o[e] = o[e] * a + po[e] * b;
    acc.l[r] = acc.l[r] * a + part.l[r] * b;
    acc.m[r] = m;
  }
}

void AttentionRun::Write(const Tile& t, const Softmax& acc) const {
  const int64_t hd = p_.head_dim;
  for (int r = 0; r < t.rows; ++r) {
    const int64_t row = t.first_row + r;
    const int64_t head = t.kv_head * group_ + row % group_;
    float* o = out_ + (QueryOf(row) * p_.num_heads + head) * hd;
    if (acc.l[r] == 0.0f) {  // no visible key: zeros
      std::fill(o, o + hd, 0.0f);
      continue;
    }
    const float inv = 1.0f / acc.l[r];
    for (int64_t e = 0; e < hd; ++e) o[e] = acc.o[r * hd + e] * inv;
  }
}

void AttentionRun::Run() {
  const int64_t hd = p_.head_dim;
  int64_t held_lo = std::numeric_limits<int64_t>::max(), held_hi = 0;
  for (const KeyRun& run : runs_) {
    if (run.count == 0) continue;
    held_lo = std::min(held_lo, run.first);
    held_hi = std::max(held_hi, run.first + run.count);
  }
  std::vector<Tile> tiles;
  const int64_t rows_per_head = n_ * group_;
  double work = 0;  // multiply-adds, to decide whether threads pay
  for (int64_t g = 0; g < p_.num_kv_heads; ++g) {
    for (int64_t row = 0; row < rows_per_head; row += kAttentionRowTile) {
      Tile t;
      t.kv_head = g;
      t.first_row = row;
      t.rows = static_cast<int>(std::min<int64_t>(kAttentionRowTile, rows_per_head - row));
      t.lo = std::numeric_limits<int64_t>::max();
      t.hi = 0;
      for (int r = 0; r < t.rows; ++r) {
        const int64_t i = QueryOf(row + r);
        t.lo = std::min(t.lo, lo_[i]);
        t.hi = std::max(t.hi, hi_[i]);
      }
      t.lo = std::max(t.lo, held_lo);
      t.hi = std::min(t.hi, held_hi);
      if (t.hi < t.lo) t.hi = t.lo;
      work += 2.0 * static_cast<double>(t.rows) * static_cast<double>(t.hi - t.lo) *
              static_cast<double>(hd);
      tiles.push_back(t);
    }
  }
  const int64_t num_tiles = static_cast<int64_t>(tiles.size());
  int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (work < 1e5) threads = 1;  // a thread team costs more than this
  const size_t scratch_floats = kAttentionRowTile * (kAttentionKeyBlock + 1);
  const size_t state_floats = static_cast<size_t>(kAttentionRowTile * hd);

  int64_t max_chunks = 0;
  for (const Tile& t : tiles) max_chunks = std::max(max_chunks, EndChunk(t) - FirstChunk(t));
  if (threads == 1 || num_tiles >= 2 * threads || max_chunks <= 1) {
    // One task per tile, its chunks in order.
#pragma omp parallel num_threads(threads)
    {
      std::vector<float> scratch(scratch_floats), acc_o(state_floats), part_o(state_floats);
      Softmax acc, part;
      acc.o = acc_o.data();
      part.o = part_o.data();
#pragma omp for schedule(dynamic, 1)
      for (int64_t ti = 0; ti < num_tiles; ++ti) {
        const Tile& t = tiles[static_cast<size_t>(ti)];
        acc.Reset(t.rows, hd);
        for (int64_t c = FirstChunk(t); c < EndChunk(t); ++c) {
          Chunk(t, c, part, scratch);
          Merge(t, acc, part);
        }
        Write(t, acc);
      }
    }
    return;
  }
  // Few tiles over long key ranges (decode): one task per (tile, chunk), then the merge in order.
  struct Item {
    int64_t tile, chunk;
  };
  std::vector<Item> items;
  std::vector<int64_t> first_item(static_cast<size_t>(num_tiles) + 1);
  for (int64_t ti = 0; ti < num_tiles; ++ti) {
    first_item[static_cast<size_t>(ti)] = static_cast<int64_t>(items.size());
    const Tile& t = tiles[static_cast<size_t>(ti)];
    for (int64_t c = FirstChunk(t); c < EndChunk(t); ++c) items.push_back({ti, c});
  }
  first_item[static_cast<size_t>(num_tiles)] = static_cast<int64_t>(items.size());
  const int64_t num_items = static_cast<int64_t>(items.size());
  std::vector<float> partial_o(static_cast<size_t>(num_items) * state_floats);
  std::vector<Softmax> partials(static_cast<size_t>(num_items));
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> scratch(scratch_floats);
#pragma omp for schedule(dynamic, 1)
    for (int64_t k = 0; k < num_items; ++k) {
      Softmax& s = partials[static_cast<size_t>(k)];
      s.o = partial_o.data() + static_cast<size_t>(k) * state_floats;
      Chunk(tiles[static_cast<size_t>(items[static_cast<size_t>(k)].tile)],
            items[static_cast<size_t>(k)].chunk, s, scratch);
    }
  }
  std::vector<float> acc_o(state_floats);
  Softmax acc;
  acc.o = acc_o.data();
  for (int64_t ti = 0; ti < num_tiles; ++ti) {
    const Tile& t = tiles[static_cast<size_t>(ti)];
    acc.Reset(t.rows, hd);
    for (int64_t k = first_item[static_cast<size_t>(ti)];
         k < first_item[static_cast<size_t>(ti) + 1]; ++k) {
      Merge(t, acc, partials[static_cast<size_t>(k)]);
    }
    Write(t, acc);
  }
}

}  // namespace

void Attention(const AttentionProblem& p, const float* q, int64_t n, const KeyRun* runs,
               int64_t num_runs, const int64_t* lo, const int64_t* hi, float* out) {
  GEMMAPOD_CHECK(p.num_heads > 0 && p.num_kv_heads > 0 && p.num_heads % p.num_kv_heads == 0,
                 "attention: ", p.num_heads, " query heads do not group over ", p.num_kv_heads,
                 " key/value heads");
  GEMMAPOD_CHECK(p.head_dim > 0, "attention: head_dim ", p.head_dim);
  GEMMAPOD_CHECK(p.kv_row_stride >= p.num_kv_heads * p.head_dim, "attention: key row stride ",
                 p.kv_row_stride, " is shorter than ", p.num_kv_heads, " heads of ", p.head_dim);
  GEMMAPOD_CHECK(n >= 0 && num_runs >= 0, "attention: ", n, " queries, ", num_runs, " key runs");
  GEMMAPOD_CHECK(p.first_kv_head == 0,
                 "attention: the CPU kernel takes runs pointing at the first "
                 "head read (first_kv_head ",
                 p.first_kv_head, ")");
  if (n == 0) return;
  std::vector<KeyRun> sorted(runs, runs + num_runs);
  std::sort(sorted.begin(), sorted.end(),
            [](const KeyRun& a, const KeyRun& b) { return a.first < b.first; });
  for (size_t i = 0; i < sorted.size(); ++i) {
    GEMMAPOD_CHECK(sorted[i].count >= 0 && sorted[i].first >= 0, "attention: key run at position ",
                   sorted[i].first, " of ", sorted[i].count, " rows");
    GEMMAPOD_CHECK(
        sorted[i].count == 0 || (sorted[i].keys != nullptr && sorted[i].values != nullptr),
        "attention: key run at position ", sorted[i].first, " has no data");
    GEMMAPOD_CHECK(i == 0 || sorted[i - 1].first + sorted[i - 1].count <= sorted[i].first,
                   "attention: key runs overlap at position ", sorted[i].first);
  }
  AttentionRun(p, q, n, std::move(sorted), lo, hi, out).Run();
}

}  // namespace gemmapod::cpu
