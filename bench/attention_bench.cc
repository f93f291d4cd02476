// The CPU attention kernel alone, at the shapes the models run it: a causal prefill (Gemma 2 2B:
// 8 query heads over 4 key/value heads of 256, soft-capped) and decode steps over a long cache
// (one query per head; Gemma 2 2B's global layer, RecurrentGemma's 2049-key local window).
// Prints GFLOP/s (2 multiply-adds per query, key and feature: q.k and p.v) and, for decode, the
// GB/s of keys and values read.
//
//   OMP_NUM_THREADS=2 build/bench/attention_bench [--prompt 2048] [--context 32768] [--reps 5]
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "bench/bench_util.h"
#include "runtime/cpu/attention.h"

namespace gemmapod {
namespace {

using bench::Now;

std::vector<float> Random(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& f : v) f = dist(rng);
  return v;
}

struct Shape {
  const char* name;
  int64_t heads, kv_heads, head_dim;
  float softcap;
};

// Best seconds of `reps` calls: n queries at the end of `keys` positions, causal.
double Time(const Shape& s, int64_t n, int64_t keys, int reps) {
  const int64_t row = s.kv_heads * s.head_dim;
  const std::vector<float> k = Random(keys * row, 1), v = Random(keys * row, 2);
  const std::vector<float> q = Random(n * s.heads * s.head_dim, 3);
  std::vector<float> out(q.size());
  std::vector<int64_t> lo(static_cast<size_t>(n), 0), hi(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) hi[static_cast<size_t>(i)] = keys - n + i + 1;
  const cpu::AttentionProblem p{
      s.heads,  s.kv_heads, s.head_dim, row, 1.0f / std::sqrt(static_cast<float>(s.head_dim)),
      s.softcap};
  const cpu::KeyRun run{k.data(), v.data(), 0, keys, nullptr};
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const double t0 = Now();
    cpu::Attention(p, q.data(), n, &run, 1, lo.data(), hi.data(), out.data());
    best = std::min(best, Now() - t0);
  }
  return best;
}

int Main(int argc, char** argv) {
  const bench::Flags flags(argc, argv,
                           {{"--prompt", "2048"}, {"--context", "32768"}, {"--reps", "5"}});
  const int64_t prompt = flags.Int("--prompt"), context = flags.Int("--context");
  const int reps = static_cast<int>(flags.Int("--reps"));
  const Shape gemma2{"gemma2-2b", 8, 4, 256, 50.0f};
  const Shape griffin{"recurrentgemma-2b local", 10, 1, 256, 0.0f};
  const Shape gemma3{"gemma3-270m", 4, 1, 256, 0.0f};
  std::printf("threads: %d\n\n", omp_get_max_threads());
  std::printf("| case | queries × keys | ms | GFLOP/s | K+V GB/s |\n|---|---|---|---|---|\n");
  auto report = [&](const Shape& s, const char* what, int64_t n, int64_t keys) {
    const double t = Time(s, n, keys, reps);
    // Visible pairs: causal over the last n positions.
    const double pairs = static_cast<double>(n) * static_cast<double>(keys - n) +
                         static_cast<double>(n) * static_cast<double>(n + 1) / 2;
    const double flops = 4.0 * pairs * static_cast<double>(s.heads * s.head_dim);
    const double bytes = 2.0 * static_cast<double>(keys * s.kv_heads * s.head_dim) * 4;
    std::printf("| %s %s | %lld × %lld | %.2f | %.1f | %.1f |\n", s.name, what,
                static_cast<long long>(n), static_cast<long long>(keys), t * 1e3, flops / t / 1e9,
                bytes / t / 1e9);
  };
  report({"gemma2-2b without soft-cap", 8, 4, 256, 0.0f}, "prefill", prompt, prompt);
  report(gemma2, "prefill", prompt, prompt);
  report(gemma3, "prefill", prompt, prompt);
  report(gemma2, "decode", 1, context);
  report(gemma3, "decode", 1, context);
  report(griffin, "decode", 1, 2049);
  return 0;
}

}  // namespace
}  // namespace gemmapod

int main(int argc, char** argv) {
  try {
    return gemmapod::Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "attention_bench: %s\n", e.what());
    return 1;
  }
}
