// AVX-512 kernels for int8 weights with f32 activations: 16 weights at a time are sign-extended
// to int32 (vpmovsxbd, folded into the load), converted to f32 (vcvtdq2ps, exact for int8) and
// accumulated with f32 FMAs, which round once per product-and-add: the activations keep all
// their bits. Compiled with -mavx512f/bw/vl/dq; only called after a CPU check.
#include <immintrin.h>

#include <cstdint>

#include "runtime/cpu/int8_kernels.h"

namespace gemmapod::cpu::internal {
namespace {

// The R weight rows of one pass are one contiguous block of R * K bytes, and the next pass
// reads the block right after it. While a pass consumes R lines per 64 columns, it prefetches
// the next block front to back at the same rate, so the next pass finds all its rows in cache.
// Prefetching each row 512-4096 bytes ahead instead (what gemv_avx512.cc does for the twice as
// long bf16 rows), or not at all, streamed gemma2-2b's 9216 x 2304 from memory at 19-23 GB/s on
// one thread; this reaches 33 GB/s. Short int8 rows leave a per-row prefetch little distance to
// work with (K = 640 is 10 lines), and each new pass started with R cold rows.
constexpr int kLine = 64;

// Weight rows per pass for M activation rows: M * R independent accumulators hide the FMA
// latency while M * R + R + 1 stays within the 32 zmm registers.
constexpr int RowsPerPass(int m) { return m == 1 ? 8 : m == 2 ? 6 : m <= 4 ? 4 : 3; }

inline __m512 WidenToF32(const int8_t* p) {
  return _mm512_cvtepi32_ps(
      _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
// Reads only the `mask` lanes (nothing past the end of the row); the others are zero.
inline __m512 WidenToF32(const int8_t* p, __mmask16 mask) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, p)));
}

// 16 weights of each of R rows at column kk against M activation rows.
template <int M, int R>
inline void Step(const float* x, int64_t ldx, const int8_t* const* wr, int64_t kk,
                 __m512 (&acc)[M][R]) {
  __m512 wv[R];
  for (int r = 0; r < R; ++r) wv[r] = WidenToF32(wr[r] + kk);
  for (int m = 0; m < M; ++m) {
    __m512 xv = _mm512_loadu_ps(x + m * ldx + kk);
    // Keeps xv in a register. Left alone, GCC 12 folds this load into each of the R FMAs as a
    // memory operand (to spare a register), which at M = 8 meant 27 loads per 24 FMAs and half
    // the FLOP rate of M = 4 (109 against 238 GFLOP/s on L2-resident weights; 216 with this).
    __asm__("" : "+v"(xv));
    for (int r = 0; r < R; ++r) acc[m][r] = _mm512_fmadd_ps(xv, wv[r], acc[m][r]);
  }
}

// M activation rows against R weight rows starting at n; prefetches the first `prefetch_bytes`
// bytes from `next_block` (the next pass's rows, always inside the caller's column range).
template <int M, int R>
inline void Pass(const float* x, int64_t ldx, int64_t k, const int8_t* w, const float* scale,
                 int64_t n, float* y, int64_t ldy, const int8_t* next_block,
                 int64_t prefetch_bytes) {
  __m512 acc[M][R];
  for (int m = 0; m < M; ++m)
    for (int r = 0; r < R; ++r) acc[m][r] = _mm512_setzero_ps();
  const int8_t* wr[R];
  for (int r = 0; r < R; ++r) wr[r] = w + (n + r) * k;

  const char* next = reinterpret_cast<const char*>(next_block);
  int64_t kk = 0;
  for (; kk + kLine <= k; kk += kLine) {
    for (int r = 0; r < R; ++r) {
      const int64_t offset = kk * R + r * kLine;
      if (offset < prefetch_bytes) _mm_prefetch(next + offset, _MM_HINT_T0);
    }
    for (int s = 0; s < kLine; s += 16) Step<M, R>(x, ldx, wr, kk + s, acc);
  }
  // The loop above prefetched R lines per full line of K; the block's last lines remain.
  for (int64_t offset = kk * R; offset < prefetch_bytes; offset += kLine) {
    _mm_prefetch(next + offset, _MM_HINT_T0);
  }
  for (; kk + 16 <= k; kk += 16) Step<M, R>(x, ldx, wr, kk, acc);
  if (kk < k) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (k - kk)) - 1u);
    __m512 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = WidenToF32(wr[r] + kk, mask);
    for (int m = 0; m < M; ++m) {
      const __m512 xv = _mm512_maskz_loadu_ps(mask, x + m * ldx + kk);
      for (int r = 0; r < R; ++r) acc[m][r] = _mm512_fmadd_ps(xv, wv[r], acc[m][r]);
    }
  }
  for (int m = 0; m < M; ++m)
    for (int r = 0; r < R; ++r) y[m * ldy + n + r] = scale[n + r] * _mm512_reduce_add_ps(acc[m][r]);
}

template <int M>
void Rows(const float* x, int64_t ldx, int64_t k, const int8_t* w, const float* scale,
          int64_t n_begin, int64_t n_end, float* y, int64_t ldy) {
  constexpr int R = RowsPerPass(M);
  int64_t n = n_begin;
  for (; n + R <= n_end; n += R) {
    // No std::min here: see the top of gemv_kernels.h.
    const int64_t next_rows = n_end - (n + R) < R ? n_end - (n + R) : R;
    Pass<M, R>(x, ldx, k, w, scale, n, y, ldy, w + (n + R) * k, next_rows * k);
  }
  // Fewer than R rows remain: the last full pass prefetched them.
  for (; n < n_end; ++n) Pass<M, 1>(x, ldx, k, w, scale, n, y, ldy, nullptr, 0);
}

}  // namespace

void GemvInt8Avx512(const float* x, int64_t ldx, int rows, int64_t k, const int8_t* w,
                    const float* scale, int64_t n_begin, int64_t n_end, float* y, int64_t ldy) {
  switch (rows) {
    case 1:
      return Rows<1>(x, ldx, k, w, scale, n_begin, n_end, y, ldy);
    case 2:
      return Rows<2>(x, ldx, k, w, scale, n_begin, n_end, y, ldy);
    case 3:
      return Rows<3>(x, ldx, k, w, scale, n_begin, n_end, y, ldy);
    case 4:
      return Rows<4>(x, ldx, k, w, scale, n_begin, n_end, y, ldy);
    case 5:
      return Rows<5>(x, ldx, k, w, scale, n_begin, n_end, y, ldy);
    case 6:
      return Rows<6>(x, ldx, k, w, scale, n_begin, n_end, y, ldy);
    case 7:
      return Rows<7>(x, ldx, k, w, scale, n_begin, n_end, y, ldy);
    default:
      return Rows<8>(x, ldx, k, w, scale, n_begin, n_end, y, ldy);
  }
}

void WidenInt8Avx512(const int8_t* q, int64_t count, float* out) {
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) _mm512_storeu_ps(out + i, WidenToF32(q + i));
  if (i < count) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (count - i)) - 1u);
    _mm512_mask_storeu_ps(out + i, mask, WidenToF32(q + i, mask));
  }
}

}  // namespace gemmapod::cpu::internal
