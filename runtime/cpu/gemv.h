// Decode GEMV on the CPU: y = x * w^T for a few activation rows, streaming each weight row once
// for a block of up to 8 rows of x. Runtime ISA dispatch with a portable fallback.
#pragma once

#include <cstdint>
#include <string_view>

#include "runtime/cpu/matmul.h"
#include "runtime/dtype.h"

namespace gemmapod::cpu {

// Kernel families, ordered: each one needs everything the previous one needs.
enum class CpuIsa {
  kPortable,    // compiler-vectorised C++ for baseline x86-64
  kAvx512,      // AVX-512 F/BW/VL/DQ: f32 FMAs (bf16 weights widened exactly)
  kAvx512Bf16,  // + AVX512_BF16: vdpbf16ps on bf16 weights
};

std::string_view CpuIsaName(CpuIsa isa);
// The best family this CPU supports (checked once).
CpuIsa DetectedCpuIsa();
// DetectedCpuIsa(), lowered by the environment variable GEMMAPOD_CPU_ISA=portable|avx512|
// avx512bf16 when set (read on every call, so tests can switch paths). A value naming a family
// above the CPU's is capped to the CPU's; an unknown value throws gemmapod::Error.
CpuIsa ActiveCpuIsa();
bool CpuSupports(CpuIsa isa);

// y[m, n] = sum_k x[m, k] * w[n, k] for m < M, n < N. All arrays dense row-major:
// x [M, K], w [N, K], y [M, N]. Any M works; each block of 8 rows of x reads w once.
// Parallel over output columns with OpenMP (omp_get_max_threads()); small problems and
// one-thread runs execute inline. `isa` must be supported by the CPU (throws otherwise).
void GemvF32(const float* x, int64_t m, int64_t k, const float* w, int64_t n, float* y, CpuIsa isa);

// bf16 weights. kExact: f32-accurate products (kAvx512Bf16 uses the hi/lo activation split,
// the other families widen the weights to f32). kFastBF16: kAvx512Bf16 rounds the activations
// to bf16 (hi only); the other families stay exact.
void GemvBF16(const float* x, int64_t m, int64_t k, const BF16* w, int64_t n, float* y,
              MatmulPrecision precision, CpuIsa isa);

// The family MatMul uses for bf16 weights with `m` activation rows at this precision, given the
// active ISA (chosen by measurement: docs/performance.md).
CpuIsa PreferredBF16GemvIsa(MatmulPrecision precision, CpuIsa active, int64_t m);

}  // namespace gemmapod::cpu
