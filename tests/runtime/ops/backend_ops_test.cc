// Every operation of the device seam (runtime/ops/ops.h) on every backend this build has, over
// odd shapes, against straightforward double-precision references (llama.cpp's test-backend-ops
// in spirit). The CPU backend is always there; a device whose backend is not registered (CUDA
// until the GPU work adds it, or no GPU) skips with the reason. Then the seam's own checks: one
// device for all operands, f32 activations, shapes that agree, each named in the error.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <tuple>
#include <utility>
#include <vector>

#include "runtime/dtype.h"
#include "runtime/ops/backend.h"
#include "runtime/ops/ops.h"
#include "tests/error_of.h"
#include "tests/gradient_check.h"

namespace gemmapod::ops {
namespace {

using ::testing::HasSubstr;

class BackendOps : public ::testing::TestWithParam<DeviceKind> {
 protected:
  void SetUp() override {
    if (BackendFor(GetParam()) == nullptr) {
      GTEST_SKIP() << "no operations backend registered for this device kind in this build";
    }
    // A device backend runs on device copies; only the CPU's is registered so far.
    if (GetParam() != DeviceKind::kCpu) GTEST_SKIP() << "device copies for this test are CPU-only";
  }
};

// Odd shapes: a single row and element, lengths off every vector width, a 3-d activation.
TEST_P(BackendOps, MatMulInEveryWeightTypeAndPrecision) {
  const std::vector<std::vector<int64_t>> cases = {{1, 1, 1}, {3, 17, 5}, {9, 33, 70}, {40, 64, 3}};
  uint32_t seed = 1;
  for (const auto& c : cases) {
    const int64_t M = c[0], K = c[1], N = c[2];
    const Tensor x = RandomTensor({M, K}, seed++), w = RandomTensor({N, K}, seed++);
    for (DType wt : {DType::kF32, DType::kBF16}) {
      const Tensor weights = w.To(wt);
      const Tensor exact_w = weights.To(DType::kF32);  // the values the kernel multiplies
      std::vector<double> want(static_cast<size_t>(M * N), 0.0);
      for (int64_t m = 0; m < M; ++m) {
        for (int64_t n = 0; n < N; ++n) {
          for (int64_t k = 0; k < K; ++k) {
            want[m * N + n] +=
                double{x.data<float>()[m * K + k]} * exact_w.data<float>()[n * K + k];
          }
        }
      }
      for (MatmulPrecision p : {MatmulPrecision::kExact, MatmulPrecision::kFastBF16}) {
        Tensor y = Tensor::Empty({M, N}, DType::kF32);
        MatMul(x, weights, y, p);
        // Exact: f32-grade; fast rounds the activations to bf16 (2^-9 relative each).
        const double bound = p == MatmulPrecision::kExact ? 1e-5 : 2e-2;
        EXPECT_LT(MaxRelativeError(y, want), bound)
            << M << "x" << K << "x" << N << " " << DTypeName(wt)
            << " fast=" << (p != MatmulPrecision::kExact);
      }
    }
  }
  // A 3-d activation is its rows.
  const Tensor x = RandomTensor({2, 3, 8}, 50), w = RandomTensor({5, 8}, 51);
  Tensor y3 = Tensor::Empty({2, 3, 5}, DType::kF32), y2 = Tensor::Empty({6, 5}, DType::kF32);
  MatMul(x, w, y3, MatmulPrecision::kExact);
  MatMul(x.Reshape({6, 8}), w, y2, MatmulPrecision::kExact);
  for (int64_t i = 0; i < 30; ++i) EXPECT_EQ(y3.data<float>()[i], y2.data<float>()[i]);
}

TEST_P(BackendOps, MatMulInt8AndRowBias) {
  const int64_t M = 5, K = 37, N = 11;
  const Tensor x = RandomTensor({M, K}, 2);
  Tensor w = Tensor::Empty({N, K}, DType::kI8), scale = RandomTensor({N}, 3, 0.05f);
  for (int64_t i = 0; i < w.numel(); ++i)
    w.data<int8_t>()[i] = static_cast<int8_t>(i * 37 % 255 - 127);
  const Tensor bias = RandomTensor({N}, 4);
  std::vector<double> want(static_cast<size_t>(M * N), 0.0);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t k = 0; k < K; ++k) {
        want[m * N + n] += double{x.data<float>()[m * K + k]} * w.data<int8_t>()[n * K + k] *
                           scale.data<float>()[n];
      }
      want[m * N + n] += bias.data<float>()[n];
    }
  }
  Tensor y = Tensor::Empty({M, N}, DType::kF32);
  MatMulInt8(x, w, scale, y);
  AddRowBias(bias, y);
  EXPECT_LT(MaxRelativeError(y, want), 1e-5);
}

