// The attention kernel family against a double-precision softmax over exactly the keys each query
// may see, on every kernel family the CPU has, over odd shapes; and the invariances the sharded
// models rely on (a head's result does not depend on the other heads, the batch or the threads).
#include "runtime/cpu/attention.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "runtime/cpu/gemv.h"
#include "tests/error_of.h"
#include "tests/runtime/cpu/matmul_reference.h"

namespace gemmapod::cpu {
namespace {

using testing::RandomFloats;

// Keys and values of positions [0, positions) laid out as a ring of `capacity` rows plus a block
// of new rows, the way a KV cache holds them, so the runs of a problem wrap.
struct KeyStore {
  int64_t stride = 0;
  std::vector<float> keys, values;  // [positions, stride], by position
  std::vector<uint8_t> valid;       // per position
};

struct Case {
  int64_t heads, kv_heads, head_dim;
  float softcap;
  int64_t queries, positions;
};

// Runs cut from the store: [0, split) as one run, [split, positions) as another whose first row
// sits elsewhere in memory (copied), so the kernel must follow the runs, not assume contiguity.
struct Runs {
  std::vector<float> second_k, second_v;
  std::vector<KeyRun> runs;
};

Runs MakeRuns(const KeyStore& s, int64_t positions, int64_t split, bool with_valid) {
  Runs r;
  split = std::min(split, positions);
  r.second_k.assign(s.keys.begin() + split * s.stride, s.keys.begin() + positions * s.stride);
  r.second_v.assign(s.values.begin() + split * s.stride, s.values.begin() + positions * s.stride);
  // Listed out of order on purpose: the kernel sorts them.
  r.runs.push_back({r.second_k.data(), r.second_v.data(), split, positions - split,
                    with_valid ? s.valid.data() + split : nullptr});
  r.runs.push_back(
      {s.keys.data(), s.values.data(), 0, split, with_valid ? s.valid.data() : nullptr});
  return r;
}

KeyStore MakeStore(int64_t positions, int64_t kv_heads, int64_t head_dim, uint32_t seed) {
  KeyStore s;
  s.stride = kv_heads * head_dim + 3;  // padded rows: the stride is not the row width
  s.keys = RandomFloats(positions * s.stride, seed, 1.5f);
  s.values = RandomFloats(positions * s.stride, seed + 1, 1.0f);
  s.valid.resize(static_cast<size_t>(positions));
  for (int64_t p = 0; p < positions; ++p) s.valid[p] = (p * 7 + seed) % 5 != 0;
  return s;
}

std::vector<double> Reference(const AttentionProblem& p, const std::vector<float>& q, int64_t n,
                              const KeyStore& s, bool with_valid, const std::vector<int64_t>& lo,
                              const std::vector<int64_t>& hi, int64_t positions) {
  const int64_t H = p.num_heads, hd = p.head_dim, group = H / p.num_kv_heads;
  std::vector<double> out(static_cast<size_t>(n * H * hd), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / group;
      std::vector<int64_t> seen;
      std::vector<double> scores;
      for (int64_t j = std::max<int64_t>(0, lo[i]); j < std::min(hi[i], positions); ++j) {
        if (with_valid && s.valid[j] == 0) continue;
        double dot = 0;
        for (int64_t e = 0; e < hd; ++e) {
          dot += double{q[(i * H + h) * hd + e]} * s.keys[j * s.stride + g * hd + e];
        }
        double score = dot * p.scale;
        if (p.softcap > 0) score = p.softcap * std::tanh(score / p.softcap);
        seen.push_back(j);
        scores.push_back(score);
      }
      if (seen.empty()) continue;
      const double m = *std::max_element(scores.begin(), scores.end());
      double sum = 0;
      for (double& x : scores) sum += (x = std::exp(x - m));
      for (size_t k = 0; k < seen.size(); ++k) {
        for (int64_t e = 0; e < hd; ++e) {
          out[(i * H + h) * hd + e] += scores[k] / sum * s.values[seen[k] * s.stride + g * hd + e];
        }
      }
    }
  }
  return out;
}

// The kernel families to run: the portable one always, AVX-512 where the CPU has it.
std::vector<std::string> Families() {
  std::vector<std::string> f = {"portable"};
  if (CpuSupports(CpuIsa::kAvx512)) f.push_back("avx512");
  return f;
}

class ScopedIsa {
 public:
  explicit ScopedIsa(const std::string& isa) { setenv("GEMMAPOD_CPU_ISA", isa.c_str(), 1); }
  ~ScopedIsa() { unsetenv("GEMMAPOD_CPU_ISA"); }
};

std::vector<float> RunAttention(const AttentionProblem& p, const std::vector<float>& q, int64_t n,
                                const Runs& r, const std::vector<int64_t>& lo,
                                const std::vector<int64_t>& hi) {
  std::vector<float> out(static_cast<size_t>(n * p.num_heads * p.head_dim), -7.0f);
  Attention(p, q.data(), n, r.runs.data(), static_cast<int64_t>(r.runs.size()), lo.data(),
            hi.data(), out.data());
  return out;
}

TEST(Attention, MatchesReferenceOverOddShapes) {
  const Case cases[] = {
      {4, 2, 16, 0, 5, 40},        // GQA, one tile per head group
      {3, 3, 24, 0, 7, 33},        // MHA, head_dim off the vector width
      {8, 1, 256, 50.0f, 3, 700},  // MQA, Gemma's head_dim, soft-capped, > one key chunk
      {10, 1, 256, 0, 1, 2049},    // Griffin's decode: ten heads on one key/value head
      {2, 1, 8, 3.0f, 37, 53},     // many queries, a tiny head, a cap that bites
      {6, 2, 48, 0, 19, 1100},     // tiles of mixed queries and heads over several chunks
  };
  uint32_t seed = 10;
  for (const Case& c : cases) {
    for (const bool with_valid : {false, true}) {
      const KeyStore store = MakeStore(c.positions, c.kv_heads, c.head_dim, seed++);
      const Runs runs = MakeRuns(store, c.positions, c.positions / 3 + 1, with_valid);
      AttentionProblem p{c.heads,
                         c.kv_heads,
                         c.head_dim,
                         store.stride,
                         1.0f / std::sqrt(static_cast<float>(c.head_dim)),
                         c.softcap};
      const std::vector<float> q = RandomFloats(c.queries * c.heads * c.head_dim, seed++, 2.0f);
      // Causal-like windows, a bidirectional window, a query that sees nothing and one whose
      // range runs past the keys held.
      std::vector<int64_t> lo(c.queries), hi(c.queries);
      for (int64_t i = 0; i < c.queries; ++i) {
        const int64_t at = c.positions - c.queries + i;
        lo[i] = i % 3 == 0 ? 0 : std::max<int64_t>(0, at - 29);
        hi[i] = i % 4 == 1 ? at + 40 : at + 1;
      }
      if (c.queries > 2) lo[2] = hi[2] = 5;
      const std::vector<double> want =
          Reference(p, q, c.queries, store, with_valid, lo, hi, c.positions);
      for (const std::string& family : Families()) {
        ScopedIsa isa(family);
        const std::vector<float> got = RunAttention(p, q, c.queries, runs, lo, hi);
        double worst = 0;
        for (size_t k = 0; k < want.size(); ++k) {
          worst = std::max(worst, std::fabs(got[k] - want[k]));
        }
        EXPECT_LT(worst, 2e-6) << family << " H=" << c.heads << " KV=" << c.kv_heads
                               << " hd=" << c.head_dim << " cap=" << c.softcap
                               << " valid=" << with_valid;
        if (c.queries > 2) {  // the query that sees nothing: zeros, not the -7 it started with
          for (int64_t e = 0; e < c.heads * c.head_dim; ++e) {
            ASSERT_EQ(got[2 * c.heads * c.head_dim + e], 0.0f) << family;
          }
        }
      }
    }
  }
}

// What tensor-parallel ranks, batching and OpenMP threads change must not change a head's bits.
TEST(Attention, AHeadsResultDependsOnlyOnItsOwnInputs) {
  const int64_t H = 8, KV = 2, hd = 64, n = 3, positions = 1500;
  const KeyStore store = MakeStore(positions, KV, hd, 91);
  const Runs runs = MakeRuns(store, positions, 600, true);
  const AttentionProblem whole{H, KV, hd, store.stride, 0.125f, 30.0f};
  const std::vector<float> q = RandomFloats(n * H * hd, 92);
  const std::vector<int64_t> lo = {0, 200, 1000}, hi = {1498, 1499, 1500};
  for (const std::string& family : Families()) {
    ScopedIsa isa(family);
    const int threads = omp_get_max_threads();
    omp_set_num_threads(2);
    const std::vector<float> base = RunAttention(whole, q, n, runs, lo, hi);
    omp_set_num_threads(1);
    EXPECT_EQ(RunAttention(whole, q, n, runs, lo, hi), base) << family << ": 1 thread vs 2";
    omp_set_num_threads(threads);

    // The second key/value head's query heads alone, as the second of two tp ranks holds them.
    AttentionProblem half = whole;
    half.num_heads = H / 2;
    half.num_kv_heads = 1;
    std::vector<float> q_half(static_cast<size_t>(n * H / 2 * hd));
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(q_half.data() + i * (H / 2) * hd, q.data() + (i * H + H / 2) * hd,
                  (H / 2) * hd * sizeof(float));
    }
    Runs shifted = runs;  // that rank's cache holds only its head: point past the first head
    for (KeyRun& r : shifted.runs) {
      r.keys += hd;
      r.values += hd;
    }
    const std::vector<float> got_half = RunAttention(half, q_half, n, shifted, lo, hi);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t k = 0; k < (H / 2) * hd; ++k) {
        ASSERT_EQ(got_half[i * (H / 2) * hd + k], base[(i * H + H / 2) * hd + k])
            << family << ": query " << i;
      }
    }
    // The last query alone, as a batch of one.
    const std::vector<float> q_last(q.end() - H * hd, q.end());
    const std::vector<float> got_last = RunAttention(whole, q_last, 1, runs, {lo[2]}, {hi[2]});
    EXPECT_TRUE(std::equal(got_last.begin(), got_last.end(), base.end() - H * hd)) << family;
  }
}

TEST(Attention, MalformedProblemsAreNamed) {
  const KeyStore store = MakeStore(20, 1, 16, 3);
  const std::vector<float> q = RandomFloats(3 * 16, 4);
  std::vector<float> out(3 * 16);
  const std::vector<int64_t> lo = {0}, hi = {20};
  KeyRun overlapping[2] = {{store.keys.data(), store.values.data(), 0, 10, nullptr},
                           {store.keys.data(), store.values.data(), 5, 10, nullptr}};
  EXPECT_NE(ErrorOf([&] {
              Attention({1, 1, 16, store.stride, 1, 0}, q.data(), 1, overlapping, 2, lo.data(),
                        hi.data(), out.data());
            }).find("key runs overlap at position 5"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] {
              Attention({3, 2, 16, store.stride, 1, 0}, q.data(), 1, overlapping, 1, lo.data(),
                        hi.data(), out.data());
            }).find("3 query heads do not group over 2"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] {
              Attention({1, 1, 16, 8, 1, 0}, q.data(), 1, overlapping, 1, lo.data(), hi.data(),
                        out.data());
            }).find("key row stride 8"),
            std::string::npos);
}

}  // namespace
}  // namespace gemmapod::cpu
