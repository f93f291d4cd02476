// Every GEMV kernel family against a double reference, over awkward shapes.
#include "runtime/cpu/gemv.h"

#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include "tests/runtime/cpu/matmul_reference.h"

namespace gemmapod::cpu {

// Readable parameter names in gtest failure messages.
void PrintTo(CpuIsa isa, std::ostream* os) { *os << CpuIsaName(isa); }

namespace {

using testing::kExactTolerance;
using testing::kFastTolerance;

struct Shape3 {
  int64_t m, k, n;
};

// K: 1, below/above the 16- and 32-wide vector steps; N: below/above the passes of 3..8 rows;
// M: every row count of a block, one past it, and several blocks.
std::vector<Shape3> Shapes() {
  std::vector<Shape3> shapes;
  for (int64_t m : {1, 2, 3, 4, 5, 6, 7, 8, 9, 17})
    for (int64_t k : {1, 15, 16, 17, 31, 32, 33, 100})
      for (int64_t n : {1, 7, 17}) shapes.push_back({m, k, n});
  shapes.push_back({64, 257, 40});
  // Big enough to run on several threads (> 256 KiB of weights).
  shapes.push_back({1, 1000, 300});
  shapes.push_back({3, 999, 301});
  return shapes;
}

std::string Name(CpuIsa isa, const Shape3& s) {
  return StrCat(CpuIsaName(isa), " M=", s.m, " K=", s.k, " N=", s.n);
}

class GemvTest : public ::testing::TestWithParam<CpuIsa> {
 protected:
  void SetUp() override {
    if (!CpuSupports(GetParam())) GTEST_SKIP() << "CPU lacks " << CpuIsaName(GetParam());
  }
};

TEST_P(GemvTest, F32WeightsMatchReference) {
  for (const Shape3& s : Shapes()) {
    const auto x = testing::RandomFloats(s.m * s.k, 1);
    const auto w = testing::RandomFloats(s.n * s.k, 2);
    std::vector<double> ref, mag;
    testing::ReferenceMatMul(x, w, s.m, s.k, s.n, ref, mag);
    std::vector<float> y(s.m * s.n, -1.0f);
    GemvF32(x.data(), s.m, s.k, w.data(), s.n, y.data(), GetParam());
    EXPECT_LT(testing::MaxRelativeError(y.data(), ref, mag), kExactTolerance)
        << Name(GetParam(), s);
  }
}

TEST_P(GemvTest, BF16WeightsMatchReferenceInBothPrecisions) {
  for (const Shape3& s : Shapes()) {
    const auto x = testing::RandomFloats(s.m * s.k, 3);
    const auto w = testing::ToBF16(testing::RandomFloats(s.n * s.k, 4));
    std::vector<double> ref, mag;
    testing::ReferenceMatMul(x, w, s.m, s.k, s.n, ref, mag);
    std::vector<float> y(s.m * s.n, -1.0f);
    GemvBF16(x.data(), s.m, s.k, w.data(), s.n, y.data(), MatmulPrecision::kExact, GetParam());
    EXPECT_LT(testing::MaxRelativeError(y.data(), ref, mag), kExactTolerance)
        << "exact " << Name(GetParam(), s);
    std::fill(y.begin(), y.end(), -1.0f);
    GemvBF16(x.data(), s.m, s.k, w.data(), s.n, y.data(), MatmulPrecision::kFastBF16, GetParam());
    EXPECT_LT(testing::MaxRelativeError(y.data(), ref, mag), kFastTolerance)
        << "fast " << Name(GetParam(), s);
  }
}

// One product whose activation is not a bf16 value: only the hi + lo split gets it to ~2^-16.
TEST_P(GemvTest, ExactModeKeepsActivationBitsBelowBF16) {
  const float x = 1.0f + 1.0f / 1024 + 1.0f / 65536;  // needs 16 mantissa bits
  const std::vector<BF16> w = {FloatToBF16(3.0f)};
  float y = 0.0f;
  GemvBF16(&x, 1, 1, w.data(), 1, &y, MatmulPrecision::kExact, GetParam());
  EXPECT_NEAR(y, 3.0 * x, 3.0 * x * 1e-6);
}

INSTANTIATE_TEST_SUITE_P(AllPaths, GemvTest,
                         ::testing::Values(CpuIsa::kPortable, CpuIsa::kAvx512, CpuIsa::kAvx512Bf16),
                         [](const auto& info) { return std::string(CpuIsaName(info.param)); });

TEST(GemvDispatch, UnsupportedFamilyIsAnError) {
  if (CpuSupports(CpuIsa::kAvx512Bf16)) GTEST_SKIP() << "every family is supported here";
  float x = 1.0f, w = 1.0f, y = 0.0f;
  EXPECT_THROW(GemvF32(&x, 1, 1, &w, 1, &y, CpuIsa::kAvx512Bf16), Error);
}

TEST(GemvDispatch, EnvironmentLowersTheFamily) {
  ASSERT_EQ(setenv("GEMMAPOD_CPU_ISA", "portable", 1), 0);
  EXPECT_EQ(ActiveCpuIsa(), CpuIsa::kPortable);
  ASSERT_EQ(setenv("GEMMAPOD_CPU_ISA", "avx512bf16", 1), 0);
  EXPECT_EQ(ActiveCpuIsa(), DetectedCpuIsa());  // never above what the CPU has
  ASSERT_EQ(setenv("GEMMAPOD_CPU_ISA", "sse9", 1), 0);
  try {
    ActiveCpuIsa();
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sse9"), std::string::npos) << e.what();
  }
  unsetenv("GEMMAPOD_CPU_ISA");
  EXPECT_EQ(ActiveCpuIsa(), DetectedCpuIsa());
}

}  // namespace
}  // namespace gemmapod::cpu
