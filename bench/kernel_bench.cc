// CPU kernel benchmark: memory bandwidth (STREAM-like triad), GEMV GB/s and GEMM GFLOP/s on one
// and two threads, printed as a markdown table (docs/performance.md). Best of several runs: the
// machine is shared and noisy.
//
//   kernel_bench            the table
//   kernel_bench --runs 3   the same, best of 3 whole runs
//   kernel_bench --gemv     GEMV rows only
//   kernel_bench --sweep    GEMV vs GEMM time over M = 1..24 (picks MatMul's GEMV threshold)
//   kernel_bench --int8 [--runs N]   int8-weight decode GEMV next to bf16, and the prefill GEMM
//   kernel_bench --int8-sweep        int8 GEMV vs panel GEMM over M, and the panel size
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "runtime/cpu/gemm.h"
#include "runtime/cpu/gemv.h"
#include "runtime/cpu/int8_matmul.h"
#include "runtime/dtype.h"

namespace gemmapod::cpu {
namespace {

// Best wall time of `reps` runs after one warm-up, in seconds.
double BestSeconds(int reps, const std::function<void()>& f) {
  f();
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const auto t1 = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double>(t1 - t0).count());
  }
  return best;
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

// STREAM triad a[i] = b[i] + s * c[i] on doubles, 3 x 256 MiB (far beyond L3). GB/s with
// STREAM's byte count: 3 x 8 bytes per element (write-allocate traffic not counted).
double TriadGBs(int threads) {
  const int64_t n = int64_t{32} << 20;
  std::vector<double> a(n), b(n), c(n);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    a[i] = 0.0;
    b[i] = 1.0;
    c[i] = 2.0;
  }
  const double s = 3.0;
  const double secs = BestSeconds(8, [&] {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; ++i) a[i] = b[i] + s * c[i];
  });
  return 3.0 * 8.0 * n / secs / 1e9;
}

struct Shape {
  int64_t m, n, k;
};

std::vector<float> Random(int64_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(count);
  for (float& f : v) f = dist(rng);
  return v;
}

std::vector<BF16> RandomBF16(int64_t count, uint32_t seed) {
  const auto f = Random(count, seed);
  std::vector<BF16> out(count);
  ConvertF32ToBF16(f.data(), out.data(), count);
  return out;
}

// Operands for one shape, kept across thread counts.
struct Operands {
  Shape s;
  std::vector<float> x, wf, y;
  std::vector<BF16> wb;
  explicit Operands(Shape shape, bool f32, bool bf16) : s(shape) {
    x = Random(s.m * s.k, 1);
    y.assign(s.m * s.n, 0.0f);
    if (f32) wf = Random(s.n * s.k, 2);
    if (bf16) wb = RandomBF16(s.n * s.k, 3);
  }
};

const char* PrecisionName(MatmulPrecision p) {
  return p == MatmulPrecision::kExact ? "exact" : "fast";
}

struct Row {
  std::string kernel, shape;
  double value[2];  // 1 and 2 threads
  bool bandwidth;   // GB/s (with a triad ratio) or GFLOP/s
};

std::string ShapeText(const Shape& s) {
  return std::to_string(s.m) + "×" + std::to_string(s.n) + "×" + std::to_string(s.k);
}

void PrintTable(const std::vector<Row>& rows, const double triad[2]) {
  std::printf("| kernel | M×N×K | 1 thread | vs triad | 2 threads | vs triad |\n");
  std::printf("|---|---|---|---|---|---|\n");
  std::printf("| triad (STREAM bytes) | 3 × 256 MiB | %.1f GB/s | | %.1f GB/s | |\n", triad[0],
              triad[1]);
  for (const Row& r : rows) {
    if (r.bandwidth) {
      std::printf("| %s | %s | %.1f GB/s | %.0f %% | %.1f GB/s | %.0f %% |\n", r.kernel.c_str(),
                  r.shape.c_str(), r.value[0], 100 * r.value[0] / triad[0], r.value[1],
                  100 * r.value[1] / triad[1]);
    } else {
      std::printf("| %s | %s | %.0f GFLOP/s | | %.0f GFLOP/s | |\n", r.kernel.c_str(),
                  r.shape.c_str(), r.value[0], r.value[1]);
    }
    std::fflush(stdout);
  }
}

