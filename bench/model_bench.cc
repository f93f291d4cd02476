// Model benchmark on one rank: prefill and decode speed of a published Gemma shape with random
// weights (configs/models/*.yaml), next to the memory-bandwidth roofline of decode (every weight
// byte read once per token). Prints a markdown row for docs/performance.md.
//
//   build/bench/model_bench --config configs/models/gemma2-2b.yaml [--dtype bf16|f32]
//       [--precision exact|fast] [--prompt 128] [--decode 32] [--batch 1]
#include <cstdio>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "models/gemma/gemma_decoder.h"
#include "models/gemma/gemma_random.h"
#include "runtime/error.h"

namespace gemmapod {
namespace {

using bench::Now;
using bench::TriadGBs;

int Main(int argc, char** argv) {
  const bench::Flags flags(argc, argv,
                           {{"--config", "configs/models/gemma2-2b.yaml"},
                            {"--dtype", "bf16"},
                            {"--precision", "exact"},
                            {"--prompt", "128"},
                            {"--decode", "32"},
                            {"--batch", "1"}});
  const std::string config_path = flags.Get("--config"), dtype = flags.Get("--dtype"),
                    precision = flags.Get("--precision");
  const int64_t prompt = flags.Int("--prompt"), decode = flags.Int("--decode"),
                batch = flags.Int("--batch");
  const ModelConfig config = LoadModelConfigYaml(config_path);
  const DType weight_dtype = ParseDType(dtype);
  const double t_init = Now();
  GemmaDecoder model(config, RandomGemmaWeights(config, weight_dtype, 1));
  model.set_matmul_precision(precision == "fast" ? cpu::MatmulPrecision::kFastBF16
                                                 : cpu::MatmulPrecision::kExact);
  std::fprintf(stderr, "model_bench: %s, %s weights, built in %.1f s\n", config.name.c_str(),
               dtype.c_str(), Now() - t_init);

  std::vector<SequenceChunk> chunks;
  for (int64_t s = 0; s < batch; ++s) {
    chunks.push_back({s, bench::PromptTokens(prompt, s, config.vocab_size)});
  }
  {
    // A warm-up prefill of the same shape on a cache of its own: oneDNN builds its kernels for
    // each new shape on first use, and buffers are touched for the first time.
    KvCache warm(config, batch, prompt + decode);
    model.Forward(chunks, warm, LogitRows::kLastToken);
  }
  KvCache cache(config, batch, prompt + decode);
  const double t0 = Now();
  model.Forward(chunks, cache, LogitRows::kLastToken);
  const double prefill = Now() - t0;

  std::vector<SequenceChunk> step;
  for (int64_t s = 0; s < batch; ++s) step.push_back({s, {5}});
  const double t1 = Now();
  for (int64_t i = 0; i < decode; ++i) model.Forward(step, cache, LogitRows::kLastToken);
  const double per_step = (Now() - t1) / static_cast<double>(decode);

  // Decode reads every matrix once per step, the embedding as the output head included.
  const double weight_bytes =
      static_cast<double>(config.ParameterCount()) * static_cast<double>(DTypeSize(weight_dtype));
  const double triad = TriadGBs();
  const double roofline_ms = weight_bytes / (triad * 1e9) * 1e3;
  std::printf(
      "| model | weights | precision | batch | prefill tokens/s | decode ms/step | decode "
      "tokens/s | roofline ms/step (weights / triad %.1f GB/s) | of roofline |\n",
      triad);
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  std::printf("| %s | %s, %.2f GB | %s | %lld | %.1f | %.1f | %.2f | %.1f | %.0f %% |\n",
              config.name.c_str(), dtype.c_str(), weight_bytes / 1e9, precision.c_str(),
              static_cast<long long>(batch), static_cast<double>(batch * prompt) / prefill,
              per_step * 1e3, static_cast<double>(batch) / per_step, roofline_ms,
              100.0 * roofline_ms / (per_step * 1e3));
  return 0;
}

}  // namespace
}  // namespace gemmapod

int main(int argc, char** argv) {
  try {
    return gemmapod::Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "model_bench: %s\n", e.what());
    return 1;
  }
}
