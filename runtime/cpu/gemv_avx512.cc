// AVX-512F GEMV kernels: f32 weights, and bf16 weights widened to f32 (a 16-bit shift) so the
// products are exact f32 FMAs. Compiled with -mavx512f/bw/vl; only called after a CPU check.
#include <immintrin.h>

#include <cstdint>

#include "runtime/cpu/gemv_kernels.h"

namespace gemmapod::cpu::internal {
namespace {

// Software prefetch: with 3-8 rows streamed at once the hardware prefetchers alone left 10-20 %
// of one core's bandwidth unused (measured, docs/performance.md), so each pass prefetches the
// next pass's rows (see Pass).

// Weight rows per pass for a given number of activation rows: enough independent accumulators
// (M * R) to hide the FMA latency, while M * R + R + 1 stays within the 32 zmm registers.
constexpr int RowsPerPass(int m) { return m == 1 ? 8 : m == 2 ? 6 : m <= 4 ? 4 : m <= 6 ? 4 : 3; }

inline __m512 LoadWeightsF32(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 LoadWeightsF32(const float* p, __mmask16 mask) {
  return _mm512_maskz_loadu_ps(mask, p);
}

// bf16 -> f32 is exact: the bf16 bits are the high half of the f32.
inline __m512 LoadWeightsF32(const uint16_t* p) {
  const __m512i wide =
      _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}
inline __m512 LoadWeightsF32(const uint16_t* p, __mmask16 mask) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

// M activation rows against R weight rows starting at n.
template <int M, int R, typename W>
inline void Pass(const float* x, int64_t ldx, int64_t k, const W* w, int64_t n, float* y,
                 int64_t ldy) {
  __m512 acc[M][R];
  for (int m = 0; m < M; ++m)
    for (int r = 0; r < R; ++r) acc[m][r] = _mm512_setzero_ps();
  const W* wr[R];
  for (int r = 0; r < R; ++r) wr[r] = w + (n + r) * k;

  // The next pass's R rows are contiguous: prefetch them front to back while this pass reads its
  // own, all of them by its end (a fixed distance ahead in each row missed every row's start).
  const char* next = reinterpret_cast<const char*>(w + (n + R) * k);
  constexpr int kLinesPerStep = static_cast<int>((R * 16 * sizeof(W) + 63) / 64);
  int64_t kk = 0;
  for (; kk + 16 <= k; kk += 16) {
    __m512 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = LoadWeightsF32(wr[r] + kk);
    for (int j = 0; j < kLinesPerStep; ++j) {
      _mm_prefetch(next + kk * static_cast<int64_t>(sizeof(W)) * R + j * 64, _MM_HINT_T0);
    }
    for (int m = 0; m < M; ++m) {
      const __m512 xv = _mm512_loadu_ps(x + m * ldx + kk);
      for (int r = 0; r < R; ++r) acc[m][r] = _mm512_fmadd_ps(xv, wv[r], acc[m][r]);
    }
  }
  if (kk < k) {
    // Masked loads read nothing past the row end and zero the unused lanes.
    const __mmask16 mask = static_cast<__mmask16>((1u << (k - kk)) - 1u);
    __m512 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = LoadWeightsF32(wr[r] + kk, mask);
    for (int m = 0; m < M; ++m) {
      const __m512 xv = _mm512_maskz_loadu_ps(mask, x + m * ldx + kk);
      for (int r = 0; r < R; ++r) acc[m][r] = _mm512_fmadd_ps(xv, wv[r], acc[m][r]);
    }
  }
  for (int m = 0; m < M; ++m)
    for (int r = 0; r < R; ++r) y[m * ldy + n + r] = _mm512_reduce_add_ps(acc[m][r]);
}

template <int M, typename W>
void Rows(const float* x, int64_t ldx, int64_t k, const W* w, int64_t n_begin, int64_t n_end,
          float* y, int64_t ldy) {
  constexpr int R = RowsPerPass(M);
  int64_t n = n_begin;
  for (; n + R <= n_end; n += R) Pass<M, R>(x, ldx, k, w, n, y, ldy);
  for (; n < n_end; ++n) Pass<M, 1>(x, ldx, k, w, n, y, ldy);
}

template <typename W>
void Dispatch(const float* x, int64_t ldx, int rows, int64_t k, const W* w, int64_t n_begin,
              int64_t n_end, float* y, int64_t ldy) {
  switch (rows) {
    case 1:
      return Rows<1>(x, ldx, k, w, n_begin, n_end, y, ldy);
    case 2:
      return Rows<2>(x, ldx, k, w, n_begin, n_end, y, ldy);
    case 3:
      return Rows<3>(x, ldx, k, w, n_begin, n_end, y, ldy);
    case 4:
      return Rows<4>(x, ldx, k, w, n_begin, n_end, y, ldy);
    case 5:
      return Rows<5>(x, ldx, k, w, n_begin, n_end, y, ldy);
    case 6:
      return Rows<6>(x, ldx, k, w, n_begin, n_end, y, ldy);
    case 7:
      return Rows<7>(x, ldx, k, w, n_begin, n_end, y, ldy);
    default:
      return Rows<8>(x, ldx, k, w, n_begin, n_end, y, ldy);
  }
}

}  // namespace

void GemvF32Avx512(const float* x, int64_t ldx, int rows, int64_t k, const float* w,
                   int64_t n_begin, int64_t n_end, float* y, int64_t ldy) {
  Dispatch(x, ldx, rows, k, w, n_begin, n_end, y, ldy);
}

void GemvBF16Avx512(const float* x, int64_t ldx, int rows, int64_t k, const uint16_t* w,
                    int64_t n_begin, int64_t n_end, float* y, int64_t ldy) {
  Dispatch(x, ldx, rows, k, w, n_begin, n_end, y, ldy);
}

}  // namespace gemmapod::cpu::internal
