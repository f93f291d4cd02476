// MatMul: validates tensors and routes small M to the GEMV kernels, large M to oneDNN.
#include "runtime/cpu/matmul.h"

#include <algorithm>

#include "runtime/cpu/gemm.h"
#include "runtime/cpu/gemv.h"

namespace gemmapod::cpu {
namespace {

// Largest M that still runs the GEMV kernels, measured with `kernel_bench --sweep` on 1 and 2
// threads (docs/performance.md): up to here streaming the weights once per 8 rows beats oneDNN
// (which packs the weights on every call). f32 kernels slow down at 7-8 rows (3 weight rows per
// pass re-read x from L2 more often), where oneDNN already wins.
int64_t GemvMaxRows(DType weights) { return weights == DType::kF32 ? 6 : 8; }

void CheckOperands(const Tensor& x, const Tensor& w, const Tensor& y) {
  auto what = [&] {
    return StrCat(" (x: ", x.Describe(), ", w: ", w.Describe(), ", y: ", y.Describe(), ")");
  };
  GEMMAPOD_CHECK(x.device().is_cpu() && w.device().is_cpu() && y.device().is_cpu(),
                 "cpu::MatMul needs CPU tensors", what());
  GEMMAPOD_CHECK(x.dtype() == DType::kF32 && y.dtype() == DType::kF32,
                 "cpu::MatMul needs f32 activations and output", what());
  GEMMAPOD_CHECK(w.dtype() == DType::kF32 || w.dtype() == DType::kBF16,
                 "cpu::MatMul needs f32 or bf16 weights", what());
  GEMMAPOD_CHECK(w.rank() == 2, "cpu::MatMul weights must be [N, K]", what());
  GEMMAPOD_CHECK(x.rank() >= 1 && x.dim(-1) == w.dim(1),
                 "cpu::MatMul: last dimension of x must equal K = w.dim(1)", what());
  Shape want = x.shape();
  want.back() = w.dim(0);
  GEMMAPOD_CHECK(y.shape() == want, "cpu::MatMul: y must have shape ", ShapeToString(want), what());
  GEMMAPOD_CHECK(x.defined() && w.defined() && y.defined(), "cpu::MatMul: undefined tensor",
                 what());
}

}  // namespace

void MatMul(const Tensor& x, const Tensor& w, Tensor& y, MatmulPrecision precision) {
  CheckOperands(x, w, y);
  const int64_t n = w.dim(0);
  const int64_t k = w.dim(1);
  const int64_t m = k == 0 ? y.numel() / std::max<int64_t>(n, 1) : x.numel() / k;
  if (m == 0 || n == 0) return;
  float* out = y.data<float>();
  if (k == 0) {
    std::fill(out, out + m * n, 0.0f);
    return;
  }
  const float* in = x.data<float>();
  const CpuIsa isa = ActiveCpuIsa();
  const bool gemv = m <= GemvMaxRows(w.dtype());
  if (w.dtype() == DType::kF32) {
    if (gemv) {
      GemvF32(in, m, k, w.data<float>(), n, out, isa);
    } else {
      GemmF32(in, m, k, w.data<float>(), n, out);
    }
    return;
  }
  if (gemv) {
    GemvBF16(in, m, k, w.data<BF16>(), n, out, precision, PreferredBF16GemvIsa(precision, isa, m));
  } else {
    GemmBF16(in, m, k, w.data<BF16>(), n, out, precision);
  }
}

}  // namespace gemmapod::cpu