void GemvRows(Operands& o, std::vector<Row>& rows) {
  const Shape s = o.s;
  const CpuIsa active = ActiveCpuIsa();
  const double wbytes_bf16 = 2.0 * s.n * s.k, wbytes_f32 = 4.0 * s.n * s.k;
  auto add = [&](std::string name, double bytes, const std::function<void()>& f) {
    Row r{std::move(name), ShapeText(s), {0, 0}, true};
    for (int t = 1; t <= 2; ++t) {
      omp_set_num_threads(t);
      r.value[t - 1] = bytes / BestSeconds(10, f) / 1e9;
    }
    rows.push_back(r);
  };
  std::vector<CpuIsa> isas = {CpuIsa::kPortable};
  if (CpuSupports(CpuIsa::kAvx512)) isas.push_back(CpuIsa::kAvx512);
  if (CpuSupports(CpuIsa::kAvx512Bf16)) isas.push_back(CpuIsa::kAvx512Bf16);
  for (CpuIsa isa : isas) {
    if (isa > active) continue;
    for (auto p : {MatmulPrecision::kExact, MatmulPrecision::kFastBF16}) {
      if (p == MatmulPrecision::kFastBF16 && isa != CpuIsa::kAvx512Bf16) continue;
      const bool used = isa == PreferredBF16GemvIsa(p, active, s.m);
      add(std::string("GEMV bf16 ") + PrecisionName(p) + " [" + std::string(CpuIsaName(isa)) + "]" +
              (used ? " *" : ""),
          wbytes_bf16,
          [&] { GemvBF16(o.x.data(), s.m, s.k, o.wb.data(), s.n, o.y.data(), p, isa); });
    }
  }
  for (CpuIsa isa : isas) {
    if (isa > active || isa == CpuIsa::kAvx512Bf16) continue;
    const bool used = isa == std::min(active, CpuIsa::kAvx512);
    add(std::string("GEMV f32 [") + std::string(CpuIsaName(isa)) + "]" + (used ? " *" : ""),
        wbytes_f32, [&] { GemvF32(o.x.data(), s.m, s.k, o.wf.data(), s.n, o.y.data(), isa); });
  }
}

void GemmRows(Operands& o, std::vector<Row>& rows) {
  const Shape s = o.s;
  const double flops = 2.0 * s.m * s.n * s.k;
  const int reps = flops > 1e10 ? 3 : 8;
  auto add = [&](std::string name, const std::function<void()>& f) {
    Row r{std::move(name), ShapeText(s), {0, 0}, false};
    for (int t = 1; t <= 2; ++t) {
      omp_set_num_threads(t);
      r.value[t - 1] = flops / BestSeconds(reps, f) / 1e9;
    }
    rows.push_back(r);
  };
  add("GEMM f32", [&] { GemmF32(o.x.data(), s.m, s.k, o.wf.data(), s.n, o.y.data()); });
  add("GEMM bf16 fast", [&] {
    GemmBF16(o.x.data(), s.m, s.k, o.wb.data(), s.n, o.y.data(), MatmulPrecision::kFastBF16);
  });
  add("GEMM bf16 exact (stacked rows)", [&] {
    GemmBF16(o.x.data(), s.m, s.k, o.wb.data(), s.n, o.y.data(), MatmulPrecision::kExact,
             BF16ExactGemm::kStackedRows);
  });
  add("GEMM bf16 exact (sum post-op)", [&] {
    GemmBF16(o.x.data(), s.m, s.k, o.wb.data(), s.n, o.y.data(), MatmulPrecision::kExact,
             BF16ExactGemm::kSumPostOp);
  });
}

