// AVX512-BF16 GEMV kernel: vdpbf16ps multiplies 32 bf16 pairs per instruction into 16 f32
// sums. The activations arrive pre-split into bf16 halves (x = hi + lo, see gemv.cc); using both
// halves keeps the product error near 2^-16 relative, using only hi is the fast bf16 mode.
// Compiled with -mavx512bf16; only called after a CPU check.
#include <immintrin.h>

#include <cstdint>

#include "runtime/cpu/gemv_kernels.h"

namespace gemmapod::cpu::internal {
namespace {

// Software prefetch: with 3-8 rows streamed at once the hardware prefetchers alone left 10-20 %
// of one core's bandwidth unused (measured, docs/performance.md), so each pass prefetches the
// next pass's rows (see Pass).

// M * R accumulators plus R weight registers and 2 activation registers fit in 32 zmm.
constexpr int RowsPerPass(int m) { return m == 1 ? 8 : m == 2 ? 6 : m <= 4 ? 4 : m <= 6 ? 4 : 3; }

inline __m512bh AsBh(__m512i v) { return reinterpret_cast<__m512bh&>(v); }

template <int M, int R, bool kWithLo>
inline void Pass(const uint16_t* x_hi, const uint16_t* x_lo, int64_t ldx, int64_t k,
                 const uint16_t* w, int64_t n, float* y, int64_t ldy) {
  // With few rows, the low halves get their own accumulators: two dependent vdpbf16ps per step
  // on one accumulator would make the latency chain, not memory, the limit.
  constexpr bool kSplitAcc = kWithLo && 2 * M * R <= 24;
  constexpr int kLoRows = kSplitAcc ? M : 1;
  __m512 acc[M][R], acc_lo[kLoRows][R];
  for (int m = 0; m < M; ++m)
    for (int r = 0; r < R; ++r) acc[m][r] = _mm512_setzero_ps();
  for (int m = 0; m < kLoRows; ++m)
    for (int r = 0; r < R; ++r) acc_lo[m][r] = _mm512_setzero_ps();
  const uint16_t* wr[R];
  for (int r = 0; r < R; ++r) wr[r] = w + (n + r) * k;

  auto step = [&](const __m512i* wv, int64_t kk) {
    for (int m = 0; m < M; ++m) {
      const __m512i hi = _mm512_loadu_si512(x_hi + m * ldx + kk);
      for (int r = 0; r < R; ++r) acc[m][r] = _mm512_dpbf16_ps(acc[m][r], AsBh(hi), AsBh(wv[r]));
      if constexpr (kWithLo) {
        const __m512i lo = _mm512_loadu_si512(x_lo + m * ldx + kk);
        if constexpr (kSplitAcc) {
          for (int r = 0; r < R; ++r)
            acc_lo[m][r] = _mm512_dpbf16_ps(acc_lo[m][r], AsBh(lo), AsBh(wv[r]));
        } else {
          for (int r = 0; r < R; ++r)
            acc[m][r] = _mm512_dpbf16_ps(acc[m][r], AsBh(lo), AsBh(wv[r]));
        }
      }
    }
  };
  // The R rows after these are contiguous: while this pass reads its rows, the next pass's block
  // is prefetched front to back, R lines per step, all of it by the pass's end. (Prefetching each
  // row a fixed distance ahead missed every row's first kilobyte, nearly all of a short row: the
  // 262144 x 640 tied head streamed at half the bandwidth of long rows.)
  const char* next = reinterpret_cast<const char*>(w + (n + R) * k);
  int64_t kk = 0;
  for (; kk + 32 <= k; kk += 32) {
    __m512i wv[R];
    for (int r = 0; r < R; ++r) wv[r] = _mm512_loadu_si512(wr[r] + kk);
    for (int r = 0; r < R; ++r) _mm_prefetch(next + kk * 2 * R + r * 64, _MM_HINT_T0);
    step(wv, kk);
  }
  if (kk < k) {
    // The weight row ends here: masked loads zero the missing lanes (and never fault); the
    // activation rows are zero-padded to ldx, so full loads are safe.
    const __mmask32 mask = static_cast<__mmask32>((uint64_t{1} << (k - kk)) - 1u);
    __m512i wv[R];
    for (int r = 0; r < R; ++r) wv[r] = _mm512_maskz_loadu_epi16(mask, wr[r] + kk);
    step(wv, kk);
  }
  if constexpr (kSplitAcc) {
    for (int m = 0; m < M; ++m)
      for (int r = 0; r < R; ++r) acc[m][r] = _mm512_add_ps(acc[m][r], acc_lo[m][r]);
  }
  for (int m = 0; m < M; ++m)
    for (int r = 0; r < R; ++r) y[m * ldy + n + r] = _mm512_reduce_add_ps(acc[m][r]);
}

template <int M, bool kWithLo>
void Rows(const uint16_t* x_hi, const uint16_t* x_lo, int64_t ldx, int64_t k, const uint16_t* w,
          int64_t n_begin, int64_t n_end, float* y, int64_t ldy) {
  constexpr int R = RowsPerPass(M);
  int64_t n = n_begin;
  for (; n + R <= n_end; n += R) Pass<M, R, kWithLo>(x_hi, x_lo, ldx, k, w, n, y, ldy);
  for (; n < n_end; ++n) Pass<M, 1, kWithLo>(x_hi, x_lo, ldx, k, w, n, y, ldy);
}

template <bool kWithLo>
void Dispatch(const uint16_t* x_hi, const uint16_t* x_lo, int64_t ldx, int rows, int64_t k,
              const uint16_t* w, int64_t n_begin, int64_t n_end, float* y, int64_t ldy) {
  switch (rows) {
    case 1:
      return Rows<1, kWithLo>(x_hi, x_lo, ldx, k, w, n_begin, n_end, y, ldy);
    case 2:
      return Rows<2, kWithLo>(x_hi, x_lo, ldx, k, w, n_begin, n_end, y, ldy);
    case 3:
      return Rows<3, kWithLo>(x_hi, x_lo, ldx, k, w, n_begin, n_end, y, ldy);
    case 4:
      return Rows<4, kWithLo>(x_hi, x_lo, ldx, k, w, n_begin, n_end, y, ldy);
    case 5:
      return Rows<5, kWithLo>(x_hi, x_lo, ldx, k, w, n_begin, n_end, y, ldy);
    case 6:
      return Rows<6, kWithLo>(x_hi, x_lo, ldx, k, w, n_begin, n_end, y, ldy);
    case 7:
      return Rows<7, kWithLo>(x_hi, x_lo, ldx, k, w, n_begin, n_end, y, ldy);
    default:
      return Rows<8, kWithLo>(x_hi, x_lo, ldx, k, w, n_begin, n_end, y, ldy);
  }
}

}  // namespace

void GemvBF16Avx512Bf16(const uint16_t* x_hi, const uint16_t* x_lo, int64_t ldx, int rows,
                        int64_t k, const uint16_t* w, int64_t n_begin, int64_t n_end, float* y,
                        int64_t ldy) {
  if (x_lo != nullptr) {
    Dispatch<true>(x_hi, x_lo, ldx, rows, k, w, n_begin, n_end, y, ldy);
  } else {
    Dispatch<false>(x_hi, x_lo, ldx, rows, k, w, n_begin, n_end, y, ldy);
  }
}

}  // namespace gemmapod::cpu::internal
