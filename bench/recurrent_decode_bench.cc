// Decode tokens/s at a given context, RecurrentGemma against a transformer: the seed's claim is
// that RecurrentGemma's throughput stays flat as the text grows (a fixed-size state) while the
// transformer's falls (attention over a KV cache that grows with the context).
//
//   build/bench/recurrent_decode_bench --model recurrent --config
//   configs/models/recurrentgemma-2b.yaml build/bench/recurrent_decode_bench --model gemma --config
//   configs/models/gemma2-2b.yaml
//       [--contexts 0,2048,8192,32768] [--decode 16] [--dtype bf16]
//
// Both models have random weights. The state at context N is filled with random numbers as if N
// tokens of one document had been read (RecurrentGemmaState::FillForBenchmark; the Gemma KV cache
// written directly and advanced): a decode step costs what the state holds, never what its values
// are, and prefilling 32k tokens on a CPU would take hours. Prints a markdown table.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "models/gemma/gemma_decoder.h"
#include "models/gemma/gemma_random.h"
#include "models/recurrent_gemma/recurrent_gemma.h"
#include "runtime/error.h"

namespace gemmapod {
namespace {

using bench::Now;

std::vector<int64_t> ParseList(const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(std::stoll(item));
  return out;
}

// Random weights at N(0, 1/fan_in)-like scales (uniform), matrices in `dtype`.
RecurrentGemmaWeights RandomRecurrentWeights(const RecurrentGemmaConfig& c, DType dtype) {
  RecurrentGemmaWeights w;
  uint32_t x = 12345;
  ForEachRecurrentGemmaParameter(c, w, [&](const RecurrentGemmaParameter& p, Tensor& slot) {
    Tensor t = Tensor::Zeros(p.shape, DType::kF32);
    const float a = p.shape.size() == 2 ? 1.7f / std::sqrt(static_cast<float>(p.shape[1])) : 0.1f;
    float* v = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i) {
      x = x * 1664525u + 1013904223u;
      v[i] = (static_cast<float>(x >> 8) / 8388608.0f - 1.0f) * a;
    }
    const bool matrix = IsRecurrentGemmaMatrix(p);
    slot = matrix && dtype != DType::kF32 ? t.To(dtype) : std::move(t);
  });
  return w;
}

double RecurrentStepSeconds(RecurrentGemma& model, int64_t context, int64_t steps) {
  RecurrentGemmaState state(model.config(), 1);
  state.FillForBenchmark(0, context, 7);
  model.Forward({0, {5}, {}}, state, false);  // warm-up
  const double t0 = Now();
  for (int64_t i = 0; i < steps; ++i) model.Forward({0, {5}, {}}, state, false);
  return (Now() - t0) / static_cast<double>(steps);
}

double GemmaStepSeconds(GemmaDecoder& model, int64_t context, int64_t steps, size_t& cache_bytes) {
  const ModelConfig& c = model.config();
  KvCache cache(c, 1, context + steps + 1);
  uint32_t x = 99;
  const int64_t row = cache.kv_heads() * cache.head_dim();
  for (int64_t l = 0; l < c.num_layers; ++l) {
    LayerKv kv = cache.Layer(0, l);
    // The positions a step at `context` reads (a sliding ring's last ones; earlier ones share
    // rows).
    for (int64_t p = std::max<int64_t>(0, context - cache.LayerCapacity(l)); p < context; ++p) {
      const int64_t r = kv.blocks[static_cast<size_t>(p / kv.block_tokens)] * kv.block_tokens +
                        p % kv.block_tokens;
      for (int64_t i = r * row; i < (r + 1) * row; ++i) {
        x = x * 1664525u + 1013904223u;
        kv.keys.data<float>()[i] = static_cast<float>(x >> 8) / 16777216.0f - 0.5f;
        kv.values.data<float>()[i] = static_cast<float>(x >> 9) / 8388608.0f - 0.5f;
      }
    }
  }
  cache.Advance(0, context);
  cache_bytes = cache.bytes();
  model.Forward({{SequenceChunk{0, {5}}}}, cache, LogitRows::kLastToken);  // warm-up
  const double t0 = Now();
  for (int64_t i = 0; i < steps; ++i) {
    model.Forward({{SequenceChunk{0, {5}}}}, cache, LogitRows::kLastToken);
  }
  return (Now() - t0) / static_cast<double>(steps);
}

int Main(int argc, char** argv) {
  const bench::Flags flags(argc, argv,
                           {{"--model", "recurrent"},
                            {"--config", "configs/models/recurrentgemma-2b.yaml"},
                            {"--contexts", "0,2048,8192,32768"},
                            {"--decode", "16"},
                            {"--dtype", "bf16"}});
  const std::string which = flags.Get("--model"), config_path = flags.Get("--config");
  const std::vector<int64_t> contexts = ParseList(flags.Get("--contexts"));
  const int64_t steps = flags.Int("--decode");
  const DType dtype = ParseDType(flags.Get("--dtype"));
  GEMMAPOD_CHECK(which == "recurrent" || which == "gemma", "--model must be recurrent or gemma");
  std::printf("| model | context | decode ms/token | decode tokens/s | state or KV cache |\n");
  std::printf("|---|---|---|---|---|\n");
  if (which == "recurrent") {
    const RecurrentGemmaConfig config = LoadRecurrentGemmaConfigYaml(config_path);
    RecurrentGemma model(config, RandomRecurrentWeights(config, dtype));
    for (int64_t n : contexts) {
      const double s = RecurrentStepSeconds(model, n, steps);
      RecurrentGemmaState state(config, 1);
      std::printf("| %s | %lld | %.1f | %.2f | %.1f MiB |\n", config.name.c_str(),
                  static_cast<long long>(n), s * 1e3, 1.0 / s, state.bytes() / 1048576.0);
      std::fflush(stdout);
    }
  } else {
    ModelConfig config = LoadModelConfigYaml(config_path);
    // Gemma 2 stops at 8192 positions; the shape is measured past it (the cost of a step does not
    // depend on what RoPE would make of the positions), and the table says so.
    const int64_t longest = *std::max_element(contexts.begin(), contexts.end()) + steps + 2;
    if (longest > config.max_position_embeddings) {
      std::fprintf(stderr, "recurrent_decode_bench: %s measured past its %lld positions\n",
                   config.name.c_str(), static_cast<long long>(config.max_position_embeddings));
      config.max_position_embeddings = longest;
    }
    GemmaDecoder model(config, RandomGemmaWeights(config, dtype, 1));
    for (int64_t n : contexts) {
      size_t bytes = 0;
      const double s = GemmaStepSeconds(model, n, steps, bytes);
      std::printf("| %s | %lld | %.1f | %.2f | %.1f MiB |\n", config.name.c_str(),
                  static_cast<long long>(n), s * 1e3, 1.0 / s, bytes / 1048576.0);
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace
}  // namespace gemmapod

int main(int argc, char** argv) {
  try {
    return gemmapod::Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "recurrent_decode_bench: %s\n", e.what());
    return 1;
  }
}
