#include "training/lora.h"

#include <algorithm>
#include <cmath>

#include "runtime/error.h"
#include "runtime/ops/grad_ops.h"

namespace gemmapod {
namespace {

constexpr const char* kTargets[] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                    "gate_proj", "up_proj", "down_proj"};

// The short name of a matrix ("q_proj" of "model.layers.3.self_attn.q_proj").
std::string ShortName(const std::string& name) { return name.substr(name.rfind('.') + 1); }

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

void ValidateLoraTargets(const std::vector<std::string>& targets) {
  GEMMAPOD_CHECK(!targets.empty(), "lora.targets: name at least one matrix");
  for (const std::string& t : targets) {
    GEMMAPOD_CHECK(std::find(std::begin(kTargets), std::end(kTargets), t) != std::end(kTargets),
                   "lora.targets: unknown matrix '", t,
                   "' (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)");
  }
}

void AttachLora(const ModelConfig& config, GemmaWeights& weights, const LoraOptions& options,
                uint64_t seed) {
  ValidateLoraTargets(options.targets);
  GEMMAPOD_CHECK(options.rank >= 1 && options.alpha > 0, "lora: rank ", options.rank, " and alpha ",
                 options.alpha, " must be at least 1 and above 0");
  uint64_t state = seed ^ 0x4C6F5241ull;  // "LoRA"
  ForEachGemmaLinear(config, weights, [&](const std::string& name, Linear& linear) {
    if (std::find(options.targets.begin(), options.targets.end(), ShortName(name)) ==
        options.targets.end()) {
      return;
    }
    const int64_t n = linear.weight.dim(0), k = linear.weight.dim(1);
    GEMMAPOD_CHECK(options.rank <= std::min(n, k), "lora.rank ", options.rank, " is above the ",
                   "smaller side of ", name, " (", n, " x ", k, ")");
    auto lora = std::make_shared<LoraAdapter>();
    // PEFT: A ~ kaiming_uniform(a = sqrt(5)), i.e. U(-1/sqrt(K), 1/sqrt(K)); B = 0.
    lora->a = Tensor::Empty({options.rank, k}, DType::kF32);
    const double bound = 1.0 / std::sqrt(static_cast<double>(k));
    for (int64_t i = 0; i < lora->a.numel(); ++i) {
      const double u = static_cast<double>(SplitMix64(state) >> 11) * 0x1.0p-53;
      lora->a.data<float>()[i] = static_cast<float>((2 * u - 1) * bound);
    }
    lora->b = Tensor::Empty({n, options.rank}, DType::kF32);
    std::fill_n(lora->b.data<float>(), lora->b.numel(), 0.0f);
    lora->scale = static_cast<float>(options.alpha / static_cast<double>(options.rank));
    GEMMAPOD_CHECK(linear.weight.device().is_cpu(), "lora: adapters are made on the host for now; ",
                   name, " is on ", linear.weight.device().ToString());
    linear.lora = std::move(lora);
  });
}

GemmaWeights MergedLoraWeights(const ModelConfig& config, GemmaWeights& weights) {
  GemmaWeights merged = weights;
  ForEachGemmaLinear(config, merged, [&](const std::string& name, Linear& linear) {
    if (!linear.lora) return;
    GEMMAPOD_CHECK(!linear.quantized(), "lora: cannot merge into the int8 matrix ", name);
    const LoraAdapter& lora = *linear.lora;
    // W + scale * B A in f32: B A is the weight gradient of a product with dy = B^T, x = A.
    Tensor w = linear.weight.dtype() == DType::kF32 ? linear.weight.Clone()
                                                    : linear.weight.To(DType::kF32);
    const int64_t n = lora.b.dim(0), r = lora.b.dim(1);
    Tensor bt = Tensor::Empty({r, n}, DType::kF32);  // scale * B^T, on the host (small)
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < r; ++j) {
        bt.data<float>()[j * n + i] = lora.scale * lora.b.data<float>()[i * r + j];
      }
    }
    ops::MatMulGradWeight(bt, lora.a, w, /*accumulate=*/true);
    linear.weight = linear.weight.dtype() == DType::kF32 ? w : w.To(linear.weight.dtype());
    linear.lora = nullptr;
  });
  return merged;
}

}  // namespace gemmapod
