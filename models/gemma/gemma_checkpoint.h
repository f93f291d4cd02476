// Our HDF5 checkpoints of decoder-only Gemma models: the config from the file's attributes, the
// weights from its tensors (checked against the config), optionally the embedded tokenizer.
#pragma once

#include <optional>
#include <string>

#include "models/gemma/gemma_decoder.h"

namespace gemmapod {

class Hdf5CheckpointReader;

GemmaDecoder LoadGemmaCheckpoint(const std::string& path);

// Writes `weights` and `config` (and, when given, the SentencePiece model bytes as
// /files/tokenizer.model) atomically to `path`.
void SaveGemmaCheckpoint(const std::string& path, const ModelConfig& config, GemmaWeights& weights,
                         const std::optional<std::string>& tokenizer);

// The SentencePiece model embedded in a checkpoint, if it carries one.
std::optional<std::string> ReadEmbeddedTokenizer(const std::string& path);
std::optional<std::string> ReadEmbeddedTokenizer(const Hdf5CheckpointReader& checkpoint);

}  // namespace gemmapod
