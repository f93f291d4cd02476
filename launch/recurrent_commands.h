// `generate` and `logits` for RecurrentGemma checkpoints: every rank of the job runs them, the
// model sharded by the pod file's tp and pp (layers split evenly over the stages; one replica),
// one sequence at a time.
#pragma once

#include <string>

#include "launch/commands.h"
#include "serving/generator.h"

namespace gemmapod {

class Communicator;

int GenerateRecurrentOnRanks(const GenerateOptions& options, Communicator& world);
int LogitsRecurrentOnRanks(const LogitsOptions& options, Communicator& world);

// The request a `generate` prompt makes (chat template, sampling flags, stops).
GenerationRequest BuildGenerationRequest(const GenerateOptions& options, const std::string& prompt,
                                         const Tokenizer& tokenizer, int32_t eos_id);

}  // namespace gemmapod
