// oneDNN matmul wrappers with a process-wide primitive cache.
#include "runtime/cpu/gemm.h"

#include <omp.h>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "runtime/error.h"

namespace gemmapod::cpu {
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

int Threads() { return omp_in_parallel() ? 1 : omp_get_max_threads(); }

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

struct PrimitiveKey {
  int64_t m, k, n;
  dt src, wei;
  bool accumulate;            // sum post-op: y += x * w^T
  int threads;                // oneDNN plans its blocking for the thread count at creation
  bool x_transposed = false;  // x stored [K, M] (its transpose is the [M, K] operand)
  bool w_stored_kn = false;   // w stored [K, N] (else [N, K], read transposed)
  int64_t x_row_stride = 0;   // elements between rows of x [M, K] (0: dense, K)
  auto Tie() const {
    return std::tie(m, k, n, src, wei, accumulate, threads, x_transposed, w_stored_kn,
                    x_row_stride);
  }
  bool operator<(const PrimitiveKey& o) const { return Tie() < o.Tie(); }
};

// Creating a primitive descriptor costs tens of microseconds to milliseconds (kernel JIT);
// decode and training repeat the same few shapes, so keep them. Prompt lengths vary, so the
// cache is bounded: when full it starts over (oneDNN's own cache still holds the JIT code).
constexpr size_t kMaxCachedPrimitives = 512;
struct CachedMatmul {
  dnnl::matmul primitive;
  size_t scratchpad_bytes;
};
std::mutex cache_mutex;
std::map<PrimitiveKey, std::shared_ptr<const CachedMatmul>> cache;

dnnl::memory::desc SourceDesc(const PrimitiveKey& key) {
  if (key.x_row_stride != 0) {
    return dnnl::memory::desc({key.m, key.k}, key.src, dnnl::memory::dims{key.x_row_stride, 1});
  }
  return dnnl::memory::desc({key.m, key.k}, key.src, key.x_transposed ? tag::ba : tag::ab);
}

std::shared_ptr<const CachedMatmul> GetMatmul(const PrimitiveKey& key) {
  std::lock_guard<std::mutex> lock(cache_mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  const dnnl::memory::desc src = SourceDesc(key);
  // [N, K] row-major read in place as the transposed [K, N] (or [K, N] as it is).
  const dnnl::memory::desc wei({key.k, key.n}, key.wei, key.w_stored_kn ? tag::ab : tag::ba);
  const dnnl::memory::desc dst({key.m, key.n}, dt::f32, tag::ab);
  dnnl::primitive_attr attr;
  // A library-owned scratchpad would make concurrent calls of one cached primitive unsafe;
  // each calling thread passes its own instead.
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (key.accumulate) {
    dnnl::post_ops ops;
    ops.append_sum(1.0f);
    attr.set_post_ops(ops);
  }
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, wei, dst), attr, Engine());
  if (cache.size() >= kMaxCachedPrimitives) cache.clear();
  auto prim = std::make_shared<const CachedMatmul>(
      CachedMatmul{dnnl::matmul(pd), pd.scratchpad_desc().get_size()});
  cache.emplace(key, prim);
  return prim;
}

void Run(const PrimitiveKey& key, const void* x, const void* w, float* y) {
  const auto cached = GetMatmul(key);
  thread_local dnnl::stream stream(Engine());
  thread_local std::vector<uint8_t> scratch;
  const size_t scratch_bytes = std::max<size_t>(cached->scratchpad_bytes, 1);
  if (scratch.size() < scratch_bytes) scratch.resize(scratch_bytes);
  dnnl::memory scratchpad({{static_cast<int64_t>(scratch_bytes)}, dt::u8, tag::a}, Engine(),
                          scratch.data());
  dnnl::memory src(SourceDesc(key), Engine(), const_cast<void*>(x));
  dnnl::memory wei({{key.k, key.n}, key.wei, key.w_stored_kn ? tag::ab : tag::ba}, Engine(),
                   const_cast<void*>(w));
  dnnl::memory dst({{key.m, key.n}, dt::f32, tag::ab}, Engine(), y);
  cached->primitive.execute(stream, {{DNNL_ARG_SRC, src},
                                     {DNNL_ARG_WEIGHTS, wei},
                                     {DNNL_ARG_DST, dst},
                                     {DNNL_ARG_SCRATCHPAD, scratchpad}});
  stream.wait();
}