TEST_P(BackendOps, GatherRowsInEveryTableType) {
  const int64_t V = 7, d = 19;
  const Tensor table = RandomTensor({V, d}, 20);
  Tensor q = Tensor::Empty({V, d}, DType::kI8), scale = RandomTensor({V}, 21, 0.1f);
  for (int64_t i = 0; i < q.numel(); ++i)
    q.data<int8_t>()[i] = static_cast<int8_t>(i * 29 % 255 - 127);
  const std::vector<int64_t> rows = {3, -1, 0, 6, 3};
  for (int kind = 0; kind < 3; ++kind) {
    const Tensor t = kind == 0 ? table : kind == 1 ? table.To(DType::kBF16) : q;
    const Tensor values = kind == 2 ? Tensor() : t.To(DType::kF32);
    Tensor out = Tensor::Empty({5, d}, DType::kF32);
    GatherRows(t, kind == 2 ? &scale : nullptr, rows, 1.5f, out);
    std::vector<double> want;
    for (int64_t r : rows) {
      for (int64_t e = 0; e < d; ++e) {
        if (r < 0) {
          want.push_back(0.0);
        } else if (kind == 2) {
          want.push_back(1.5 * q.data<int8_t>()[r * d + e] * double{scale.data<float>()[r]});
        } else {
          want.push_back(1.5 * double{values.data<float>()[r * d + e]});
        }
      }
    }
    EXPECT_LT(MaxRelativeError(out, want), 1e-6) << "table type " << kind;
    EXPECT_EQ(out.data<float>()[d], 0.0f);  // row -1: another rank's token
  }
  Tensor out = Tensor::Empty({1, d}, DType::kF32);
  EXPECT_THAT(ErrorOf([&] { GatherRows(table, nullptr, std::vector<int64_t>{7}, 1, out); }),
              HasSubstr("GatherRows: row 7 (entry 0)"));
  EXPECT_THAT(ErrorOf([&] { GatherRows(q, nullptr, std::vector<int64_t>{0}, 1, out); }),
              HasSubstr("needs one f32 scale per row"));
}

TEST_P(BackendOps, ScatterRowsWritesARing) {
  const Tensor src = RandomTensor({4, 9}, 40);
  Tensor ring = RandomTensor({5, 9}, 41);
  const Tensor before = ring.Clone();
  const std::vector<int64_t> slots = {-1, 4, 0, 2};  // the first row finds no room
  ScatterRows(src, slots, ring);
  for (int64_t r = 0; r < 5; ++r) {
    int64_t from = -1;
    for (size_t i = 0; i < slots.size(); ++i) {
      if (slots[i] == r) from = static_cast<int64_t>(i);
    }
    for (int64_t e = 0; e < 9; ++e) {
      const float want =
          from >= 0 ? src.data<float>()[from * 9 + e] : before.data<float>()[r * 9 + e];
      ASSERT_EQ(ring.data<float>()[r * 9 + e], want) << r << "," << e;
    }
  }
  EXPECT_THAT(ErrorOf([&] {
                ScatterRows(src, std::vector<int64_t>{0, 1, 2, 5}, ring);
              }),
              HasSubstr("ScatterRows: row 5 (entry 3)"));
}

