// Weight-only int8 products: both kernel families and both routes (GEMV, dequantized-panel GEMM)
// against a double reference, on 1 and 2 OpenMP threads; the quantization round trip; the
// operand errors.
#include "runtime/cpu/int8_matmul.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "tests/error_of.h"
#include "tests/runtime/cpu/matmul_reference.h"

namespace gemmapod::cpu {

// Readable parameter names in gtest failure messages.
void PrintTo(CpuIsa isa, std::ostream* os) { *os << CpuIsaName(isa); }

namespace {

using testing::kExactTolerance;

// Restores the ISA variable and the OpenMP thread count when a test ends.
class ScopedIsa {
 public:
  explicit ScopedIsa(const char* value) { setenv("GEMMAPOD_CPU_ISA", value, 1); }
  ~ScopedIsa() { unsetenv("GEMMAPOD_CPU_ISA"); }
};
class ScopedThreads {
 public:
  explicit ScopedThreads(int threads) : saved_(omp_get_max_threads()) {
    omp_set_num_threads(threads);
  }
  ~ScopedThreads() { omp_set_num_threads(saved_); }

 private:
  int saved_;
};

// Quantized operands: q uniform over the whole grid [-127, 127] (so the extremes occur), scales
// in [0.5, 1.5] and all different, so a kernel that drops or mixes up the scales is far off.
struct Int8Weights {
  std::vector<int8_t> q;
  std::vector<float> scale;
};

Int8Weights RandomInt8Weights(int64_t n, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> grid(-127, 127);
  std::uniform_real_distribution<float> scales(0.5f, 1.5f);
  Int8Weights w;
  w.q.resize(static_cast<size_t>(n * k));
  for (int8_t& v : w.q) v = static_cast<int8_t>(grid(rng));
  w.scale.resize(static_cast<size_t>(n));
  for (float& s : w.scale) s = scales(rng);
  return w;
}

// ref[m, n] = scale[n] * sum_k x[m, k] * q[n, k] in double; mag[m, n] = sum_k |x * scale * q|,
// the size that f32 accumulation errors are relative to.
void ReferenceInt8(const std::vector<float>& x, const Int8Weights& w, int64_t m, int64_t k,
                   int64_t n, std::vector<double>& ref, std::vector<double>& mag) {
  ref.assign(static_cast<size_t>(m * n), 0.0);
  mag.assign(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0.0, a = 0.0;
      for (int64_t p = 0; p < k; ++p) {
        const double prod = static_cast<double>(x[i * k + p]) * w.q[j * k + p];
        s += prod;
        a += std::fabs(prod);
      }
      ref[i * n + j] = w.scale[j] * s;
      mag[i * n + j] = std::fabs(w.scale[j]) * a;
    }
  }
}

struct Case {
  int64_t m, k, n;
};

std::string Describe(const Case& c) { return StrCat("M=", c.m, " K=", c.k, " N=", c.n); }

// K: 1, around the 16-wide step and the 64-byte unrolled step (tails of every length class);
// N: 1, below and above the passes of 3..8 rows and the 24-column thread grain.
std::vector<Case> SmallCases() {
  std::vector<Case> cases;
  for (int64_t m : {1, 2, 3, 7, 8, 9, 17, 64, 65, 200})
    for (int64_t k : {1, 15, 17, 63, 65, 100, 257})
      for (int64_t n : {1, 7, 25}) cases.push_back({m, k, n});
  return cases;
}

// Over 512 KiB of weights with several L2 tiles and oneDNN panels: runs on two threads.
std::vector<Case> ParallelCases() {
  std::vector<Case> cases;
  for (int64_t m : {1, 3, 8, 9, 64, 65}) cases.push_back({m, 1001, 531});
  return cases;
}

using Product = void (*)(const float* x, const Case& c, const Int8Weights& w, float* y, CpuIsa);

void RunGemv(const float* x, const Case& c, const Int8Weights& w, float* y, CpuIsa isa) {
  GemvInt8(x, c.m, c.k, w.q.data(), w.scale.data(), c.n, y, isa);
}
void RunGemm(const float* x, const Case& c, const Int8Weights& w, float* y, CpuIsa) {
  GemmInt8(x, c.m, c.k, w.q.data(), w.scale.data(), c.n, y);
}
// Panels of 16 rows: N = 25 has a full and a partial panel, N = 531 34 of them.
void RunGemmSmallPanels(const float* x, const Case& c, const Int8Weights& w, float* y, CpuIsa) {
  GemmInt8(x, c.m, c.k, w.q.data(), w.scale.data(), c.n, y, 16);
}
void RunMatMul(const float* x, const Case& c, const Int8Weights& w, float* y, CpuIsa isa) {
  ScopedIsa scoped(std::string(CpuIsaName(isa)).c_str());
  Tensor xt = Tensor::Borrow(const_cast<float*>(x), {c.m, c.k}, DType::kF32);
  Tensor wt = Tensor::Borrow(const_cast<int8_t*>(w.q.data()), {c.n, c.k}, DType::kI8);
  Tensor st = Tensor::Borrow(const_cast<float*>(w.scale.data()), {c.n}, DType::kF32);
  Tensor yt = Tensor::Borrow(y, {c.m, c.n}, DType::kF32);
  MatMulInt8(xt, wt, st, yt);
}

void ExpectMatchesReference(Product product, const std::vector<Case>& cases, CpuIsa isa,
                            const std::string& label) {
  for (const Case& c : cases) {
    const auto x = testing::RandomFloats(c.m * c.k, static_cast<uint32_t>(c.m * 7 + c.k));
    const auto w = RandomInt8Weights(c.n, c.k, static_cast<uint32_t>(c.n * 13 + c.k));
    std::vector<double> ref, mag;
    ReferenceInt8(x, w, c.m, c.k, c.n, ref, mag);
    std::vector<float> y(static_cast<size_t>(c.m * c.n), -1.0f);  // stale values must go
    product(x.data(), c, w, y.data(), isa);
    EXPECT_LT(testing::MaxRelativeError(y.data(), ref, mag), kExactTolerance)
        << label << " " << CpuIsaName(isa) << " " << Describe(c)
        << " threads=" << omp_get_max_threads();
  }
}

class Int8MatMulTest : public ::testing::TestWithParam<CpuIsa> {
 protected:
  void SetUp() override {
    if (!CpuSupports(GetParam())) GTEST_SKIP() << "CPU lacks " << CpuIsaName(GetParam());
  }
};

TEST_P(Int8MatMulTest, GemvMatchesReferenceOnEveryRowCount) {
  for (int threads : {1, 2}) {
    ScopedThreads scoped(threads);
    ExpectMatchesReference(RunGemv, SmallCases(), GetParam(), "GemvInt8");
    ExpectMatchesReference(RunGemv, ParallelCases(), GetParam(), "GemvInt8");
  }
}

TEST_P(Int8MatMulTest, PanelGemmMatchesReferenceOnEveryRowCount) {
  ScopedIsa isa(std::string(CpuIsaName(GetParam())).c_str());  // the panel widening kernel
  for (int threads : {1, 2}) {
    ScopedThreads scoped(threads);
    ExpectMatchesReference(RunGemm, SmallCases(), GetParam(), "GemmInt8");
    ExpectMatchesReference(RunGemmSmallPanels, SmallCases(), GetParam(),
                           "GemmInt8 (16-row panels)");
    ExpectMatchesReference(RunGemm, ParallelCases(), GetParam(), "GemmInt8");
    ExpectMatchesReference(RunGemmSmallPanels, ParallelCases(), GetParam(),
                           "GemmInt8 (16-row panels)");
  }
}

TEST_P(Int8MatMulTest, MatMulInt8MatchesReferenceOnBothRoutes) {
  for (int threads : {1, 2}) {
    ScopedThreads scoped(threads);
    ExpectMatchesReference(RunMatMul, SmallCases(), GetParam(), "MatMulInt8");
    ExpectMatchesReference(RunMatMul, ParallelCases(), GetParam(), "MatMulInt8");
  }
}

// GEMMAPOD_CPU_ISA picks the kernel MatMulInt8 runs: its output is bit for bit that family's.
TEST_P(Int8MatMulTest, EnvironmentSelectsTheKernelFamily) {
  const Case c{3, 333, 77};
  const auto x = testing::RandomFloats(c.m * c.k, 21);
  const auto w = RandomInt8Weights(c.n, c.k, 22);
  std::vector<float> direct(c.m * c.n), via_matmul(c.m * c.n);
  RunGemv(x.data(), c, w, direct.data(), GetParam());
  RunMatMul(x.data(), c, w, via_matmul.data(), GetParam());
  EXPECT_EQ(0, std::memcmp(direct.data(), via_matmul.data(), direct.size() * sizeof(float)));
  // The comparison tells the families apart: they sum in different orders.
  if (CpuSupports(CpuIsa::kAvx512)) {
    const CpuIsa other = GetParam() == CpuIsa::kPortable ? CpuIsa::kAvx512 : CpuIsa::kPortable;
    std::vector<float> other_family(c.m * c.n);
    RunGemv(x.data(), c, w, other_family.data(), other);
    EXPECT_NE(0, std::memcmp(direct.data(), other_family.data(), direct.size() * sizeof(float)));
  }
}

// Up to Int8GemvMaxRows() rows MatMulInt8 is the GEMV, bit for bit; above it, the panel GEMM.
TEST_P(Int8MatMulTest, RowCountPicksTheRoute) {
  for (int64_t m : {Int8GemvMaxRows(), Int8GemvMaxRows() + 1}) {
    const Case c{m, 100, 40};
    const auto x = testing::RandomFloats(c.m * c.k, 23);
    const auto w = RandomInt8Weights(c.n, c.k, 24);
    std::vector<float> direct(c.m * c.n), via_matmul(c.m * c.n);
    ScopedIsa isa(std::string(CpuIsaName(GetParam())).c_str());
    if (m <= Int8GemvMaxRows()) {
      RunGemv(x.data(), c, w, direct.data(), GetParam());
    } else {
      RunGemm(x.data(), c, w, direct.data(), GetParam());
    }
    RunMatMul(x.data(), c, w, via_matmul.data(), GetParam());
    EXPECT_EQ(0, std::memcmp(direct.data(), via_matmul.data(), direct.size() * sizeof(float)))
        << "M=" << m;
  }
}

INSTANTIATE_TEST_SUITE_P(AllPaths, Int8MatMulTest,
                         ::testing::Values(CpuIsa::kPortable, CpuIsa::kAvx512),
                         [](const auto& info) { return std::string(CpuIsaName(info.param)); });

TEST(MatMulInt8, LeadingDimensionsAreFlattened) {
  const int64_t k = 40, n = 9;
  const auto xv = testing::RandomFloats(2 * 3 * k, 7);
  const auto w = RandomInt8Weights(n, k, 8);
  Tensor x = Tensor::FromVector({2, 3, k}, xv);
  Tensor wt = Tensor::Empty({n, k}, DType::kI8);
  std::copy(w.q.begin(), w.q.end(), wt.data<int8_t>());
  Tensor st = Tensor::FromVector({n}, w.scale);
  Tensor y = Tensor::Zeros({2, 3, n}, DType::kF32);
  MatMulInt8(x, wt, st, y);
  std::vector<double> ref, mag;
  ReferenceInt8(xv, w, 6, k, n, ref, mag);
  EXPECT_LT(testing::MaxRelativeError(y.data<float>(), ref, mag), kExactTolerance);
}

TEST(MatMulInt8, ZeroSizedDimensions) {
  Tensor x = Tensor::Zeros({4, 0}, DType::kF32);
  Tensor w = Tensor::Zeros({3, 0}, DType::kI8);
  Tensor s = Tensor::FromVector({3}, {1.0f, 2.0f, 3.0f});
  Tensor y = Tensor::FromVector({4, 3}, std::vector<float>(12, 7.0f));
  MatMulInt8(x, w, s, y);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(y.data<float>()[i], 0.0f);
  Tensor x_empty = Tensor::Zeros({0, 5}, DType::kF32);
  Tensor w5 = Tensor::Zeros({3, 5}, DType::kI8);
  Tensor y_empty = Tensor::Zeros({0, 3}, DType::kF32);
  MatMulInt8(x_empty, w5, s, y_empty);  // nothing to do, nothing thrown
}

TEST(MatMulInt8, BadOperandsNameTheProblem) {
  Tensor x = Tensor::Zeros({4, 8}, DType::kF32);
  Tensor w = Tensor::Zeros({3, 8}, DType::kI8);
  Tensor s = Tensor::Zeros({3}, DType::kF32);
  Tensor y = Tensor::Zeros({4, 3}, DType::kF32);
  MatMulInt8(x, w, s, y);  // the good operands pass

  Tensor w_bf16 = Tensor::Zeros({3, 8}, DType::kBF16);
  ExpectErrorNaming([&] { MatMulInt8(x, w_bf16, s, y); }, {"i8 weights", "bf16[3, 8]"});
  Tensor w_f32 = Tensor::Zeros({3, 8}, DType::kF32);
  ExpectErrorNaming([&] { MatMulInt8(x, w_f32, s, y); }, {"i8 weights", "f32[3, 8]"});
  Tensor x_bf16 = Tensor::Zeros({4, 8}, DType::kBF16);
  ExpectErrorNaming([&] { MatMulInt8(x_bf16, w, s, y); }, {"f32 activations", "bf16[4, 8]"});
  Tensor w_rank3 = Tensor::Zeros({1, 3, 8}, DType::kI8);
  ExpectErrorNaming([&] { MatMulInt8(x, w_rank3, s, y); }, {"[N, K]", "i8[1, 3, 8]"});
  Tensor w_bad_k = Tensor::Zeros({3, 9}, DType::kI8);
  ExpectErrorNaming([&] { MatMulInt8(x, w_bad_k, s, y); }, {"K = w.dim(1)", "i8[3, 9]"});
  Tensor s_short = Tensor::Zeros({2}, DType::kF32);
  ExpectErrorNaming([&] { MatMulInt8(x, w, s_short, y); },
                    {"scale must be f32 [N]", "N = w.dim(0) = 3", "f32[2]"});
  Tensor s_bf16 = Tensor::Zeros({3}, DType::kBF16);
  ExpectErrorNaming([&] { MatMulInt8(x, w, s_bf16, y); }, {"scale must be f32 [N]", "bf16[3]"});
  Tensor s_rank2 = Tensor::Zeros({3, 1}, DType::kF32);
  ExpectErrorNaming([&] { MatMulInt8(x, w, s_rank2, y); }, {"scale must be f32 [N]", "f32[3, 1]"});
  Tensor y_bad = Tensor::Zeros({4, 4}, DType::kF32);
  ExpectErrorNaming([&] { MatMulInt8(x, w, s, y_bad); }, {"y must have shape [4, 3]", "f32[4, 4]"});
}

TEST(Int8Gemv, UnsupportedFamilyIsAnError) {
  if (CpuSupports(CpuIsa::kAvx512)) GTEST_SKIP() << "AVX-512 is supported here";
  float x = 1.0f, s = 1.0f, y = 0.0f;
  int8_t q = 1;
  EXPECT_THROW(GemvInt8(&x, 1, 1, &q, &s, 1, &y, CpuIsa::kAvx512), Error);
}

// --- Quantization -------------------------------------------------------------------------------

// Quantizes, checks the grid and the bound |w - scale * q| <= scale / 2 for every element (in
// double; the slack covers the rounding of scale itself), and that the largest |w| hits +-127.
void ExpectRoundTripWithinHalfStep(const std::vector<float>& w, int64_t n, int64_t k) {
  std::vector<int8_t> q(w.size());
  std::vector<float> scale(static_cast<size_t>(n));
  QuantizeRowsInt8(w.data(), n, k, q.data(), scale.data());
  std::vector<float> back(static_cast<size_t>(k));
  for (int64_t r = 0; r < n; ++r) {
    const float* row = w.data() + r * k;
    float absmax = 0.0f;
    for (int64_t i = 0; i < k; ++i) absmax = std::max(absmax, std::fabs(row[i]));
    ASSERT_GT(scale[r], 0.0f) << "row " << r;
    DequantizeRowInt8(q.data() + r * k, scale[r], back.data(), k);
    bool hit_extreme = false;
    for (int64_t i = 0; i < k; ++i) {
      const int8_t v = q[r * k + i];
      ASSERT_GE(v, -127) << "row " << r;
      hit_extreme = hit_extreme || v == 127 || v == -127;
      const double err = std::fabs(static_cast<double>(row[i]) - double{scale[r]} * v);
      EXPECT_LE(err, scale[r] * (0.5 + 1e-6)) << "row " << r << " col " << i << " w=" << row[i];
      EXPECT_EQ(back[i], scale[r] * static_cast<float>(v));
    }
    if (absmax > 0.0f) {
      EXPECT_TRUE(hit_extreme) << "row " << r << ": absmax must map to +-127";
    }
  }
}

TEST(QuantizeRowsInt8, RoundTripWithinHalfAStepOverManyMagnitudes) {
  const int64_t n = 12, k = 301;
  std::vector<float> w = testing::RandomFloats(n * k, 31);
  for (int64_t r = 0; r < n; ++r)  // rows from 1e-6 to 1e5
    for (int64_t i = 0; i < k; ++i) w[r * k + i] *= std::pow(10.0f, static_cast<float>(r) - 6);
  w[3 * k + 17] = -40.0f;  // a negative absmax
  ExpectRoundTripWithinHalfStep(w, n, k);
}

TEST(QuantizeRowsInt8, ValuesOnTheGridComeBackExactly) {
  const int64_t k = 255;
  std::vector<int8_t> grid(k);
  for (int64_t i = 0; i < k; ++i) grid[i] = static_cast<int8_t>(i - 127);  // -127..127
  // A power-of-two step: the scale and every dequantized value are exact.
  const float step = 1.0f / 128;
  // A step that is not a power of two: q still comes back exactly; values within an f32 ulp.
  const float odd_step = 0.0137f;
  for (float s : {step, odd_step}) {
    std::vector<float> w(k);
    for (int64_t i = 0; i < k; ++i) w[i] = s * grid[i];
    std::vector<int8_t> q(k);
    float scale = 0.0f;
    QuantizeRowsInt8(w.data(), 1, k, q.data(), &scale);
    EXPECT_EQ(q, grid) << "step " << s;
    std::vector<float> back(k);
    DequantizeRowInt8(q.data(), scale, back.data(), k);
    for (int64_t i = 0; i < k; ++i) {
      if (s == step) {
        EXPECT_EQ(scale, step);
        EXPECT_EQ(back[i], w[i]) << i;
      } else {
        EXPECT_NEAR(back[i], w[i], std::fabs(w[i]) * 2e-7f) << i;
      }
    }
  }
}

TEST(QuantizeRowsInt8, ExtremesAndTiesToEven) {
  // absmax 127/16 puts the grid on multiples of 1/16: exact quotients, exact ties.
  const float u = 1.0f / 16;
  const std::vector<float> w = {127 * u,   -127 * u,  2.5f * u, 3.5f * u,
                                -2.5f * u, -0.5f * u, 0.5f * u, 126.5f * u};
  std::vector<int8_t> q(w.size());
  float scale = 0.0f;
  QuantizeRowsInt8(w.data(), 1, static_cast<int64_t>(w.size()), q.data(), &scale);
  EXPECT_EQ(scale, u);
  EXPECT_EQ(q, (std::vector<int8_t>{127, -127, 2, 4, -2, 0, 0, 126}));
  // A row whose absmax is negative only: -127, never -128.
  const std::vector<float> negative = {-3.0f, 1.0f, -0.0f};
  QuantizeRowsInt8(negative.data(), 1, 3, q.data(), &scale);
  EXPECT_EQ(q[0], -127);
  EXPECT_FLOAT_EQ(scale, 3.0f / 127);
}

TEST(QuantizeRowsInt8, AllZeroRowsGetScaleOneAndDequantizeToZeros) {
  const int64_t k = 20;
  std::vector<float> w(3 * k, 0.0f);
  for (int64_t i = 0; i < k; ++i) w[k + i] = 0.25f * (i - 10);  // row 1 is not zero
  w[2 * k + 3] = -0.0f;
  std::vector<int8_t> q(w.size(), 99);
  std::vector<float> scale(3, -1.0f);
  QuantizeRowsInt8(w.data(), 3, k, q.data(), scale.data());
  for (int64_t r : {0, 2}) {
    EXPECT_EQ(scale[r], 1.0f) << r;
    std::vector<float> back(k, 5.0f);
    DequantizeRowInt8(q.data() + r * k, scale[r], back.data(), k);
    for (int64_t i = 0; i < k; ++i) {
      EXPECT_EQ(q[r * k + i], 0);
      EXPECT_EQ(back[i], 0.0f);
    }
  }
  EXPECT_FLOAT_EQ(scale[1], 2.5f / 127);
}

TEST(QuantizeRowsInt8, BF16WeightsQuantizeLikeTheirF32Values) {
  const int64_t n = 5, k = 77;
  const auto wb = testing::ToBF16(testing::RandomFloats(n * k, 41, 3.0f));
  std::vector<float> wf(wb.size());
  for (size_t i = 0; i < wb.size(); ++i) wf[i] = BF16ToFloat(wb[i]);
  std::vector<int8_t> qb(wb.size()), qf(wb.size());
  std::vector<float> sb(n), sf(n);
  QuantizeRowsInt8(wb.data(), n, k, qb.data(), sb.data());
  QuantizeRowsInt8(wf.data(), n, k, qf.data(), sf.data());
  EXPECT_EQ(qb, qf);
  EXPECT_EQ(sb, sf);
  ExpectRoundTripWithinHalfStep(wf, n, k);
}

TEST(QuantizeRowsInt8, NonFiniteWeightNamesItsRow) {
  const int64_t n = 4, k = 3;
  std::vector<float> w(n * k, 1.0f);
  w[2 * k + 1] = std::numeric_limits<float>::quiet_NaN();
  std::vector<int8_t> q(w.size());
  std::vector<float> scale(n);
  ExpectErrorNaming([&] { QuantizeRowsInt8(w.data(), n, k, q.data(), scale.data()); },
                    {"row 2", "non-finite"});
  w[2 * k + 1] = 1.0f;
  w[3 * k] = -std::numeric_limits<float>::infinity();
  ExpectErrorNaming([&] { QuantizeRowsInt8(w.data(), n, k, q.data(), scale.data()); },
                    {"row 3", "non-finite"});
}

// Quantizing, then running the product, stays within the weight rounding of the f32 product:
// each weight moves by at most scale / 2 = absmax / 254.
TEST(QuantizeRowsInt8, QuantizedProductIsCloseToTheF32Product) {
  const int64_t m = 2, k = 512, n = 33;
  const auto x = testing::RandomFloats(m * k, 51);
  const auto w = testing::RandomFloats(n * k, 52);
  std::vector<int8_t> q(w.size());
  std::vector<float> scale(n);
  QuantizeRowsInt8(w.data(), n, k, q.data(), scale.data());
  std::vector<float> y(m * n);
  GemvInt8(x.data(), m, k, q.data(), scale.data(), n, y.data(), ActiveCpuIsa());
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double exact = 0.0, bound = 0.0;
      for (int64_t p = 0; p < k; ++p) {
        exact += double{x[i * k + p]} * w[j * k + p];
        bound += std::fabs(x[i * k + p]) * scale[j] * 0.5;
      }
      EXPECT_LE(std::fabs(y[i * n + j] - exact), bound * 1.001) << i << "," << j;
    }
  }
}

}  // namespace
}  // namespace gemmapod::cpu
