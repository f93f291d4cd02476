// cpu::MatMul end to end: GEMV and GEMM routes, both weight types and precisions, every ISA
// path selected through GEMMAPOD_CPU_ISA, and the shape errors.
#include "runtime/cpu/matmul.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "runtime/cpu/gemm.h"
#include "runtime/cpu/gemv.h"
#include "tests/error_of.h"
#include "tests/runtime/cpu/matmul_reference.h"

namespace gemmapod::cpu {
namespace {

using testing::kExactTolerance;
using testing::kFastTolerance;

// Restores the ISA variable when a test ends.
class ScopedIsa {
 public:
  explicit ScopedIsa(const char* value) { setenv("GEMMAPOD_CPU_ISA", value, 1); }
  ~ScopedIsa() { unsetenv("GEMMAPOD_CPU_ISA"); }
};

Tensor F32(const std::vector<float>& v, Shape shape) { return Tensor::FromVector(shape, v); }

double Tolerance(MatmulPrecision p) {
  return p == MatmulPrecision::kExact ? kExactTolerance : kFastTolerance;
}

void CheckMatMul(int64_t m, int64_t k, int64_t n, DType wtype, MatmulPrecision precision,
                 const std::string& label) {
  const auto xv = testing::RandomFloats(m * k, 11);
  const auto wv = testing::RandomFloats(n * k, 12);
  Tensor x = F32(xv, {m, k});
  Tensor w = F32(wv, {n, k}).To(wtype);
  Tensor y = Tensor::Zeros({m, n}, DType::kF32);
  std::vector<double> ref, mag;
  if (wtype == DType::kF32) {
    testing::ReferenceMatMul(xv, wv, m, k, n, ref, mag);
  } else {
    testing::ReferenceMatMul(xv, testing::ToBF16(wv), m, k, n, ref, mag);
  }
  MatMul(x, w, y, precision);
  EXPECT_LT(testing::MaxRelativeError(y.data<float>(), ref, mag), Tolerance(precision))
      << label << " M=" << m << " K=" << k << " N=" << n << " w=" << DTypeName(wtype)
      << (precision == MatmulPrecision::kExact ? " exact" : " fast");
}

TEST(MatMul, EveryPathBothPrecisionsBothWeightTypes) {
  for (const char* isa : {"portable", "avx512", "avx512bf16"}) {
    ScopedIsa scoped(isa);
    for (int64_t m : {1, 5, 8, 9, 64})
      for (auto [k, n] : {std::pair<int64_t, int64_t>{1, 1}, {33, 17}, {31, 40}, {130, 9}})
        for (DType wtype : {DType::kF32, DType::kBF16})
          for (auto p : {MatmulPrecision::kExact, MatmulPrecision::kFastBF16})
            CheckMatMul(m, k, n, wtype, p, isa);
  }
}

TEST(MatMul, GemmBF16ExactMethodsAgree) {
  const int64_t m = 37, k = 70, n = 23;
  const auto x = testing::RandomFloats(m * k, 5);
  const auto w = testing::ToBF16(testing::RandomFloats(n * k, 6));
  std::vector<double> ref, mag;
  testing::ReferenceMatMul(x, w, m, k, n, ref, mag);
  for (auto method : {BF16ExactGemm::kStackedRows, BF16ExactGemm::kSumPostOp}) {
    std::vector<float> y(m * n, 123.0f);  // the sum post-op must not keep stale values
    GemmBF16(x.data(), m, k, w.data(), n, y.data(), MatmulPrecision::kExact, method);
    EXPECT_LT(testing::MaxRelativeError(y.data(), ref, mag), kExactTolerance);
  }
}

TEST(MatMul, LeadingDimensionsAreFlattened) {
  const auto xv = testing::RandomFloats(2 * 3 * 16, 7);
  const auto wv = testing::RandomFloats(5 * 16, 8);
  Tensor x = F32(xv, {2, 3, 16});
  Tensor w = F32(wv, {5, 16});
  Tensor y = Tensor::Zeros({2, 3, 5}, DType::kF32);
  MatMul(x, w, y);
  std::vector<double> ref, mag;
  testing::ReferenceMatMul(xv, wv, 6, 16, 5, ref, mag);
  EXPECT_LT(testing::MaxRelativeError(y.data<float>(), ref, mag), kExactTolerance);
}

TEST(MatMul, PrimitivesAreCachedAcrossCalls) {
  Tensor x = F32(testing::RandomFloats(50 * 20, 9), {50, 20});
  Tensor w = F32(testing::RandomFloats(30 * 20, 10), {30, 20});
  Tensor y = Tensor::Zeros({50, 30}, DType::kF32);
  MatMul(x, w, y);
  const int64_t cached = CachedGemmPrimitives();
  MatMul(x, w, y);
  MatMul(x, w, y);
  EXPECT_EQ(CachedGemmPrimitives(), cached);
}

// Callers on several threads share the cached oneDNN primitives (each passes its own scratchpad).
TEST(MatMul, ConcurrentCallersShareCachedPrimitives) {
  const int64_t m = 40, k = 64, n = 48;
  const auto xv = testing::RandomFloats(m * k, 13);
  const auto wv = testing::RandomFloats(n * k, 14);
  std::vector<double> ref, mag;
  testing::ReferenceMatMul(xv, testing::ToBF16(wv), m, k, n, ref, mag);
  Tensor x = F32(xv, {m, k});
  Tensor w = F32(wv, {n, k}).To(DType::kBF16);
  std::vector<double> errors(4, 1.0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      Tensor y = Tensor::Zeros({m, n}, DType::kF32);
      for (int rep = 0; rep < 20; ++rep) MatMul(x, w, y);
      errors[t] = testing::MaxRelativeError(y.data<float>(), ref, mag);
    });
  }
  for (auto& th : threads) th.join();
  for (double e : errors) EXPECT_LT(e, kExactTolerance);
}