// hi = bf16(x) into hi[0, m*k); lo = bf16(x - hi) into lo (when not null).
void SplitToBF16(const float* x, int64_t count, BF16* hi, BF16* lo) {
  const bool parallel = count >= (int64_t{1} << 16) && !omp_in_parallel();
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t i = 0; i < count; ++i) {
    hi[i] = FloatToBF16(x[i]);
    if (lo != nullptr) lo[i] = FloatToBF16(x[i] - BF16ToFloat(hi[i]));
  }
}

}  // namespace

void GemmF32(const float* x, int64_t m, int64_t k, const float* w, int64_t n, float* y) {
  Run({m, k, n, dt::f32, dt::f32, false, Threads()}, x, w, y);
}

void GemmBF16(const float* x, int64_t m, int64_t k, const BF16* w, int64_t n, float* y,
              MatmulPrecision precision, BF16ExactGemm exact_method) {
  thread_local std::vector<BF16> xs;
  if (precision == MatmulPrecision::kFastBF16) {
    xs.resize(static_cast<size_t>(m * k));
    SplitToBF16(x, m * k, xs.data(), nullptr);
    Run({m, k, n, dt::bf16, dt::bf16, false, Threads()}, xs.data(), w, y);
    return;
  }
  xs.resize(static_cast<size_t>(2 * m * k));
  SplitToBF16(x, m * k, xs.data(), xs.data() + m * k);
  if (exact_method == BF16ExactGemm::kSumPostOp) {
    Run({m, k, n, dt::bf16, dt::bf16, false, Threads()}, xs.data(), w, y);
    Run({m, k, n, dt::bf16, dt::bf16, true, Threads()}, xs.data() + m * k, w, y);
    return;
  }
  thread_local std::vector<float> stacked;
  stacked.resize(static_cast<size_t>(2 * m * n));
  Run({2 * m, k, n, dt::bf16, dt::bf16, false, Threads()}, xs.data(), w, stacked.data());
  const float* top = stacked.data();
  const float* bottom = stacked.data() + m * n;
  const int64_t count = m * n;
  const bool parallel = count >= (int64_t{1} << 16) && !omp_in_parallel();
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t i = 0; i < count; ++i) y[i] = top[i] + bottom[i];
}

void GemmF32Transposed(const float* a, bool a_transposed, const float* b, bool b_stored_kn,
                       int64_t m, int64_t k, int64_t n, float* c, bool accumulate) {
  // oneDNN 2.6 runs a very long reduction (the tied head's input gradient, K = the vocabulary)
  // below its rate at K of a few thousand: M = 512, K = 262144, N = 640 took 955 ms whole and
  // 776 ms as slices of 8192 adding into c (2 threads, docs/performance.md).
  constexpr int64_t kLongK = 65536, kSliceK = 8192;
  if (!a_transposed && b_stored_kn && k >= kLongK) {
    for (int64_t k0 = 0; k0 < k; k0 += kSliceK) {
      PrimitiveKey key{m,       std::min(kSliceK, k - k0), n,        dt::f32,
                       dt::f32, accumulate || k0 > 0,      Threads()};
      key.w_stored_kn = true;
      key.x_row_stride = k;
      Run(key, a + k0, b + k0 * n, c);
    }
    return;
  }
  PrimitiveKey key{m, k, n, dt::f32, dt::f32, accumulate, Threads()};
  key.x_transposed = a_transposed;
  key.w_stored_kn = b_stored_kn;
  Run(key, a, b, c);
}

int64_t CachedGemmPrimitives() {
  std::lock_guard<std::mutex> lock(cache_mutex);
  return static_cast<int64_t>(cache.size());
}

}  // namespace gemmapod::cpu
