// MatMulInt8: validates tensors, then runs small M on the int8 GEMV kernels and large M as f32
// GEMMs (oneDNN) on panels of dequantized weight rows.
#include "runtime/cpu/int8_matmul.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "runtime/cpu/column_split.h"
#include "runtime/cpu/gemm.h"
#include "runtime/cpu/gemv_kernels.h"
#include "runtime/cpu/int8_kernels.h"
#include "runtime/error.h"

namespace gemmapod::cpu {
namespace {

using internal::kGemvBlockRows;

using internal::ForColumns;
using internal::kColumnGrain;

// For M above one block, the GEMV walks the columns in tiles of about this many weight bytes and
// runs every block of 8 activation rows over a tile before the next, so only the first block
// reads the tile from memory and the others find it in L2 (1 MiB per core here). At M = 64 the
// kernel is compute-bound and tiles of 32 KiB to 1 MiB measured the same (185-210 GFLOP/s on one
// thread); without tiling each block would stream the weights from memory again.
constexpr int64_t kGemvTileBytes = 256 * 1024;

// Size of one dequantized f32 panel, for 16 to 256 weight rows. Larger panels amortise what each
// oneDNN call costs besides the arithmetic (primitive lookup, packing setup); measured with
// kernel_bench --int8-sweep at M = 128 and 512, 64-256 rows ran within a few percent of each
// other for K = 640, 2304 and 9216, while 16-row panels lost 20-35 %.
constexpr int64_t kPanelBytes = 4 << 20;
// Panels hold a multiple of this many weight rows: oneDNN blocks N by 16, and a 113-row panel
// (K = 9216, M = 128) ran at 185-190 GFLOP/s against 212-216 for 112 rows.
constexpr int64_t kPanelGrain = 16;
// Below this much arithmetic a parallel region costs more than it saves (~20 us of one core).
constexpr double kMinParallelFlops = 4e6;

void CheckOperands(const Tensor& x, const Tensor& w, const Tensor& scale, const Tensor& y) {
  auto what = [&] {
    return StrCat(" (x: ", x.Describe(), ", w: ", w.Describe(), ", scale: ", scale.Describe(),
                  ", y: ", y.Describe(), ")");
  };
  GEMMAPOD_CHECK(
      x.device().is_cpu() && w.device().is_cpu() && scale.device().is_cpu() && y.device().is_cpu(),
      "cpu::MatMulInt8 needs CPU tensors", what());
  GEMMAPOD_CHECK(x.dtype() == DType::kF32 && y.dtype() == DType::kF32,
                 "cpu::MatMulInt8 needs f32 activations and output", what());
  GEMMAPOD_CHECK(w.dtype() == DType::kI8, "cpu::MatMulInt8 needs i8 weights", what());
  GEMMAPOD_CHECK(w.rank() == 2, "cpu::MatMulInt8 weights must be [N, K]", what());
  GEMMAPOD_CHECK(scale.dtype() == DType::kF32 && scale.rank() == 1 && scale.dim(0) == w.dim(0),
                 "cpu::MatMulInt8: scale must be f32 [N] with N = w.dim(0) = ", w.dim(0), what());
  GEMMAPOD_CHECK(x.rank() >= 1 && x.dim(-1) == w.dim(1),
                 "cpu::MatMulInt8: last dimension of x must equal K = w.dim(1)", what());
  Shape want = x.shape();
  want.back() = w.dim(0);
  GEMMAPOD_CHECK(y.shape() == want, "cpu::MatMulInt8: y must have shape ", ShapeToString(want),
                 what());
  GEMMAPOD_CHECK(x.defined() && w.defined() && scale.defined() && y.defined(),
                 "cpu::MatMulInt8: undefined tensor", what());
}

void CheckSupported(CpuIsa isa) {
  GEMMAPOD_CHECK(CpuSupports(isa), "int8 GEMV kernel family ", CpuIsaName(isa),
                 " is not supported by this CPU (best: ", CpuIsaName(DetectedCpuIsa()), ")");
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t RoundUp(int64_t a, int64_t multiple) { return CeilDiv(a, multiple) * multiple; }

int64_t DefaultPanelRows(int64_t k) {
  const int64_t rows = kPanelBytes / (4 * std::max<int64_t>(k, 1)) / kPanelGrain * kPanelGrain;
  return std::clamp<int64_t>(rows, kPanelGrain, 256);
}

}  // namespace

// Measured with kernel_bench --int8-sweep (weights cold, ms per call, 1 and 2 threads): the
// GEMV, which reads the weights from memory once and then from L2 for every further block of 8
// rows, beats the panel GEMM 3-8x up to M = 8 (the GEMM widens every panel and oneDNN packs it on
// every call) and 1.2-1.9x at M = 16-32. The two meet at M = 64-80 for gemma2-2b's 9216 x 2304
// and 2304 x 9216 and gemma3-270m's 2048 x 640 (within 5 % either way at M = 64, e.g. 13.7
// against 13.8 ms for 9216 x 2304 on one thread); from M = 96 oneDNN's f32 kernel (210-230
// GFLOP/s on one thread against the GEMV's 190-200) is 5-15 % faster.
int64_t Int8GemvMaxRows() { return 64; }

void GemvInt8(const float* x, int64_t m, int64_t k, const int8_t* w, const float* scale, int64_t n,
              float* y, CpuIsa isa) {
  CheckSupported(isa);
  if (m == 0 || n == 0) return;
  auto kernel = isa == CpuIsa::kPortable ? internal::GemvInt8Portable : internal::GemvInt8Avx512;
  const int64_t blocks = (m + kGemvBlockRows - 1) / kGemvBlockRows;
  ForColumns(n, n * k * blocks, [&](int64_t n_begin, int64_t n_end) {
    const int64_t tile =
        blocks == 1 ? n_end - n_begin
                    : std::max<int64_t>(kColumnGrain, kGemvTileBytes / std::max<int64_t>(k, 1));
    for (int64_t t0 = n_begin; t0 < n_end; t0 += tile) {
      const int64_t t1 = std::min(n_end, t0 + tile);
      for (int64_t m0 = 0; m0 < m; m0 += kGemvBlockRows) {
        const int rows = static_cast<int>(std::min<int64_t>(kGemvBlockRows, m - m0));
        kernel(x + m0 * k, k, rows, k, w, scale, t0, t1, y + m0 * n, n);
      }
    }
  });
}

void GemmInt8(const float* x, int64_t m, int64_t k, const int8_t* w, const float* scale, int64_t n,
              float* y, int64_t panel_rows) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    std::fill(y, y + m * n, 0.0f);
    return;
  }
  const int max_threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const int threads = static_cast<int>(
      std::clamp<double>(std::floor(2.0 * m * n * k / kMinParallelFlops), 1, max_threads));
  const int64_t max_panel = panel_rows > 0 ? panel_rows : DefaultPanelRows(k);
  auto widen =
      ActiveCpuIsa() == CpuIsa::kPortable ? internal::WidenInt8Portable : internal::WidenInt8Avx512;
  // Weight rows [begin, end) in panels: dequantize a panel into f32, multiply, scale into y's
  // columns. The GEMM writes a dense [M, rows] block (GemmF32 has no output stride), so it goes
  // through a scratch; the copy is M * rows floats against 2 * M * rows * K flops.
  auto run_rows = [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> weights, out;
    // Equal panels of a multiple of kPanelGrain rows, rather than full panels and a short one.
    const int64_t count = (end - begin + max_panel - 1) / max_panel;
    const int64_t panel =
        panel_rows > 0 ? panel_rows : RoundUp(CeilDiv(end - begin, count), kPanelGrain);
    for (int64_t n0 = begin; n0 < end; n0 += panel) {
      const int64_t rows = std::min(panel, end - n0);
      weights.resize(static_cast<size_t>(rows * k));
      out.resize(static_cast<size_t>(m * rows));
      widen(w + n0 * k, rows * k, weights.data());
      GemmF32(x, m, k, weights.data(), rows, out.data());
      for (int64_t i = 0; i < m; ++i) {
        const float* src = out.data() + i * rows;
        float* dst = y + i * n + n0;
        for (int64_t j = 0; j < rows; ++j) dst[j] = scale[n0 + j] * src[j];
      }
    }
  };
  if (threads == 1) {
    run_rows(0, n);
    return;
  }
  // Each thread takes an equal share of the rows and runs one-thread GEMMs on it (GemmF32 sees
  // omp_in_parallel()): no barrier per panel. Against panels run one after another, each by
  // oneDNN on both threads, this was faster in 5 of 6 alternating runs (up to 2.7x) and equal
  // in the sixth.
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    const int nt = omp_get_num_threads();
    const int64_t grains = CeilDiv(n, kPanelGrain);
    const int64_t begin = std::min(n, grains * t / nt * kPanelGrain);
    const int64_t end = std::min(n, grains * (t + 1) / nt * kPanelGrain);
    if (begin < end) run_rows(begin, end);
  }
}

void MatMulInt8(const Tensor& x, const Tensor& w, const Tensor& scale, Tensor& y) {
  CheckOperands(x, w, scale, y);
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
  if (m <= Int8GemvMaxRows()) {
    GemvInt8(in, m, k, w.data<int8_t>(), scale.data<float>(), n, out, ActiveCpuIsa());
  } else {
    GemmInt8(in, m, k, w.data<int8_t>(), scale.data<float>(), n, out);
  }
}

}  // namespace gemmapod::cpu
