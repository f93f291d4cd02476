// Our checkpoint format: one HDF5 file holding every parameter as its full logical tensor under its
// Hugging Face name, the model config as attributes, and embedded files such as the tokenizer.
// Any layout loads it: a rank reads only its hyperslab. Layout, dtypes and checksums are
// documented in docs/checkpoint-format.md; h5py reads the files as they are.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/checkpoint/attributes.h"
#include "runtime/checkpoint/tensor_source.h"

namespace gemmapod {

class Hdf5CheckpointReader final : public TensorSource {
 public:
  // Errors name the path: missing, not HDF5, not a gemmapod checkpoint, a newer format version.
  static std::unique_ptr<Hdf5CheckpointReader> Open(const std::string& path);
  ~Hdf5CheckpointReader() override;
  // How many checkpoints this process has opened (a rank opens its model once per command).
  static int64_t files_opened();

  const Attributes& config() const { return config_; }
  bool HasFile(const std::string& name) const;
  // An embedded file's bytes, its checksum verified.
  std::string ReadFile(const std::string& name) const;

  const std::string& origin() const override { return path_; }
  std::vector<TensorInfo> List() const override;
  bool Has(const std::string& name) const override { return tensors_.count(name) > 0; }
  TensorInfo Info(const std::string& name) const override;
  // The whole tensor; its crc32 is verified (a mismatch names the file, tensor and both sums).
  Tensor Read(const std::string& name) const override;
  // A true hyperslab read: only the slice's bytes leave the file. Not checksummed (the checksum
  // covers whole tensors); VerifyAll() checks everything.
  Tensor ReadSlice(const std::string& name, int dim, int64_t begin, int64_t end) const override;
  std::optional<uint32_t> StoredCrc32(const std::string& name) const override;
  // Reads every tensor and file and checks its checksum.
  void VerifyAll() const;

  // State kept beside the model in groups of its own (a trainer's optimizer moments and
  // progress), e.g. group "optimizer/exp_avg". Model readers never look there.
  bool HasGroup(const std::string& group) const;
  Attributes GroupAttributes(const std::string& group) const;
  // The tensors directly in `group`, by name.
  std::vector<TensorInfo> ListGroup(const std::string& group) const;
  // A whole tensor of `group`, its crc32 verified; errors name the file, group and tensor.
  Tensor ReadFromGroup(const std::string& group, const std::string& name) const;

 private:
  Hdf5CheckpointReader() = default;

  std::string path_;
  int64_t file_ = -1;  // hid_t
  Attributes config_;
  std::map<std::string, TensorInfo> tensors_;
};

// Removes "<path>.tmp-<pid>" files beside `path` whose writing process is gone (killed before
// its rename); returns how many. Writers call it before writing `path`.
int RemoveAbandonedTemporaries(const std::string& path);

class Hdf5CheckpointWriter {
 public:
  // Writes to "<path>.tmp-<pid>" beside `path`; `path` itself appears only at Commit(). Removes
  // abandoned temporaries of `path` first (RemoveAbandonedTemporaries).
  static Hdf5CheckpointWriter Create(const std::string& path);
  Hdf5CheckpointWriter(Hdf5CheckpointWriter&& other) noexcept;
  Hdf5CheckpointWriter& operator=(Hdf5CheckpointWriter&&) = delete;
  // Not committed (an exception, an early return): the temporary file is removed.
  ~Hdf5CheckpointWriter();

  void SetConfig(const Attributes& config);
  // f32, bf16, i32 or i8, on the host. A name must be new, non-empty and free of '/'.
  void Write(const std::string& name, const Tensor& tensor);
  void WriteFile(const std::string& name, std::string_view bytes);
  // State beside the model (see Hdf5CheckpointReader::HasGroup): `group` is a '/'-separated path
  // of new names (not config, params or files), created on first use.
  void WriteToGroup(const std::string& group, const std::string& name, const Tensor& tensor);
  void SetGroupAttributes(const std::string& group, const Attributes& attributes);
  // Flushes and closes the file, fsyncs it, renames it over `path`, fsyncs the directory.
  void Commit();

 private:
  Hdf5CheckpointWriter() = default;
  void Close();
  // Creates `group` (and its parents) unless it exists; checks its name.
  void EnsureGroup(const std::string& group);
  void WriteDataset(const std::string& full, const std::string& what, const Tensor& tensor);

  std::string path_;
  std::string tmp_path_;
  int64_t file_ = -1;  // hid_t
  int64_t bf16_type_ = -1;
  bool committed_ = false;
};

}  // namespace gemmapod
