// TensorSource: read access to the named tensors of a checkpoint, whatever its format (our HDF5
// files, Hugging Face safetensors). Model loading, sharded loading and `gemmapod convert` are
// written once against this interface.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace gemmapod {

struct TensorInfo {
  std::string name;
  Shape shape;
  DType dtype = DType::kF32;  // as stored (f32, bf16, i32, i8)
};

class TensorSource {
 public:
  virtual ~TensorSource() = default;

  // Where the tensors come from (a path), for error messages.
  virtual const std::string& origin() const = 0;
  // Every tensor, sorted by name.
  virtual std::vector<TensorInfo> List() const = 0;
  virtual bool Has(const std::string& name) const = 0;
  // Throws gemmapod::Error naming the origin and the tensor when it is absent.
  virtual TensorInfo Info(const std::string& name) const = 0;
  // The whole tensor in its stored dtype (owning, CPU).
  virtual Tensor Read(const std::string& name) const = 0;
  // Elements [begin, end) along dimension `dim`, all of every other dimension, in the stored dtype:
  // the slice one rank of a tensor-parallel group holds. Formats that can read a hyperslab (HDF5)
  // read only those bytes.
  virtual Tensor ReadSlice(const std::string& name, int dim, int64_t begin, int64_t end) const = 0;
  // The CRC-32 the file stores for the whole tensor's bytes (row-major, as stored), for formats
  // that store one; ranks reading slices combine theirs to check it (models/shard_checksum.h).
  virtual std::optional<uint32_t> StoredCrc32(const std::string& /*name*/) const {
    return std::nullopt;
  }
};

}  // namespace gemmapod
