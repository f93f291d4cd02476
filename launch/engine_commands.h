// The engine's half of `generate` and `logits`, shared by every family (engine_commands.cc).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "launch/commands.h"
#include "launch/sharded_model.h"
#include "serving/generator.h"

namespace gemmapod {

class Communicator;
class Tokenizer;

// Texts of `results` to world rank 0 (lengths, then bytes), and their receipt there.
void SendTexts(Communicator& world, const std::vector<GenerationResult>& results);
std::vector<std::string> ReceiveTexts(Communicator& world, int from, size_t count);

// A text streamed to world rank 0 as it is generated on another rank: each piece as it comes,
// then the end; rank 0 prints the pieces as they arrive (and flushes) until the end.
void SendTextPiece(Communicator& world, std::string_view text);
void EndTextStream(Communicator& world);
void PrintTextStream(Communicator& world, int from);

// Collective over `world`: replica r generates requests r, r + dp, ...; rank 0 streams a lone
// request's text or prints every text in request order.
int GenerateOnEngine(const GenerateOptions& o, Communicator& world, const Tokenizer& tokenizer,
                     const std::vector<GenerationRequest>& requests, ShardedRun& run);
// Collective over `world`: replica r scores sequences r, r + dp, ... (one length); rank 0 writes
// the logits [sequences, tokens, vocab] ([tokens, vocab] for one) to o.out.
int LogitsOnEngine(const LogitsOptions& o, Communicator& world,
                   const std::vector<std::vector<int32_t>>& sequences, ShardedRun& run);

}  // namespace gemmapod
