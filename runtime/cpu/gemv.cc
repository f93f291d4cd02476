// GEMV dispatch: picks the kernel family, splits activations for the bf16 dot-product kernel,
// and shares the output columns among OpenMP threads.
#include "runtime/cpu/gemv.h"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "runtime/cpu/column_split.h"
#include "runtime/cpu/gemv_kernels.h"
#include "runtime/error.h"

namespace gemmapod::cpu {
namespace {

using internal::kGemvBlockRows;

using internal::ForColumns;

CpuIsa DetectOnce() {
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (!avx512) return CpuIsa::kPortable;
  return __builtin_cpu_supports("avx512bf16") ? CpuIsa::kAvx512Bf16 : CpuIsa::kAvx512;
}

void CheckSupported(CpuIsa isa) {
  GEMMAPOD_CHECK(CpuSupports(isa), "GEMV kernel family ", CpuIsaName(isa),
                 " is not supported by this CPU (best: ", CpuIsaName(DetectedCpuIsa()), ")");
}

// Splits rows of x into bf16 hi = bf16(x) and lo = bf16(x - hi), zero-padded to ldx columns.
// x - hi is exact in f32, so hi + lo carries about 16 significant bits of x.
void SplitActivations(const float* x, int rows, int64_t k, int64_t ldx, bool with_lo,
                      std::vector<BF16>& hi, std::vector<BF16>& lo) {
  hi.assign(static_cast<size_t>(rows * ldx), BF16{});
  if (with_lo) lo.assign(static_cast<size_t>(rows * ldx), BF16{});
  for (int m = 0; m < rows; ++m) {
    const float* xm = x + m * k;
    BF16* hm = hi.data() + m * ldx;
    for (int64_t i = 0; i < k; ++i) hm[i] = FloatToBF16(xm[i]);
    if (!with_lo) continue;
    BF16* lm = lo.data() + m * ldx;
    for (int64_t i = 0; i < k; ++i) lm[i] = FloatToBF16(xm[i] - BF16ToFloat(hm[i]));
  }
}

}  // namespace

std::string_view CpuIsaName(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kPortable:
      return "portable";
    case CpuIsa::kAvx512:
      return "avx512";
    case CpuIsa::kAvx512Bf16:
      return "avx512bf16";
  }
  return "?";
}

CpuIsa DetectedCpuIsa() {
  static const CpuIsa detected = DetectOnce();
  return detected;
}

CpuIsa ActiveCpuIsa() {
  const CpuIsa best = DetectedCpuIsa();
  const char* env = std::getenv("GEMMAPOD_CPU_ISA");
  if (env == nullptr || *env == '\0') return best;
  for (CpuIsa isa : {CpuIsa::kPortable, CpuIsa::kAvx512, CpuIsa::kAvx512Bf16}) {
    if (CpuIsaName(isa) == env) return std::min(isa, best);
  }
  throw Error(StrCat("GEMMAPOD_CPU_ISA='", env, "' is not one of portable, avx512, avx512bf16"));
}

bool CpuSupports(CpuIsa isa) { return isa <= DetectedCpuIsa(); }

CpuIsa PreferredBF16GemvIsa(MatmulPrecision precision, CpuIsa active, int64_t m) {
  // Measured (kernel_bench --sweep, 1 and 2 threads): for kExact the hi/lo vdpbf16ps kernel is
  // 10-20 % faster at M = 1 (fewer instructions per weight byte keeps one core streaming) and
  // at M = 7-8 (3 weight rows per pass, where the widening kernel pays its conversions per
  // row), while the widen-and-FMA kernel is 5-15 % faster at M = 2-6. kFastBF16 always takes
  // vdpbf16ps: half the work of either exact kernel.
  if (precision == MatmulPrecision::kExact && active == CpuIsa::kAvx512Bf16 && m >= 2 && m <= 6) {
    return CpuIsa::kAvx512;
  }
  return active;
}

void GemvF32(const float* x, int64_t m, int64_t k, const float* w, int64_t n, float* y,
             CpuIsa isa) {
  CheckSupported(isa);
  auto kernel = isa == CpuIsa::kPortable ? internal::GemvF32Portable : internal::GemvF32Avx512;
  for (int64_t m0 = 0; m0 < m; m0 += kGemvBlockRows) {
    const int rows = static_cast<int>(std::min<int64_t>(kGemvBlockRows, m - m0));
    const float* xb = x + m0 * k;
    float* yb = y + m0 * n;
    ForColumns(n, n * k * 4, [&](int64_t b, int64_t e) { kernel(xb, k, rows, k, w, b, e, yb, n); });
  }
}

void GemvBF16(const float* x, int64_t m, int64_t k, const BF16* w, int64_t n, float* y,
              MatmulPrecision precision, CpuIsa isa) {
  CheckSupported(isa);
  const auto* wbits = reinterpret_cast<const uint16_t*>(w);
  if (isa != CpuIsa::kAvx512Bf16) {
    auto kernel = isa == CpuIsa::kPortable ? internal::GemvBF16Portable : internal::GemvBF16Avx512;
    for (int64_t m0 = 0; m0 < m; m0 += kGemvBlockRows) {
      const int rows = static_cast<int>(std::min<int64_t>(kGemvBlockRows, m - m0));
      const float* xb = x + m0 * k;
      float* yb = y + m0 * n;
      ForColumns(n, n * k * 2,
                 [&](int64_t b, int64_t e) { kernel(xb, k, rows, k, wbits, b, e, yb, n); });
    }
    return;
  }
  const bool with_lo = precision == MatmulPrecision::kExact;
  const int64_t ldx = (k + 31) / 32 * 32;
  // Reused between calls so decode does not allocate per token.
  thread_local std::vector<BF16> hi, lo;
  for (int64_t m0 = 0; m0 < m; m0 += kGemvBlockRows) {
    const int rows = static_cast<int>(std::min<int64_t>(kGemvBlockRows, m - m0));
    SplitActivations(x + m0 * k, rows, k, ldx, with_lo, hi, lo);
    const auto* hb = reinterpret_cast<const uint16_t*>(hi.data());
    const auto* lb = with_lo ? reinterpret_cast<const uint16_t*>(lo.data()) : nullptr;
    float* yb = y + m0 * n;
    ForColumns(n, n * k * 2, [&](int64_t b, int64_t e) {
      internal::GemvBF16Avx512Bf16(hb, lb, ldx, rows, k, wbits, b, e, yb, n);
    });
  }
}

}  // namespace gemmapod::cpu
