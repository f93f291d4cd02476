// LoRA fine-tuning of a decoder-only Gemma: adapters on the chosen matrices of every layer
// (y = x W^T + alpha/r (x A^T) B^T, A Kaiming-uniform as PEFT initialises it, B zero), trained
// while everything else stays frozen, and merged into the matrices (W + alpha/r B A) for export.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/gemma/gemma_weights.h"

namespace gemmapod {

struct LoraOptions {
  int64_t rank = 8;
  double alpha = 16;
  // Short names of the adapted matrices: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj,
  // down_proj.
  std::vector<std::string> targets = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                      "gate_proj", "up_proj", "down_proj"};
};

// The matrix names a target may be; errors name an unknown one.
void ValidateLoraTargets(const std::vector<std::string>& targets);

// Attaches new adapters (A from `seed`, B zero) to the targeted matrices of every layer.
void AttachLora(const ModelConfig& config, GemmaWeights& weights, const LoraOptions& options,
                uint64_t seed);

// The weights with every adapter merged into its matrix (new tensors for the adapted matrices,
// in their dtype; everything else shared with `weights`) and no adapters left: a plain model.
GemmaWeights MergedLoraWeights(const ModelConfig& config, GemmaWeights& weights);

}  // namespace gemmapod
