// Attention microkernels with AVX-512F intrinsics (compiled with AVX-512 flags; called only after
// the CPU check in attention.cc).
#include <immintrin.h>

#include "runtime/cpu/attention_kernels.h"

namespace gemmapod::cpu::internal {
namespace {

// Lane j of the result is the sum of the 16 lanes of a[j]: a transpose-and-add tree (45 shuffles
// and adds for 16 dot products, against ~7 per dot for a reduction each).
__m512 SumEachOf16(__m512 a[16]) {
  __m512 pairs[8];
  for (int i = 0; i < 8; ++i) {
    // Per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] of a = a[2i], b = a[2i + 1].
    pairs[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]),
                             _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
  }
  __m512 quads[4];
  for (int i = 0; i < 4; ++i) {
    // Per 128-bit lane: the four keys 4i..4i+3, each a partial sum over that lane's features.
    const __m512d x = _mm512_castps_pd(pairs[2 * i]), y = _mm512_castps_pd(pairs[2 * i + 1]);
    quads[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
  }
  __m512 octs[2];
  for (int i = 0; i < 2; ++i) {
    // 128-bit lanes: [keys 8i..8i+3 (half), same (other half), keys 8i+4.. (half), same].
    octs[i] = _mm512_add_ps(_mm512_shuffle_f32x4(quads[2 * i], quads[2 * i + 1], 0x88),
                            _mm512_shuffle_f32x4(quads[2 * i], quads[2 * i + 1], 0xDD));
  }
  return _mm512_add_ps(_mm512_shuffle_f32x4(octs[0], octs[1], 0x88),
                       _mm512_shuffle_f32x4(octs[0], octs[1], 0xDD));
}

// scores[r * 16 + k] = q_rows[r] . keys[k] for r < kRows, k < kKeys (kRows * kKeys = 16): one
// accumulator per pair, summed across lanes together at the end.
template <int kRows, int kKeys>
void ScoreTile(const float* const* q_rows, const float* const* keys, int64_t head_dim,
               float* scores) {
  static_assert(kRows * kKeys == 16);
  __m512 acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t e = 0; e < head_dim; e += 16) {
    __m512 k[kKeys];
    for (int j = 0; j < kKeys; ++j) k[j] = _mm512_loadu_ps(keys[j] + e);
    for (int r = 0; r < kRows; ++r) {
      const __m512 q = _mm512_loadu_ps(q_rows[r] + e);
      for (int j = 0; j < kKeys; ++j)
        acc[r * kKeys + j] = _mm512_fmadd_ps(q, k[j], acc[r * kKeys + j]);
    }
  }
  alignas(64) float sums[16];
  _mm512_store_ps(sums, SumEachOf16(acc));
  for (int r = 0; r < kRows; ++r) {
    for (int j = 0; j < kKeys; ++j) scores[r * kAttentionKeyBlock + j] = sums[r * kKeys + j];
  }
}

template <int kRows>
void AccumulateRows(float* acc, const float* rescale, const float* p, const float* const* values,
                    int64_t head_dim) {
  for (int64_t e = 0; e < head_dim; e += 32) {
    const bool two = e + 32 <= head_dim;  // head_dim is a multiple of 16: 32 or 16 features
    __m512 o0[kRows], o1[kRows];
    for (int r = 0; r < kRows; ++r) {
      const __m512 c = _mm512_set1_ps(rescale[r]);
      o0[r] = _mm512_mul_ps(_mm512_loadu_ps(acc + r * head_dim + e), c);
      o1[r] = two ? _mm512_mul_ps(_mm512_loadu_ps(acc + r * head_dim + e + 16), c)
                  : _mm512_setzero_ps();
    }
    for (int j = 0; j < kAttentionKeyBlock; ++j) {
      const __m512 v0 = _mm512_loadu_ps(values[j] + e);
      const __m512 v1 = two ? _mm512_loadu_ps(values[j] + e + 16) : _mm512_setzero_ps();
      for (int r = 0; r < kRows; ++r) {
        const __m512 w = _mm512_set1_ps(p[r * kAttentionKeyBlock + j]);
        o0[r] = _mm512_fmadd_ps(w, v0, o0[r]);
        o1[r] = _mm512_fmadd_ps(w, v1, o1[r]);
      }
    }
    for (int r = 0; r < kRows; ++r) {
      _mm512_storeu_ps(acc + r * head_dim + e, o0[r]);
      if (two) _mm512_storeu_ps(acc + r * head_dim + e + 16, o1[r]);
    }
  }
}

}  // namespace

void AttentionScoresAvx512(const float* const* q_rows, int rows, const float* const* keys,
                           int64_t head_dim, float* scores) {
  int r = 0;
  // Four rows against four keys at a time: eight loads feed sixteen FMAs.
  for (; r + 4 <= rows; r += 4) {
    for (int k = 0; k < kAttentionKeyBlock; k += 4)
      ScoreTile<4, 4>(q_rows + r, keys + k, head_dim, scores + r * kAttentionKeyBlock + k);
  }
  for (; r + 2 <= rows; r += 2) {
    for (int k = 0; k < kAttentionKeyBlock; k += 8)
      ScoreTile<2, 8>(q_rows + r, keys + k, head_dim, scores + r * kAttentionKeyBlock + k);
  }
  for (; r < rows; ++r)
    ScoreTile<1, 16>(q_rows + r, keys, head_dim, scores + r * kAttentionKeyBlock);
}

void AttentionAccumulateAvx512(float* acc, int rows, const float* rescale, const float* p,
                               const float* const* values, int64_t head_dim) {
  switch (rows) {
    case 1:
      return AccumulateRows<1>(acc, rescale, p, values, head_dim);
    case 2:
      return AccumulateRows<2>(acc, rescale, p, values, head_dim);
    case 3:
      return AccumulateRows<3>(acc, rescale, p, values, head_dim);
    case 4:
      return AccumulateRows<4>(acc, rescale, p, values, head_dim);
    case 5:
      return AccumulateRows<5>(acc, rescale, p, values, head_dim);
    case 6:
      return AccumulateRows<6>(acc, rescale, p, values, head_dim);
    case 7:
      return AccumulateRows<7>(acc, rescale, p, values, head_dim);
    default:
      return AccumulateRows<8>(acc, rescale, p, values, head_dim);
  }
}

}  // namespace gemmapod::cpu::internal
