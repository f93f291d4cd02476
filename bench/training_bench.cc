// Fine-tuning speed on one rank: full training steps (forward, backward, AdamW) of a published
// Gemma shape with random f32 weights (configs/models/*.yaml; --layers cuts the stack to fit
// memory), on a batch where every token is a target, so the work is the same as a PyTorch step
// on that batch (bench/torch_training_bench.py runs the same shape). Prints tokens/s with the
// split between forward+backward and the optimizer, and a markdown row for docs/performance.md.
//
//   OMP_NUM_THREADS=2 build/bench/training_bench --config configs/models/gemma3-270m.yaml
//       [--layers N] [--sequences 4] [--length 128] [--steps 4]
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "models/gemma/gemma_random.h"
#include "models/gemma/model_config_yaml.h"
#include "runtime/error.h"
#include "training/adamw.h"
#include "training/gemma_lm.h"

namespace gemmapod {
namespace {

using bench::Now;

int Main(int argc, char** argv) {
  const bench::Flags flags(argc, argv,
                           {{"--config", "configs/models/gemma3-270m.yaml"},
                            {"--layers", "0"},
                            {"--sequences", "4"},
                            {"--length", "128"},
                            {"--steps", "4"}});
  ModelConfig config = LoadModelConfigYaml(flags.Get("--config"));
  if (flags.Int("--layers") > 0) {
    config.num_layers = flags.Int("--layers");
    config.layer_kinds.resize(static_cast<size_t>(config.num_layers));
  }
  const int64_t sequences = flags.Int("--sequences"), length = flags.Int("--length"),
                steps = flags.Int("--steps");
  GemmaWeights weights = RandomGemmaWeights(config, DType::kF32, 1);
  GemmaGrads grads = GemmaGrads::ZerosFor(config, weights);
  AdamW optimizer({0.9f, 0.999f, 1e-8f, 0.0f});
  AddGemmaParameters(optimizer, config, weights, grads);
  std::vector<std::vector<int32_t>> batch_tokens;
  for (int64_t s = 0; s < sequences; ++s) {
    batch_tokens.push_back(bench::PromptTokens(length, s, config.vocab_size));
  }
  const PackedBatch batch = PackSequences(batch_tokens);
  const double scale = 1.0 / static_cast<double>(CountTargets(batch));
  std::vector<double> step_s, backward_s;
  for (int64_t step = 0; step <= steps; ++step) {  // step 0 warms up (oneDNN builds kernels)
    const double t0 = Now();
    GemmaLossAndGradients(config, weights, batch, scale, grads);
    const double t1 = Now();
    optimizer.Step(1e-5f, 1.0);
    optimizer.ZeroGrad();
    const double t2 = Now();
    if (step > 0) {
      step_s.push_back(t2 - t0);
      backward_s.push_back(t1 - t0);
    }
  }
  std::sort(step_s.begin(), step_s.end());
  std::sort(backward_s.begin(), backward_s.end());
  const double step_median = step_s[step_s.size() / 2];
  const double fb_median = backward_s[backward_s.size() / 2];
  const int64_t tokens = sequences * length;
  std::printf(
      "training_bench: %s, %lld layers, %lld parameters, f32, %lld x %lld tokens: step %.3f s "
      "(forward+backward %.3f s, AdamW+zero %.3f s), %.1f tokens/s (median of %lld)\n",
      config.name.c_str(), static_cast<long long>(config.num_layers),
      static_cast<long long>(config.ParameterCount()), static_cast<long long>(sequences),
      static_cast<long long>(length), step_median, fb_median, step_median - fb_median,
      static_cast<double>(tokens) / step_median, static_cast<long long>(steps));
  std::printf("| %s (%lld layers) | %lld x %lld | %.2f | %.2f | %.1f |\n", config.name.c_str(),
              static_cast<long long>(config.num_layers), static_cast<long long>(sequences),
              static_cast<long long>(length), fb_median, step_median - fb_median,
              static_cast<double>(tokens) / step_median);
  return 0;
}

}  // namespace
}  // namespace gemmapod

int main(int argc, char** argv) {
  try {
    return gemmapod::Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "training_bench: %s\n", e.what());
    return 1;
  }
}