// Time per call of the GEMV kernels and of the GEMM path for M = 1..24 at a gemma2-2b shape.
void Sweep() {
  const int64_t n = 9216, k = 2304;
  Operands o({24, n, k}, true, true);
  const CpuIsa isa = ActiveCpuIsa();
  for (int t = 1; t <= 2; ++t) {
    omp_set_num_threads(t);
    std::printf("\n%d thread(s), N=%ld K=%ld, ms per call\n", t, n, k);
    std::printf(
        "| M | f32 gemv | f32 gemm | bf16 exact gemv avx512 | bf16 exact gemv bf16 | "
        "bf16 exact gemm | bf16 fast gemv | bf16 fast gemm |\n|---|---|---|---|---|---|---|"
        "---|\n");
    for (int64_t m : {1, 2, 4, 6, 8, 9, 12, 16, 24}) {
      float* y = o.y.data();
      const float* x = o.x.data();
      auto ms = [](const std::function<void()>& f) { return 1e3 * BestSeconds(5, f); };
      const CpuIsa f32isa = std::min(isa, CpuIsa::kAvx512);
      std::printf(
          "| %ld | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", m,
          ms([&] { GemvF32(x, m, k, o.wf.data(), n, y, f32isa); }),
          ms([&] { GemmF32(x, m, k, o.wf.data(), n, y); }),
          ms([&] { GemvBF16(x, m, k, o.wb.data(), n, y, MatmulPrecision::kExact, f32isa); }),
          ms([&] { GemvBF16(x, m, k, o.wb.data(), n, y, MatmulPrecision::kExact, isa); }),
          ms([&] { GemmBF16(x, m, k, o.wb.data(), n, y, MatmulPrecision::kExact); }),
          ms([&] { GemvBF16(x, m, k, o.wb.data(), n, y, MatmulPrecision::kFastBF16, isa); }),
          ms([&] { GemmBF16(x, m, k, o.wb.data(), n, y, MatmulPrecision::kFastBF16); }));
      std::fflush(stdout);
    }
  }
}

// --- int8 weights (MatMulInt8) ------------------------------------------------------------------

// Decode reads each layer's weights once per token, so by the next call of the same matrix the
// rest of the model has pushed it out of the 32 MiB L3. "Cold" figures cycle through enough
// copies of the weights (at least this many bytes) that every call streams them from memory;
// "warm" figures repeat one copy, as the GEMV table above does (small matrices then run from
// L2/L3).
constexpr double kColdBytes = 160e6;

std::vector<int8_t> RandomInt8(int64_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> grid(-127, 127);
  std::vector<int8_t> v(count);
  for (int8_t& q : v) q = static_cast<int8_t>(grid(rng));
  return v;
}

// `copies` copies of one weight matrix, handed out round-robin.
template <typename T>
struct WeightCopies {
  std::vector<std::vector<T>> copies;
  size_t next = 0;
  const T* Next() {
    const T* p = copies[next].data();
    next = (next + 1) % copies.size();
    return p;
  }
};

int ColdCopies(double bytes, bool cold) {
  return cold ? static_cast<int>(std::max(1.0, std::ceil(kColdBytes / bytes))) : 1;
}

struct Int8Case {
  const char* what;
  int64_t n, k;
};

// Gemma 3 270M (hidden 640, 4 query heads and 1 KV head of 256, MLP 2048, vocabulary 262144)
// and Gemma 2 2B (hidden 2304, MLP 9216).
const std::vector<Int8Case>& Int8Cases() {
  static const std::vector<Int8Case> cases = {
      {"270m q", 1024, 640},    {"270m k/v", 256, 640},     {"270m gate/up", 2048, 640},
      {"270m down", 640, 2048}, {"270m head", 262144, 640}, {"2b gate/up", 9216, 2304},
      {"2b down", 2304, 9216},
  };
  return cases;
}

struct TimedRow {
  std::string what, kernel, shape;
  double bytes;            // weight bytes per call
  double seconds[2];       // 1 and 2 threads
  double bf16_seconds[2];  // the bf16 kernel MatMul uses on the same shape (int8 rows), else 0
};

double Int8DecodeSeconds(int threads, const std::function<void()>& f) {
  omp_set_num_threads(threads);
  return BestSeconds(20, f);
}

