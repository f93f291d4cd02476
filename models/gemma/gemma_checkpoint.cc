#include "models/gemma/gemma_checkpoint.h"

#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/error.h"

namespace gemmapod {

namespace {
constexpr const char* kTokenizerFile = "tokenizer.model";
}

GemmaDecoder LoadGemmaCheckpoint(const std::string& path) {
  const std::unique_ptr<Hdf5CheckpointReader> reader = Hdf5CheckpointReader::Open(path);
  ModelConfig config = FromAttributes(reader->config(), path);
  GemmaWeights weights = LoadGemmaWeights(config, *reader);
  return GemmaDecoder(std::move(config), std::move(weights));
}

void SaveGemmaCheckpoint(const std::string& path, const ModelConfig& config, GemmaWeights& weights,
                         const std::optional<std::string>& tokenizer) {
  Hdf5CheckpointWriter writer = Hdf5CheckpointWriter::Create(path);
  writer.SetConfig(ToAttributes(config));
  ForEachGemmaParameter(config, weights, [&](const GemmaParameter& p, Tensor& slot) {
    GEMMAPOD_CHECK(slot.shape() == p.shape, "save ", path, ": tensor '", p.name, "' has shape ",
                   ShapeToString(slot.shape()), " but the config needs ", ShapeToString(p.shape));
    writer.Write(p.name, slot);
  });
  if (tokenizer) writer.WriteFile(kTokenizerFile, *tokenizer);
  writer.Commit();
}

std::optional<std::string> ReadEmbeddedTokenizer(const std::string& path) {
  return ReadEmbeddedTokenizer(*Hdf5CheckpointReader::Open(path));
}

std::optional<std::string> ReadEmbeddedTokenizer(const Hdf5CheckpointReader& checkpoint) {
  if (!checkpoint.HasFile(kTokenizerFile)) return std::nullopt;
  return checkpoint.ReadFile(kTokenizerFile);
}

}  // namespace gemmapod