TEST_P(BackendOps, RmsNormIsGemmasOnePlusWeight) {
  for (int64_t d : {1, 15, 33, 257}) {
    const Tensor x = RandomTensor({3, d}, 5, 3.0f), weight = RandomTensor({d}, 6);
    Tensor out = Tensor::Empty({3, d}, DType::kF32);
    RmsNorm(x, weight, 1e-6f, out);
    std::vector<double> want;
    for (int64_t r = 0; r < 3; ++r) {
      double ms = 0;
      for (int64_t j = 0; j < d; ++j) ms += std::pow(double{x.data<float>()[r * d + j]}, 2);
      const double inv = 1 / std::sqrt(ms / d + 1e-6);
      for (int64_t j = 0; j < d; ++j) {
        want.push_back(x.data<float>()[r * d + j] * inv * (1 + double{weight.data<float>()[j]}));
      }
    }
    EXPECT_LT(MaxRelativeError(out, want), 2e-6) << d;
  }
}

TEST_P(BackendOps, ElementwiseOperations) {
  const int64_t n = 1003;  // past every vector width, with a tail
  const Tensor a = RandomTensor({n}, 7, 6.0f), b = RandomTensor({n}, 8, 6.0f);
  const auto check = [&](const char* what, const std::function<void(Tensor&)>& run,
                         const std::function<double(double, double)>& f, double bound) {
    Tensor out = Tensor::Empty({n}, DType::kF32);
    run(out);
    std::vector<double> want;
    for (int64_t i = 0; i < n; ++i) want.push_back(f(a.data<float>()[i], b.data<float>()[i]));
    EXPECT_LT(MaxRelativeError(out, want), bound) << what;
  };
  check(
      "Add", [&](Tensor& o) { Add(a, b, o); }, [](double x, double y) { return x + y; }, 1e-7);
  check(
      "Mul", [&](Tensor& o) { Mul(a, b, o); }, [](double x, double y) { return x * y; }, 1e-7);
  check(
      "Scale", [&](Tensor& o) { Scale(a, 0.37f, o); },
      [](double x, double) { return x * double{0.37f}; }, 1e-7);
  check(
      "GeluTanh", [&](Tensor& o) { GeluTanh(a, o); },
      [](double x, double) {
        return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
      },
      1e-6);
  check(
      "SoftCap", [&](Tensor& o) { SoftCap(a, 2.5f, o); },
      [](double x, double) { return 2.5 * std::tanh(x / 2.5); }, 1e-6);
  // In place.
  Tensor c = a.Clone();
  Add(c, b, c);
  EXPECT_EQ(c.data<float>()[n - 1], a.data<float>()[n - 1] + b.data<float>()[n - 1]);
}

TEST_P(BackendOps, RopeRotatesHalfSplitPairs) {
  const int64_t rows = 3, heads = 2, hd = 12;
  const std::vector<int32_t> positions = {0, 5, 1000};
  for (const Rope rope : {Rope{10000, 1, 1}, Rope{10000, 0.5f, 1}, Rope{1e6f, 1, 8}}) {
    const Tensor x = RandomTensor({rows, heads * hd}, 9);
    Tensor y = x.Clone();
    RopeHalfSplit(y, heads, hd, positions, rope);
    const int64_t rot = static_cast<int64_t>(hd * rope.rotary_fraction), half = rot / 2;
    std::vector<double> want(static_cast<size_t>(x.numel()));
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t h = 0; h < heads; ++h) {
        const float* v = x.data<float>() + (r * heads + h) * hd;
        double* o = want.data() + (r * heads + h) * hd;
        for (int64_t e = rot; e < hd; ++e) o[e] = v[e];  // past the rotary part: unchanged
        for (int64_t i = 0; i < half; ++i) {
          const double angle = positions[r] / double{rope.position_scale} *
                               std::pow(double{rope.theta}, -2.0 * i / rot);
          o[i] = v[i] * std::cos(angle) - v[i + half] * std::sin(angle);
          o[i + half] = v[i + half] * std::cos(angle) + v[i] * std::sin(angle);
        }
      }
    }
    EXPECT_LT(MaxRelativeError(y, want), 2e-5)
        << rope.rotary_fraction << " " << rope.position_scale;
  }
}