std::vector<TimedRow> Int8DecodeRows(bool cold) {
  const CpuIsa active = ActiveCpuIsa();
  std::vector<TimedRow> rows;
  for (const Int8Case& c : Int8Cases()) {
    for (int64_t m : {1, 8}) {
      const double q_bytes = 1.0 * c.n * c.k, b_bytes = 2.0 * c.n * c.k;
      WeightCopies<int8_t> q;
      WeightCopies<BF16> b;
      for (int i = 0; i < ColdCopies(q_bytes, cold); ++i)
        q.copies.push_back(RandomInt8(c.n * c.k, 5 + i));
      for (int i = 0; i < ColdCopies(b_bytes, cold); ++i)
        b.copies.push_back(RandomBF16(c.n * c.k, 6 + i));
      const std::vector<float> scale = Random(c.n, 7);
      const std::vector<float> x = Random(m * c.k, 8);
      std::vector<float> y(m * c.n);
      const std::string shape = ShapeText({m, c.n, c.k});
      const CpuIsa bf16_isa = PreferredBF16GemvIsa(MatmulPrecision::kExact, active, m);
      TimedRow bf16{c.what, "bf16 exact [" + std::string(CpuIsaName(bf16_isa)) + "]",
                    shape,  b_bytes,
                    {0, 0}, {0, 0}};
      for (int t = 1; t <= 2; ++t) {
        bf16.seconds[t - 1] = Int8DecodeSeconds(t, [&] {
          GemvBF16(x.data(), m, c.k, b.Next(), c.n, y.data(), MatmulPrecision::kExact, bf16_isa);
        });
      }
      std::vector<CpuIsa> isas = {std::min(active, CpuIsa::kAvx512)};
      if (isas[0] != CpuIsa::kPortable) isas.push_back(CpuIsa::kPortable);
      for (CpuIsa isa : isas) {
        TimedRow r{c.what, "int8 [" + std::string(CpuIsaName(isa)) + "]",
                   shape,  q_bytes,
                   {0, 0}, {bf16.seconds[0], bf16.seconds[1]}};
        for (int t = 1; t <= 2; ++t) {
          r.seconds[t - 1] = Int8DecodeSeconds(
              t, [&] { GemvInt8(x.data(), m, c.k, q.Next(), scale.data(), c.n, y.data(), isa); });
        }
        rows.push_back(r);
      }
      rows.push_back(bf16);
    }
  }
  return rows;
}

void PrintInt8DecodeTable(const std::vector<TimedRow>& rows, const double triad[2]) {
  std::printf(
      "| matrix | kernel | M×N×K | 1 thread | vs triad | int8 speed-up | 2 threads | vs triad | "
      "int8 speed-up |\n|---|---|---|---|---|---|---|---|---|\n");
  for (const TimedRow& r : rows) {
    std::printf("| %s | %s | %s |", r.what.c_str(), r.kernel.c_str(), r.shape.c_str());
    for (int t = 0; t < 2; ++t) {
      const double gbs = r.bytes / r.seconds[t] / 1e9;
      std::printf(" %.1f GB/s (%.0f µs) | %.0f %% |", gbs, 1e6 * r.seconds[t],
                  100 * gbs / triad[t]);
      if (r.bf16_seconds[t] > 0) {
        std::printf(" %.2f× |", r.bf16_seconds[t] / r.seconds[t]);
      } else {
        std::printf(" |");
      }
    }
    std::printf("\n");
  }
  std::fflush(stdout);
}

void Int8Decode(int runs, bool cold) {
  double triad[2] = {0, 0};
  std::vector<TimedRow> best;
  for (int run = 0; run < runs; ++run) {
    for (int t = 1; t <= 2; ++t) triad[t - 1] = std::max(triad[t - 1], TriadGBs(t));
    std::vector<TimedRow> rows = Int8DecodeRows(cold);
    if (best.empty()) best = rows;
    for (size_t i = 0; i < rows.size(); ++i) {
      for (int t = 0; t < 2; ++t) {
        best[i].seconds[t] = std::min(best[i].seconds[t], rows[i].seconds[t]);
        if (rows[i].bf16_seconds[t] > 0)
          best[i].bf16_seconds[t] = std::min(best[i].bf16_seconds[t], rows[i].bf16_seconds[t]);
      }
    }
  }
  std::printf(
      "\nint8 decode GEMV, %s weights (GB/s of weight bytes; speed-up = bf16 time / int8 "
      "time); triad %.1f / %.1f GB/s\n\n",
      cold ? "cold" : "warm", triad[0], triad[1]);
  PrintInt8DecodeTable(best, triad);
}

