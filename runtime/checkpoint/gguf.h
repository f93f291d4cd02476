// GGUF v3, llama.cpp's single-file model format: a header, typed metadata key/values (the model's
// hyper-parameters and tokenizer), tensor infos, then the tensor data, each tensor at an aligned
// offset and stored as one of ggml's types (gguf_quants.h). Tensors are read dequantized to f32.
// Layout: "GGUF", u32 version, u64 tensor count, u64 key/value count; each key/value is a string
// key, a u32 value type and the value; each tensor info is a string name, u32 n_dims, n_dims u64
// extents (fastest-varying first), u32 ggml type and a u64 offset into the data section, which
// starts at the next multiple of `general.alignment` (default 32). Little-endian throughout;
// strings are a u64 byte count and UTF-8 bytes without a terminator.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/checkpoint/gguf_quants.h"
#include "runtime/checkpoint/tensor_source.h"

namespace gemmapod {

// Ids as the format stores them.
enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

// "uint32", "string", "array", ...
std::string_view GgufValueTypeName(GgufValueType type);

// One metadata value. `type` says which member holds it: every integer type and bool in
// `integer` (a uint64 above INT64_MAX keeps its bits, so reads as negative), float32 and float64
// in `real`, strings in `text`; an array's elements, all of `element_type`, in the vector of the
// same kind (arrays of arrays, which the format allows, in `arrays`).
struct GgufValue {
  GgufValueType type = GgufValueType::kUint8;
  int64_t integer = 0;
  double real = 0;
  std::string text;

  GgufValueType element_type = GgufValueType::kUint8;
  std::vector<int64_t> integers;
  std::vector<double> reals;
  std::vector<std::string> texts;
  std::vector<GgufValue> arrays;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // ggml's ne: dims[0] varies fastest; empty for a scalar
  GgmlType type = GgmlType::kF32;
  uint64_t offset = 0;  // bytes from the start of the data section
  uint64_t nbytes = 0;

  // Our row-major shape: the dims reversed.
  Shape shape() const;
  int64_t num_elements() const;
  // ggml's rows: dims[0] elements each, a whole number of blocks; num_rows() of them back to back.
  int64_t row_length() const { return dims.empty() ? 1 : dims[0]; }
  int64_t num_rows() const;
};

// An open GGUF v3 file. The file is memory-mapped, not read: tensors are dequantized straight from
// the page cache, so a model is never in memory twice. The whole header is validated when the
// file opens (magic, version, every length and count bounded by the file size, value types,
// tensor dims, types, alignment and data range), so a truncated or corrupt file fails here with
// its path and what is wrong. Thread-safe for concurrent reads.
class GgufFile {
 public:
  explicit GgufFile(std::string path);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint64_t alignment() const { return alignment_; }
  // Where the data section starts, in bytes from the start of the file.
  uint64_t data_offset() const { return data_offset_; }

  // Metadata, every key in file order. The typed accessors throw gemmapod::Error naming the file
  // and key when the key is absent or holds another type.
  const std::vector<std::string>& keys() const { return keys_; }
  bool Has(const std::string& key) const { return metadata_.count(key) > 0; }
  const GgufValue& Value(const std::string& key) const;
  const std::string& String(const std::string& key) const;
  // Any integer type (not bool); a uint64 above INT64_MAX is refused.
  int64_t Int(const std::string& key) const;
  // float32 or float64.
  double Float(const std::string& key) const;
  bool Bool(const std::string& key) const;
  const std::vector<std::string>& StringArray(const std::string& key) const;
  // Arrays of any integer type (not bool).
  const std::vector<int64_t>& IntArray(const std::string& key) const;
  // Arrays of float32 or float64.
  const std::vector<double>& FloatArray(const std::string& key) const;

  // Tensors in file order.
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  bool HasTensor(const std::string& name) const { return tensor_index_.count(name) > 0; }
  // Throws naming the file and tensor when absent.
  const GgufTensorInfo& FindTensor(const std::string& name) const;
  // The tensor's stored bytes (info.nbytes of them), inside the mapping.
  const uint8_t* RawData(const GgufTensorInfo& info) const;
  // The whole tensor as f32, row-major with shape info.shape(). Throws naming the file, tensor and
  // type when the type is not one DequantizeRow handles.
  Tensor Dequantize(const std::string& name) const;
  // ggml rows [first_row, first_row + num_rows) as f32 into `dst` (num_rows * row_length floats).
  void DequantizeRows(const GgufTensorInfo& info, int64_t first_row, int64_t num_rows,
                      float* dst) const;

 private:
  struct Mapping;

  void Parse();

  std::string path_;
  std::unique_ptr<Mapping> mapping_;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::string> keys_;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// The file's tensors as a TensorSource: every tensor reads as f32 with the row-major shape (the
// ggml dims reversed), dequantized on read. ReadSlice along any dimension but the last dequantizes
// only the ggml rows it returns (along the last, every row, as blocks span the cut). A tensor of a
// type we cannot dequantize is listed, but Info and Read on it throw naming the file, tensor and
// type (as OpenSafetensors does for dtypes it does not read).
std::unique_ptr<TensorSource> OpenGguf(const std::string& path);
// The same over an already open file, sharing it (for callers that also read the metadata).
std::unique_ptr<TensorSource> GgufTensorSource(std::shared_ptr<const GgufFile> file);

}  // namespace gemmapod
