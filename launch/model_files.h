// What the model subcommands share: the tokenizer a checkpoint carries (or the one named), the
// check that it fits the model, and the name of a run's layout.
#pragma once

#include <string>

#include "launch/commands.h"
#include "models/gemma/model_config.h"
#include "runtime/cpu/matmul.h"
#include "runtime/tokenizer/tokenizer.h"

namespace gemmapod {

class Hdf5CheckpointReader;
class ProcessGrid;

// The checkpoint at `path`, opened on a rank's first call and shared by every later one: a
// command learns the family, the config, the tokenizer and this rank's weights from one open.
// Errors are Hdf5CheckpointReader::Open's (naming the path); a failed open is not kept.
Hdf5CheckpointReader& CheckpointFile(const std::string& path);

// The checkpoint's embedded tokenizer unless --tokenizer names a SentencePiece model file.
Tokenizer LoadTokenizer(const ModelFiles& files);
// Error unless every piece of the tokenizer is an id of the model's vocabulary.
void CheckTokenizerFits(const Tokenizer& tokenizer, const ModelConfig& config,
                        const ModelFiles& files);
// --precision: exact (f32-grade products) or fast (activations rounded to bf16); any other value
// is an error naming it. Every family takes both.
cpu::MatmulPrecision ParsePrecision(const ModelFiles& files);
// "tp=2 pp=1 dp=1"
std::string LayoutName(const ProcessGrid& grid);

}  // namespace gemmapod