TEST(MatMul, ZeroSizedDimensions) {
  Tensor x = Tensor::Zeros({4, 0}, DType::kF32);
  Tensor w = Tensor::Zeros({3, 0}, DType::kF32);
  Tensor y = F32(std::vector<float>(12, 7.0f), {4, 3});
  MatMul(x, w, y);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(y.data<float>()[i], 0.0f);
}

TEST(MatMul, BadShapesAndTypesNameTheTensors) {
  Tensor x = Tensor::Zeros({4, 8}, DType::kF32);
  Tensor w = Tensor::Zeros({3, 8}, DType::kBF16);
  Tensor y = Tensor::Zeros({4, 3}, DType::kF32);
  Tensor w_bad_k = Tensor::Zeros({3, 9}, DType::kBF16);
  ExpectErrorNaming([&] { MatMul(x, w_bad_k, y); }, {"f32[4, 8]", "bf16[3, 9]"});
  Tensor y_bad = Tensor::Zeros({4, 4}, DType::kF32);
  ExpectErrorNaming([&] { MatMul(x, w, y_bad); }, {"[4, 3]", "f32[4, 4]"});
  Tensor x_bf16 = Tensor::Zeros({4, 8}, DType::kBF16);
  ExpectErrorNaming([&] { MatMul(x_bf16, w, y); }, {"bf16[4, 8]", "f32"});
  Tensor w_rank3 = Tensor::Zeros({1, 3, 8}, DType::kF32);
  ExpectErrorNaming([&] { MatMul(x, w_rank3, y); }, {"f32[1, 3, 8]"});
  Tensor w_i32 = Tensor::Zeros({3, 8}, DType::kI32);
  ExpectErrorNaming([&] { MatMul(x, w_i32, y); }, {"i32[3, 8]"});
}

}  // namespace
}  // namespace gemmapod::cpu
