#include "launch/model_files.h"

#include <map>
#include <memory>
#include <mutex>

#include "models/gemma/gemma_checkpoint.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/error.h"
#include "sharding/process_grid.h"

namespace gemmapod {

Hdf5CheckpointReader& CheckpointFile(const std::string& path) {
  // Kept until the process ends, never destroyed: HDF5 closes its files at exit, and a reader
  // destroyed after that would close a handle HDF5 no longer knows.
  static auto* opened = new std::map<std::string, std::unique_ptr<Hdf5CheckpointReader>>();
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  std::unique_ptr<Hdf5CheckpointReader>& slot = (*opened)[path];
  if (slot == nullptr) {
    try {
      slot = Hdf5CheckpointReader::Open(path);
    } catch (...) {
      opened->erase(path);
      throw;
    }
  }
  return *slot;
}

Tokenizer LoadTokenizer(const ModelFiles& files) {
  if (!files.tokenizer_path.empty()) return Tokenizer::FromFile(files.tokenizer_path);
  std::optional<std::string> embedded = ReadEmbeddedTokenizer(CheckpointFile(files.model_path));
  GEMMAPOD_CHECK(embedded.has_value(), files.model_path,
                 ": the checkpoint carries no tokenizer; pass --tokenizer tokenizer.model");
  return Tokenizer::FromBytes(std::move(*embedded), files.model_path + ":/files/tokenizer.model");
}

void CheckTokenizerFits(const Tokenizer& tokenizer, const ModelConfig& config,
                        const ModelFiles& files) {
  GEMMAPOD_CHECK(tokenizer.vocab_size() <= config.vocab_size, "the tokenizer (",
                 files.tokenizer_path.empty() ? files.model_path : files.tokenizer_path, ") has ",
                 tokenizer.vocab_size(), " pieces but the model's vocabulary has ",
                 config.vocab_size);
}

std::string LayoutName(const ProcessGrid& grid) {
  const GridShape& s = grid.shape();
  return StrCat("tp=", s.tp, " pp=", s.pp, " dp=", s.dp);
}

cpu::MatmulPrecision ParsePrecision(const ModelFiles& files) {
  GEMMAPOD_CHECK(files.precision == "exact" || files.precision == "fast",
                 "--precision must be exact or fast, got '", files.precision, "'");
  return files.precision == "fast" ? cpu::MatmulPrecision::kFastBF16 : cpu::MatmulPrecision::kExact;
}

}  // namespace gemmapod
