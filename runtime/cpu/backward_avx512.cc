// AVX-512 kernels of backward_kernels.h. Built with AVX-512 flags and -ffp-contract=off
// (CMakeLists.txt): every fused multiply-add here is written out, so the AdamW update, which
// must give the portable loop's bits, keeps its separate multiplies and adds.
#include <immintrin.h>

#include "runtime/cpu/backward_kernels.h"

namespace gemmapod::cpu::internal {
namespace {

constexpr int kLanes = 16;

__mmask16 TailMask(int64_t left) {
  return left >= kLanes ? static_cast<__mmask16>(0xFFFF)
                        : static_cast<__mmask16>((1u << static_cast<unsigned>(left)) - 1u);
}

// exp(x) = 2^n * exp(r) with n = round(x / ln 2) and |r| <= ln 2 / 2, exp(r) from Cephes'
// degree-6 polynomial for single precision (within 2 ulp over the whole range). x is clamped
// to [-104, 88.37]: below, the result is 0 in f32 anyway (scalef rounds 2^n * exp(r) to 0 or
// a denormal); above, the true exp(x) overflows. The clamps keep NaN (min/max return their
// second operand when either is NaN), so a NaN logit stays NaN.
inline __m512 Exp(__m512 x) {
  x = _mm512_min_ps(_mm512_set1_ps(88.37626f), x);
  x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);  // ln 2 in two parts
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(y, n);
}

// Adds the 16 lanes of f, widened to double, to the two accumulators (low and high halves).
inline void AddWidened(__m512 f, __m512d& lo, __m512d& hi) {
  lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(f)));
  hi = _mm512_add_pd(
      hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(f), 1))));
}

}  // namespace

double SumExpShiftedAvx512(const float* z, int64_t n, float shift) {
  const __m512 s = _mm512_set1_ps(shift);
  __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
  for (int64_t i = 0; i < n; i += kLanes) {
    const __mmask16 mask = TailMask(n - i);
    const __m512 x = _mm512_maskz_loadu_ps(mask, z + i);
    AddWidened(_mm512_maskz_mov_ps(mask, Exp(_mm512_sub_ps(x, s))), lo, hi);
  }
  return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
}

void ScaledExpShiftedAvx512(const float* z, int64_t n, float shift, float scale, float* out) {
  const __m512 s = _mm512_set1_ps(shift), c = _mm512_set1_ps(scale);
  for (int64_t i = 0; i < n; i += kLanes) {
    const __mmask16 mask = TailMask(n - i);
    const __m512 x = _mm512_maskz_loadu_ps(mask, z + i);
    _mm512_mask_storeu_ps(out + i, mask, _mm512_mul_ps(Exp(_mm512_sub_ps(x, s)), c));
  }
}

void GeluTanhBackwardAvx512(const float* x, const float* dy, float* dx, int64_t n) {
  const __m512 k = _mm512_set1_ps(0.7978845608028654f);  // sqrt(2 / pi)
  const __m512 cubic = _mm512_set1_ps(0.044715f);
  const __m512 three_cubic = _mm512_set1_ps(3.0f * 0.044715f);
  const __m512 one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f);
  const __m512 half = _mm512_set1_ps(0.5f);
  for (int64_t i = 0; i < n; i += kLanes) {
    const __mmask16 mask = TailMask(n - i);
    const __m512 v = _mm512_maskz_loadu_ps(mask, x + i);
    const __m512 g = _mm512_maskz_loadu_ps(mask, dy + i);
    const __m512 v2 = _mm512_mul_ps(v, v);
    const __m512 u = _mm512_mul_ps(k, _mm512_fmadd_ps(_mm512_mul_ps(cubic, v2), v, v));
    // tanh(u) = 1 - 2 / (exp(2u) + 1): exact at both ends (exp saturates to 0 or a huge value).
    const __m512 e = Exp(_mm512_mul_ps(two, u));
    const __m512 t = _mm512_sub_ps(one, _mm512_div_ps(two, _mm512_add_ps(e, one)));
    const __m512 slope = _mm512_mul_ps(k, _mm512_fmadd_ps(three_cubic, v2, one));
    const __m512 left = _mm512_mul_ps(half, _mm512_add_ps(one, t));
    const __m512 right =
        _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(half, v), _mm512_fnmadd_ps(t, t, one)), slope);
    _mm512_mask_storeu_ps(dx + i, mask, _mm512_mul_ps(g, _mm512_add_ps(left, right)));
  }
}