// Prompt-sized products: int8 through MatMulInt8's panel GEMM and through the GEMV kernels
// (8 rows per weight pass), against the bf16 and f32 GEMMs on the same shape. GFLOP/s.
void Int8Prefill() {
  std::printf(
      "\nint8 prefill (GFLOP/s, 1 / 2 threads)\n\n| matrix | M×N×K | int8 panel GEMM * | "
      "int8 GEMV | bf16 exact GEMM | bf16 fast GEMM | f32 GEMM |\n|---|---|---|---|---|---|"
      "---|\n");
  const CpuIsa isa = std::min(ActiveCpuIsa(), CpuIsa::kAvx512);
  for (const Int8Case& c : Int8Cases()) {
    for (int64_t m : {128, 512}) {
      const bool head = c.n > 100000;
      if (head && m > 128) continue;
      const std::vector<int8_t> q = RandomInt8(c.n * c.k, 5);
      const std::vector<BF16> b = RandomBF16(c.n * c.k, 6);
      const std::vector<float> wf = head ? std::vector<float>() : Random(c.n * c.k, 9);
      const std::vector<float> scale = Random(c.n, 7);
      const std::vector<float> x = Random(m * c.k, 8);
      std::vector<float> y(m * c.n);
      const double flops = 2.0 * m * c.n * c.k;
      const int reps = flops > 2e10 ? 2 : flops > 2e9 ? 4 : 8;
      auto cell = [&](const std::function<void()>& f) {
        std::string text;
        for (int t = 1; t <= 2; ++t) {
          omp_set_num_threads(t);
          char buf[32];
          std::snprintf(buf, sizeof buf, "%s%.0f", t == 1 ? "" : " / ",
                        flops / BestSeconds(reps, f) / 1e9);
          text += buf;
        }
        return text;
      };
      const float* xp = x.data();
      float* yp = y.data();
      const std::string panel =
          cell([&] { GemmInt8(xp, m, c.k, q.data(), scale.data(), c.n, yp); });
      const std::string gemv =
          cell([&] { GemvInt8(xp, m, c.k, q.data(), scale.data(), c.n, yp, isa); });
      const std::string exact =
          cell([&] { GemmBF16(xp, m, c.k, b.data(), c.n, yp, MatmulPrecision::kExact); });
      const std::string fast =
          cell([&] { GemmBF16(xp, m, c.k, b.data(), c.n, yp, MatmulPrecision::kFastBF16); });
      const std::string f32 =
          head ? std::string("-") : cell([&] { GemmF32(xp, m, c.k, wf.data(), c.n, yp); });
      std::printf("| %s | %s | %s | %s | %s | %s | %s |\n", c.what,
                  ShapeText({m, c.n, c.k}).c_str(), panel.c_str(), gemv.c_str(), exact.c_str(),
                  fast.c_str(), f32.c_str());
      std::fflush(stdout);
    }
  }
}

