// A chunk of new tokens of one sequence: the unit every family's forward pass and the pipeline
// engine take (a prompt, a piece of one, or one token while decoding).
#pragma once

#include <cstdint>
#include <vector>

namespace gemmapod {

struct SequenceChunk {
  int64_t sequence = 0;         // slot in the decode state (KV cache, recurrent state)
  std::vector<int32_t> tokens;  // new tokens, at positions length(sequence) onwards
};

}  // namespace gemmapod
