// `generate` and `logits` for T5Gemma checkpoints: every rank of the job runs them. The prompt
// (with the chat template under --chat) feeds the encoder; the decoder starts from BOS. The model
// is split by the pod file (encoder stages before decoder stages, parallelism.encoder_tp for the
// encoder's tp) or, without one, every rank holds both stacks in one tensor-parallel group.
#pragma once

#include <string>

#include "launch/commands.h"

namespace gemmapod {

class Communicator;

// Whether `path` is a .h5 checkpoint whose config says t5gemma (false on any error).
bool IsT5GemmaCheckpoint(const std::string& path);

// Whether a .yaml model config or a .h5 checkpoint is a T5Gemma (false on any error).
bool IsT5GemmaModel(const std::string& path);

int GenerateT5GemmaOnRanks(const GenerateOptions& options, Communicator& world);
int LogitsT5GemmaOnRanks(const LogitsOptions& options, Communicator& world);

}  // namespace gemmapod