// Attention through the seam: runs as tensor views, a problem reading the second of two
// key/value heads per row (a tensor-parallel rank's), soft-capped, against a double softmax.
// (runtime/cpu's attention_test covers the kernel's shapes, masks and invariances at length.)
TEST_P(BackendOps, AttentionOverTensorRuns) {
  const int64_t H = 3, hd = 16, row = 2 * hd, positions = 40, n = 4;
  const Tensor keys = RandomTensor({positions, row}, 30, 1.5f),
               values = RandomTensor({positions, row}, 31);
  const Tensor q = RandomTensor({n, H * hd}, 32, 2.0f);
  AttentionProblem p;
  p.num_heads = H;
  p.num_kv_heads = 1;
  p.head_dim = hd;
  p.kv_row_stride = row;
  p.scale = 0.25f;
  p.softcap = 3.0f;
  p.first_kv_head = 1;
  const std::vector<KeyRunTensors> runs = {{keys.Slice(25, 40), values.Slice(25, 40), 25},
                                           {keys.Slice(0, 25), values.Slice(0, 25), 0}};
  const std::vector<int64_t> lo = {0, 10, 30, 5}, hi = {40, 26, 31, 5};
  Tensor out = Tensor::Empty({n, H * hd}, DType::kF32);
  Attention(p, q, runs, lo, hi, out);
  std::vector<double> want(static_cast<size_t>(n * H * hd), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t h = 0; h < H; ++h) {
      std::vector<double> scores;
      for (int64_t j = lo[i]; j < hi[i]; ++j) {
        double dot = 0;
        for (int64_t e = 0; e < hd; ++e) {
          dot +=
              double{q.data<float>()[(i * H + h) * hd + e]} * keys.data<float>()[j * row + hd + e];
        }
        scores.push_back(3.0 * std::tanh(dot * 0.25 / 3.0));
      }
      if (scores.empty()) continue;  // query 3 sees nothing: zeros
      const double m = *std::max_element(scores.begin(), scores.end());
      double sum = 0;
      for (double& x : scores) sum += (x = std::exp(x - m));
      for (int64_t j = lo[i]; j < hi[i]; ++j) {
        for (int64_t e = 0; e < hd; ++e) {
          want[(i * H + h) * hd + e] +=
              scores[j - lo[i]] / sum * values.data<float>()[j * row + hd + e];
        }
      }
    }
  }
  EXPECT_LT(MaxRelativeError(out, want), 2e-6);
  p.first_kv_head = 2;  // past the rows' two heads
  EXPECT_THAT(ErrorOf([&] { Attention(p, q, runs, lo, hi, out); }),
              HasSubstr("does not hold heads [2, 3) of 16 in rows of 32"));
}

TEST_P(BackendOps, CopyAndFillColumns) {
  const Tensor src = RandomTensor({3, 11}, 40);
  Tensor dst = RandomTensor({3, 7}, 41);
  const Tensor before = dst.Clone();
  CopyColumns(src, 4, dst, 2, 5);
  FillColumns(dst, 0, 1, -7.5f);
  for (int64_t r = 0; r < 3; ++r) {
    for (int64_t c = 0; c < 7; ++c) {
      const float want = c == 0                ? -7.5f
                         : c >= 2 && c < 2 + 5 ? src.data<float>()[r * 11 + 4 + c - 2]
                                               : before.data<float>()[r * 7 + c];
      EXPECT_EQ(dst.data<float>()[r * 7 + c], want) << r << "," << c;
    }
  }
  EXPECT_THAT(ErrorOf([&] { CopyColumns(src, 8, dst, 0, 4); }),
              HasSubstr("CopyColumns: 4 columns from 8 of f32[3, 11]"));
  EXPECT_THAT(ErrorOf([&] { FillColumns(dst, 5, 8, 0.0f); }),
              HasSubstr("FillColumns: [5, 8) of f32[3, 7]"));
}