double SumOfSquaresAvx512(const float* x, int64_t n) {
  __m512d acc[4] = {_mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd(),
                    _mm512_setzero_pd()};
  int64_t i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    for (int half = 0; half < 2; ++half) {
      const __m512 f = _mm512_loadu_ps(x + i + half * kLanes);
      const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(f));
      const __m512d hi =
          _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(f), 1)));
      acc[2 * half] = _mm512_fmadd_pd(lo, lo, acc[2 * half]);
      acc[2 * half + 1] = _mm512_fmadd_pd(hi, hi, acc[2 * half + 1]);
    }
  }
  for (; i < n; i += kLanes) {
    const __m512 f = _mm512_maskz_loadu_ps(TailMask(n - i), x + i);
    const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(f));
    const __m512d hi =
        _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(f), 1)));
    acc[0] = _mm512_fmadd_pd(lo, lo, acc[0]);
    acc[1] = _mm512_fmadd_pd(hi, hi, acc[1]);
  }
  return _mm512_reduce_add_pd(
      _mm512_add_pd(_mm512_add_pd(acc[0], acc[1]), _mm512_add_pd(acc[2], acc[3])));
}

void AdamWUpdateAvx512(float* master, float* m, float* v, const float* grad, int64_t n,
                       float step_size, float inv_sqrt_correction2, float decay, float beta1,
                       float beta2, float eps, float grad_scale) {
  const __m512 b1 = _mm512_set1_ps(beta1), b2 = _mm512_set1_ps(beta2);
  const __m512 one_minus_b1 = _mm512_set1_ps(1.0f - beta1);
  const __m512 one_minus_b2 = _mm512_set1_ps(1.0f - beta2);
  const __m512 gs = _mm512_set1_ps(grad_scale), d = _mm512_set1_ps(decay);
  const __m512 step = _mm512_set1_ps(step_size), isc2 = _mm512_set1_ps(inv_sqrt_correction2);
  const __m512 e = _mm512_set1_ps(eps);
  for (int64_t i = 0; i < n; i += kLanes) {
    const __mmask16 mask = TailMask(n - i);
    const __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, grad + i), gs);
    const __m512 w = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, master + i), d);
    const __m512 m1 = _mm512_add_ps(_mm512_mul_ps(b1, _mm512_maskz_loadu_ps(mask, m + i)),
                                    _mm512_mul_ps(one_minus_b1, g));
    const __m512 v1 = _mm512_add_ps(_mm512_mul_ps(b2, _mm512_maskz_loadu_ps(mask, v + i)),
                                    _mm512_mul_ps(_mm512_mul_ps(one_minus_b2, g), g));
    const __m512 denom = _mm512_add_ps(_mm512_mul_ps(_mm512_sqrt_ps(v1), isc2), e);
    _mm512_mask_storeu_ps(master + i, mask,
                          _mm512_sub_ps(w, _mm512_div_ps(_mm512_mul_ps(step, m1), denom)));
    _mm512_mask_storeu_ps(m + i, mask, m1);
    _mm512_mask_storeu_ps(v + i, mask, v1);
  }
}

double HeadDotAvx512(const float* a, const float* b, int64_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t e = 0;
  for (; e + 2 * kLanes <= n; e += 2 * kLanes) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + e), _mm512_loadu_ps(b + e), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + e + kLanes), _mm512_loadu_ps(b + e + kLanes), acc1);
  }
  for (; e < n; e += kLanes) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + e), _mm512_loadu_ps(b + e), acc0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

void HeadAxpyAvx512(float alpha, const float* x, float* y, int64_t n) {
  const __m512 a = _mm512_set1_ps(alpha);
  for (int64_t e = 0; e < n; e += kLanes) {
    _mm512_storeu_ps(y + e, _mm512_fmadd_ps(a, _mm512_loadu_ps(x + e), _mm512_loadu_ps(y + e)));
  }
}

}  // namespace gemmapod::cpu::internal
