// Hugging Face safetensors: reading model directories (one model.safetensors, or shards listed by
// model.safetensors.index.json) and writing them, so weights come in from and go out to the rest of
// the ecosystem. Format: an 8-byte little-endian header length, a JSON header mapping each tensor
// to its dtype, shape and byte range, then the data.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/checkpoint/tensor_source.h"

namespace gemmapod {

// A directory (index.json, else model.safetensors) or a single .safetensors file. Files are
// memory-mapped; every header is validated when opened (offsets inside the file and consistent
// with shape x dtype, shards named by the index present), so a truncated or corrupt file fails
// here with its name. Dtypes: F32, BF16 (as stored), F16 (read as f32; Info says f32), I32, I8.
// A tensor of another dtype (I64, F64, ...) is still listed, so a model with an unused one
// opens (its Info dtype means nothing); reading it fails, naming the file, tensor and dtype.
std::unique_ptr<TensorSource> OpenSafetensors(const std::string& path);

// Writes a Hugging Face model directory atomically. The tensor list is fixed up front, so the
// header of every shard is known before any data: tensors then stream to their place one at a
// time in any order, and a model larger than memory converts. Everything goes to a temporary
// sibling directory that Commit() renames into place; without Commit() it is removed.
class SafetensorsWriter {
 public:
  // One model.safetensors when everything fits in max_shard_bytes, else
  // model-0000K-of-0000N.safetensors plus model.safetensors.index.json. `directory` must not
  // exist, or be empty.
  SafetensorsWriter(std::string directory, std::vector<TensorInfo> tensors,
                    int64_t max_shard_bytes = int64_t{2} << 30);
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // `tensor` must match the planned shape and dtype.
  void Write(const std::string& name, const Tensor& tensor);
  // Where extra files (config.json, tokenizer.model) go before Commit().
  const std::filesystem::path& staging_dir() const { return staging_; }
  // Checks every planned tensor was written, syncs, and renames the directory into place.
  void Commit();

 private:
  struct Slot {
    size_t shard = 0;
    uint64_t offset = 0;  // absolute, in the shard file
    TensorInfo info;
    bool written = false;
  };
  std::filesystem::path directory_;
  std::filesystem::path staging_;
  std::vector<std::string> shard_names_;
  std::vector<int> shard_fds_;
  std::map<std::string, Slot> slots_;
  bool committed_ = false;
};

}  // namespace gemmapod