// Depthwise causal convolution over three chunks of one sequence (the history carried between
// them) with a document start inside the second, against the whole sequence convolved at once.
TEST_P(BackendOps, CausalConv1dCarriesItsHistoryAndStopsAtDocuments) {
  const int64_t C = 37, width = 4, T = 13;
  const Tensor x = RandomTensor({T, C}, 50), taps = RandomTensor({C, 1, width}, 51),
               bias = RandomTensor({C}, 52);
  const std::vector<int64_t> doc = {0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};  // restarts at 5
  std::vector<double> want(static_cast<size_t>(T * C));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t ch = 0; ch < C; ++ch) {
      double acc = bias.data<float>()[ch];
      for (int64_t back = 0; back < width && t - back >= 0; ++back) {
        if (doc[t - back] != doc[t]) break;
        acc += double{taps.data<float>()[ch * width + width - 1 - back]} *
               x.data<float>()[(t - back) * C + ch];
      }
      want[t * C + ch] = acc;
    }
  }
  Tensor history = Tensor::Zeros({width - 1, C}, DType::kF32);
  Tensor out = Tensor::Empty({T, C}, DType::kF32);
  for (const auto& [b, e] : {std::pair<int64_t, int64_t>{0, 2}, {2, 9}, {9, 13}}) {
    std::vector<int32_t> reach;
    for (int64_t t = b; t < e; ++t) {
      int32_t r = 0;
      while (r < width - 1 && t - r - 1 >= 0 && doc[t - r - 1] == doc[t]) ++r;
      reach.push_back(r);
    }
    Tensor piece = Tensor::Empty({e - b, C}, DType::kF32);
    CausalConv1d(x.Slice(b, e), taps, bias, reach, history, piece);
    CopyColumns(piece, 0, piece, 0, C);  // a no-op copy onto itself is allowed
    std::copy_n(piece.data<float>(), piece.numel(), out.data<float>() + b * C);
  }
  EXPECT_LT(MaxRelativeError(out, want), 1e-6);
  // The history now holds the last width - 1 inputs, oldest first.
  for (int64_t i = 0; i < (width - 1) * C; ++i) {
    EXPECT_EQ(history.data<float>()[i], x.data<float>()[(T - width + 1) * C + i]) << i;
  }
  const std::vector<int32_t> too_far(T, width);
  EXPECT_THAT(ErrorOf([&] { CausalConv1d(x, taps, bias, too_far, history, out); }),
              HasSubstr("reaches 4 tokens back with 4 taps"));
}

TEST_P(BackendOps, BlockDiagonalMatMulIsOneBlockPerHead) {
  for (const auto& [T, H, bw] :
       std::vector<std::tuple<int64_t, int64_t, int64_t>>{{1, 1, 1}, {3, 2, 5}, {7, 3, 17}}) {
    const Tensor x = RandomTensor({T, H * bw}, 60), w = RandomTensor({H, bw, bw}, 61),
                 b = RandomTensor({H, bw}, 62);
    std::vector<double> want(static_cast<size_t>(T * H * bw));
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t j = 0; j < bw; ++j) {
          double acc = b.data<float>()[h * bw + j];
          for (int64_t i = 0; i < bw; ++i) {
            acc += double{x.data<float>()[t * H * bw + h * bw + i]} *
                   w.data<float>()[(h * bw + i) * bw + j];
          }
          want[t * H * bw + h * bw + j] = acc;
        }
      }
    }
    Tensor out = Tensor::Empty({T, H * bw}, DType::kF32);
    BlockDiagonalMatMul(x, w, b, out);
    EXPECT_LT(MaxRelativeError(out, want), 1e-6) << T << "x" << H << "x" << bw;
  }
}