// Time per call of the int8 GEMV kernels and of the panel GEMM over M (cold weights), and the
// panel GEMM over its panel size: picks Int8GemvMaxRows() and the default panel.
void Int8Sweep() {
  const CpuIsa isa = std::min(ActiveCpuIsa(), CpuIsa::kAvx512);
  for (Int8Case c : {Int8Case{"2b gate/up", 9216, 2304}, Int8Case{"2b down", 2304, 9216},
                     Int8Case{"270m gate/up", 2048, 640}}) {
    WeightCopies<int8_t> q;
    for (int i = 0; i < ColdCopies(1.0 * c.n * c.k, true); ++i)
      q.copies.push_back(RandomInt8(c.n * c.k, 5 + i));
    const std::vector<float> scale = Random(c.n, 7);
    const std::vector<float> x = Random(512 * c.k, 8);
    std::vector<float> y(512 * c.n);
    auto ms = [](const std::function<void()>& f) { return 1e3 * BestSeconds(5, f); };
    for (int t = 1; t <= 2; ++t) {
      omp_set_num_threads(t);
      std::printf("\n%s N=%ld K=%ld, %d thread(s), ms per call (cold weights)\n", c.what, c.n, c.k,
                  t);
      std::printf("| M | int8 GEMV | int8 panel GEMM |\n|---|---|---|\n");
      for (int64_t m : {1, 2, 4, 8, 9, 16, 24, 32, 48, 64, 80, 96, 128, 192}) {
        const double gemv =
            ms([&] { GemvInt8(x.data(), m, c.k, q.Next(), scale.data(), c.n, y.data(), isa); });
        const double gemm =
            ms([&] { GemmInt8(x.data(), m, c.k, q.Next(), scale.data(), c.n, y.data()); });
        std::printf("| %ld | %.3f | %.3f |\n", m, gemv, gemm);
        std::fflush(stdout);
      }
      std::printf(
          "\npanel rows (GFLOP/s)\n| M | 16 | 32 | 64 | 128 | 256 | 512 | default |\n"
          "|---|---|---|---|---|---|---|---|\n");
      for (int64_t m : {128, 512}) {
        std::printf("| %ld |", m);
        for (int64_t panel : {16, 32, 64, 128, 256, 512, 0}) {
          const double s = BestSeconds(
              4, [&] { GemmInt8(x.data(), m, c.k, q.Next(), scale.data(), c.n, y.data(), panel); });
          std::printf(" %.0f |", 2.0 * m * c.n * c.k / s / 1e9);
        }
        std::printf("\n");
        std::fflush(stdout);
      }
    }
  }
}

int Main(int argc, char** argv) {
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%d", std::localtime(&now));
  std::printf("CPU: %s, %d cores visible; %s\n", CpuModel().c_str(), omp_get_num_procs(), date);
  const CpuIsa active = ActiveCpuIsa();
  std::printf(
      "GEMV ISA: detected %s, active %s; rows marked * are the kernels MatMul uses at M=1\n",
      std::string(CpuIsaName(DetectedCpuIsa())).c_str(), std::string(CpuIsaName(active)).c_str());
  if (argc > 1 && std::strcmp(argv[1], "--sweep") == 0) {
    Sweep();
    return 0;
  }
  if (argc > 1 && std::strcmp(argv[1], "--int8-sweep") == 0) {
    Int8Sweep();
    return 0;
  }
  if (argc > 1 && std::strcmp(argv[1], "--int8") == 0) {
    const int int8_runs = argc > 3 && std::strcmp(argv[2], "--runs") == 0 ? std::atoi(argv[3]) : 1;
    Int8Decode(int8_runs, /*cold=*/true);
    Int8Decode(1, /*cold=*/false);
    Int8Prefill();
    return 0;
  }
  bool gemv_only = false;
  int runs = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--gemv") == 0) gemv_only = true;
    if (std::strcmp(argv[i], "--runs") == 0 && i + 1 < argc) runs = std::atoi(argv[++i]);
  }
  std::printf("best of %d run(s), each figure best of 3-10 repetitions\n\n", runs);
  // Whole runs repeated, keeping each figure's best: on a shared machine the quiet moments of
  // different figures rarely coincide within one run.
  double triad[2] = {0, 0};
  std::vector<Row> best;
  for (int run = 0; run < runs; ++run) {
    for (int t = 1; t <= 2; ++t) triad[t - 1] = std::max(triad[t - 1], TriadGBs(t));
    std::vector<Row> rows;
    for (Shape s : {Shape{1, 9216, 2304}, Shape{1, 16384, 4096}}) {
      Operands o(s, true, true);
      GemvRows(o, rows);
    }
    for (Shape s : {Shape{1024, 1024, 1024}, Shape{512, 9216, 2304}}) {
      if (gemv_only) break;
      Operands o(s, true, true);
      GemmRows(o, rows);
    }
    if (best.empty()) best = rows;
    for (size_t i = 0; i < rows.size(); ++i)
      for (int t = 0; t < 2; ++t) best[i].value[t] = std::max(best[i].value[t], rows[i].value[t]);
  }
  PrintTable(best, triad);
  return 0;
}

}  // namespace
}  // namespace gemmapod::cpu

int main(int argc, char** argv) { return gemmapod::cpu::Main(argc, argv); }
