// `generate` and `logits` for T5Gemma checkpoints: every rank of the job runs them. The prompt
// (with the chat template under --chat) feeds the encoder; the decoder starts from BOS. The model
// is split by the pod file (encoder stages before decoder stages, parallelism.encoder_tp for the
// encoder's tp) or, without one, every rank holds both stacks in one tensor-parallel group.
#pragma once

#include <string>

#include "launch/commands.h"

namespace gemmapod {

class Communicator;

int GenerateT5GemmaOnRanks(const GenerateOptions& options, Communicator& world);
int LogitsT5GemmaOnRanks(const LogitsOptions& options, Communicator& world);
// `serve` (one replica): each request's prompt is encoded when its sequence starts; the decoder
// ranks decode it in the server's continuous batches.
int ServeT5GemmaOnRanks(const ServeOptions& options, Communicator& world);

}  // namespace gemmapod