// The RG-LRU over two chunks (its state carried) with a document start in the second, against
// the recurrence in double precision; wide enough (300 channels x 200 tokens) to thread.
TEST_P(BackendOps, RgLruCarriesItsStateAndResetsAtDocuments) {
  const int64_t T = 200, C = 300;
  const Tensor x = RandomTensor({T, C}, 70), gx = RandomTensor({T, C}, 71, 3.0f),
               ga = RandomTensor({T, C}, 72, 3.0f);
  const Tensor lambda = RandomTensor({C}, 73, 2.0f);
  std::vector<int32_t> pos(T);
  for (int64_t t = 0; t < T; ++t) pos[t] = static_cast<int32_t>(t < 150 ? t : t - 150);
  const auto sigmoid = [](double v) { return 1 / (1 + std::exp(-v)); };
  std::vector<double> want(static_cast<size_t>(T * C)), h(static_cast<size_t>(C), 0.0);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t ch = 0; ch < C; ++ch) {
      const double sp = std::log1p(std::exp(double{lambda.data<float>()[ch]}));
      const double log_a = -8 * sigmoid(ga.data<float>()[t * C + ch]) * sp;
      const double gated = sigmoid(gx.data<float>()[t * C + ch]) * x.data<float>()[t * C + ch];
      h[ch] = pos[t] == 0 ? gated
                          : std::exp(log_a) * h[ch] + std::sqrt(1 - std::exp(2 * log_a)) * gated;
      want[t * C + ch] = h[ch];
    }
  }
  Tensor state = Tensor::Zeros({C}, DType::kF32), out = Tensor::Empty({T, C}, DType::kF32);
  for (const auto& [b, e] : {std::pair<int64_t, int64_t>{0, 120}, {120, 200}}) {
    Tensor piece = Tensor::Empty({e - b, C}, DType::kF32);
    RgLru(x.Slice(b, e), gx.Slice(b, e), ga.Slice(b, e), lambda,
          std::span<const int32_t>(pos).subspan(b, e - b), state, piece);
    std::copy_n(piece.data<float>(), piece.numel(), out.data<float>() + b * C);
  }
  EXPECT_LT(MaxRelativeError(out, want), 1e-5);
  for (int64_t ch = 0; ch < C; ++ch) {
    EXPECT_EQ(state.data<float>()[ch], out.data<float>()[(T - 1) * C + ch]) << ch;
  }
}

INSTANTIATE_TEST_SUITE_P(Devices, BackendOps,
                         ::testing::Values(DeviceKind::kCpu, DeviceKind::kCuda),
                         [](const auto& info) {
                           return info.param == DeviceKind::kCpu ? "cpu" : "cuda";
                         });

// The seam's checks, before any backend runs.
TEST(OpsSeam, MisplacedOrMisshapenOperandsAreNamed) {
  Tensor a = RandomTensor({4}, 10), b = RandomTensor({4}, 11),
         out = Tensor::Empty({4}, DType::kF32);
  // A tensor that says it lives on a GPU (its bytes are never read: the check comes first).
  float fake[4] = {};
  Tensor on_gpu = Tensor::Borrow(fake, {4}, DType::kF32, Device::Cuda(0));
  EXPECT_THAT(ErrorOf([&] { Add(a, on_gpu, out); }),
              HasSubstr("Add: operands on cpu:0 and cuda:0"));
  EXPECT_THAT(ErrorOf([&] { Add(on_gpu, on_gpu, on_gpu); }),
              HasSubstr("Add: no operations backend for cuda:0"));
  Tensor longer = RandomTensor({5}, 12);
  EXPECT_THAT(ErrorOf([&] { Mul(a, longer, out); }), HasSubstr("Mul: f32[4]"));
  const Tensor ints = Tensor::Empty({4}, DType::kI32);
  EXPECT_THAT(ErrorOf([&] { GeluTanh(ints, out); }), HasSubstr("is not f32"));
  const Tensor x = RandomTensor({2, 8}, 13), w = RandomTensor({3, 7}, 14);
  Tensor y = Tensor::Empty({2, 3}, DType::kF32);
  EXPECT_THAT(ErrorOf([&] { MatMul(x, w, y, MatmulPrecision::kExact); }),
              HasSubstr("MatMul: f32[2, 8]"));
  Tensor q = RandomTensor({3, 8}, 15);
  EXPECT_THAT(ErrorOf([&] {
                RopeHalfSplit(q, 2, 4, std::vector<int32_t>{0, 1}, {});
              }),
              HasSubstr("is not [2 positions, 2 heads x 4]"));
  EXPECT_THAT(ErrorOf([&] { SoftCap(a, 0.0f, out); }), HasSubstr("SoftCap: cap 0"));
}

}  // namespace
}  // namespace gemmapod::ops
