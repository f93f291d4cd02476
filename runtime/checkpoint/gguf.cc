#include "runtime/checkpoint/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "runtime/error.h"

namespace gemmapod {

struct GgufFile::Mapping {
  int fd = -1;
  void* data = nullptr;
  uint64_t size = 0;

  explicit Mapping(const std::string& path) {
    fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    GEMMAPOD_CHECK(fd >= 0, path, ": cannot open: ", std::strerror(errno));
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      close(fd);
      throw Error(StrCat(path, ": not a regular file"));
    }
    size = static_cast<uint64_t>(st.st_size);
    if (size > 0) {
      data = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
      if (data == MAP_FAILED) {
        close(fd);
        throw Error(StrCat(path, ": cannot map: ", std::strerror(errno)));
      }
    }
  }
  ~Mapping() {
    if (data != nullptr) munmap(data, size);
    close(fd);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  const uint8_t* bytes() const { return static_cast<const uint8_t*>(data); }
};

namespace {

constexpr char kMagic[4] = {'G', 'G', 'U', 'F'};
constexpr uint32_t kVersion = 3;
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;  // GGML_MAX_DIMS
// The format allows arrays of arrays; bounding the depth keeps a crafted file from recursing
// until the stack runs out.
constexpr int kMaxArrayDepth = 16;
constexpr uint32_t kNumValueTypes = 13;

// Reads little-endian fields from the mapped file, every read bounded by the file size. Messages
// name the file and what was being read (`context`: a key, a tensor).
class Reader {
 public:
  Reader(const std::string& path, const uint8_t* data, uint64_t size)
      : path_(path), data_(data), size_(size) {}

  void set_context(std::string context) { context_ = std::move(context); }
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  template <typename... Parts>
  [[noreturn]] void Fail(Parts&&... parts) const {
    throw Error(StrCat(path_, ": ", context_, ": ", std::forward<Parts>(parts)...));
  }

  template <typename T>
  T Read(const char* field) {
    if (sizeof(T) > remaining()) {
      Fail("truncated: the ", field, " needs ", sizeof(T), " bytes at offset ", pos_,
           " but the file ends at ", size_);
    }
    T v;
    std::memcpy(&v, data_ + pos_, sizeof v);
    pos_ += sizeof v;
    return v;
  }

  std::string ReadString(const char* field) {
    const auto length = Read<uint64_t>(field);
    if (length > remaining()) {
      Fail("the ", field, " is ", length, " bytes long at offset ", pos_ - 8, " but only ",
           remaining(), " bytes of the file remain (truncated or corrupt file)");
    }
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(length));
    pos_ += length;
    return s;
  }

 private:
  const std::string& path_;
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  std::string context_ = "header";
};

bool IsIntegerType(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
      return true;
    default:
      return false;
  }
}

bool IsFloatType(GgufValueType t) {
  return t == GgufValueType::kFloat32 || t == GgufValueType::kFloat64;
}

// The fewest bytes one value of the type takes, to bound array lengths by the bytes left.
uint64_t MinEncodedSize(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
      return 2;
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kFloat32:
      return 4;
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
    case GgufValueType::kFloat64:
    case GgufValueType::kString:  // the length alone
      return 8;
    case GgufValueType::kArray:  // element type and length
      return 12;
  }
  return 1;
}

GgufValueType ReadValueType(Reader& r, const char* field) {
  const auto id = r.Read<uint32_t>(field);
  if (id >= kNumValueTypes) r.Fail("unknown metadata value type ", id, " (the ", field, ")");
  return static_cast<GgufValueType>(id);
}

int64_t ReadInteger(Reader& r, GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8:
      return r.Read<uint8_t>("value");
    case GgufValueType::kInt8:
      return r.Read<int8_t>("value");
    case GgufValueType::kUint16:
      return r.Read<uint16_t>("value");
    case GgufValueType::kInt16:
      return r.Read<int16_t>("value");
    case GgufValueType::kUint32:
      return r.Read<uint32_t>("value");
    case GgufValueType::kInt32:
      return r.Read<int32_t>("value");
    case GgufValueType::kUint64:
      return static_cast<int64_t>(r.Read<uint64_t>("value"));  // see GgufValue
    case GgufValueType::kInt64:
      return r.Read<int64_t>("value");
    case GgufValueType::kBool:
      return r.Read<uint8_t>("value") != 0;
    default:
      r.Fail("internal: not an integer type");
  }
}

double ReadReal(Reader& r, GgufValueType t) {
  if (t == GgufValueType::kFloat32) return r.Read<float>("value");
  return r.Read<double>("value");
}

void ReadArray(Reader& r, GgufValue& v, int depth);

GgufValue ReadValue(Reader& r, GgufValueType type, int depth) {
  GgufValue v;
  v.type = type;
  if (IsIntegerType(type) || type == GgufValueType::kBool) {
    v.integer = ReadInteger(r, type);
  } else if (IsFloatType(type)) {
    v.real = ReadReal(r, type);
  } else if (type == GgufValueType::kString) {
    v.text = r.ReadString("string value");
  } else {
    ReadArray(r, v, depth + 1);
  }
  return v;
}

void ReadArray(Reader& r, GgufValue& v, int depth) {
  if (depth > kMaxArrayDepth) r.Fail("arrays nested deeper than ", kMaxArrayDepth);
  v.element_type = ReadValueType(r, "array element type");
  const auto count = r.Read<uint64_t>("array length");
  // Checked before anything is reserved, so a corrupt count cannot ask for a huge allocation.
  const uint64_t min_size = MinEncodedSize(v.element_type);
  if (count > r.remaining() / min_size) {
    r.Fail("an array of ", count, " ", GgufValueTypeName(v.element_type), " values needs at least ",
           min_size, " bytes each, but only ", r.remaining(),
           " bytes of the file remain (truncated or corrupt file)");
  }
  const GgufValueType t = v.element_type;
  const auto n = static_cast<size_t>(count);
  if (IsIntegerType(t) || t == GgufValueType::kBool) {
    v.integers.reserve(n);
    for (size_t i = 0; i < n; ++i) v.integers.push_back(ReadInteger(r, t));
  } else if (IsFloatType(t)) {
    v.reals.reserve(n);
    for (size_t i = 0; i < n; ++i) v.reals.push_back(ReadReal(r, t));
  } else if (t == GgufValueType::kString) {
    v.texts.reserve(n);
    for (size_t i = 0; i < n; ++i) v.texts.push_back(r.ReadString("string in an array"));
  } else {
    v.arrays.reserve(n);
    for (size_t i = 0; i < n; ++i) v.arrays.push_back(ReadValue(r, t, depth));
  }
}

std::string Describe(const GgufValue& v) {
  if (v.type != GgufValueType::kArray) return std::string(GgufValueTypeName(v.type));
  return StrCat("array of ", GgufValueTypeName(v.element_type));
}

constexpr char kDequantizable[] =
    "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K";

}  // namespace

std::string_view GgufValueTypeName(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8:
      return "uint8";
    case GgufValueType::kInt8:
      return "int8";
    case GgufValueType::kUint16:
      return "uint16";
    case GgufValueType::kInt16:
      return "int16";
    case GgufValueType::kUint32:
      return "uint32";
    case GgufValueType::kInt32:
      return "int32";
    case GgufValueType::kFloat32:
      return "float32";
    case GgufValueType::kBool:
      return "bool";
    case GgufValueType::kString:
      return "string";
    case GgufValueType::kArray:
      return "array";
    case GgufValueType::kUint64:
      return "uint64";
    case GgufValueType::kInt64:
      return "int64";
    case GgufValueType::kFloat64:
      return "float64";
  }
  return "unknown";
}

Shape GgufTensorInfo::shape() const { return Shape(dims.rbegin(), dims.rend()); }

int64_t GgufTensorInfo::num_elements() const { return NumElements(dims); }

int64_t GgufTensorInfo::num_rows() const {
  return dims.empty() ? 1 : NumElements(Shape(dims.begin() + 1, dims.end()));
}

GgufFile::GgufFile(std::string path)
    : path_(std::move(path)), mapping_(std::make_unique<Mapping>(path_)) {
  Parse();
}

GgufFile::~GgufFile() = default;

void GgufFile::Parse() {
  const uint64_t size = mapping_->size;
  Reader r(path_, mapping_->bytes(), size);

  GEMMAPOD_CHECK(size >= 4, path_, ": truncated: ", size, " bytes, too short for a GGUF header");
  GEMMAPOD_CHECK(std::memcmp(mapping_->bytes(), kMagic, 4) == 0, path_,
                 ": not a GGUF file (it does not start with \"GGUF\")");
  r.Read<uint32_t>("magic");
  const auto version = r.Read<uint32_t>("version");
  // A big-endian file (gguf-py writes them for s390x) shows its small version number
  // byte-swapped into the high bytes.
  GEMMAPOD_CHECK(version == 0 || (version & 0xffff) != 0, path_,
                 ": a big-endian GGUF file; only little-endian files are supported");
  GEMMAPOD_CHECK(version == kVersion, path_, ": GGUF version ", version,
                 " is not supported (only version ", kVersion, ")");
  const auto tensor_count = r.Read<uint64_t>("tensor count");
  const auto kv_count = r.Read<uint64_t>("metadata key/value count");

  // Each key/value takes at least 8 (key length) + 4 (type) + 1 bytes.
  if (kv_count > r.remaining() / 13) {
    r.Fail(kv_count, " metadata key/values cannot fit in the ", r.remaining(),
           " bytes that remain (truncated or corrupt file)");
  }
  for (uint64_t i = 0; i < kv_count; ++i) {
    r.set_context(StrCat("metadata key/value ", i));
    std::string key = r.ReadString("key");
    r.set_context(StrCat("metadata key '", key, "'"));
    if (metadata_.count(key)) r.Fail("the key appears twice");
    const GgufValueType type = ReadValueType(r, "value type");
    metadata_.emplace(key, ReadValue(r, type, 0));
    keys_.push_back(std::move(key));
  }

  if (Has("general.alignment")) {
    const GgufValue& v = Value("general.alignment");
    GEMMAPOD_CHECK(IsIntegerType(v.type) && v.integer > 0 && v.integer <= (int64_t{1} << 30) &&
                       (v.integer & (v.integer - 1)) == 0,
                   path_, ": general.alignment must be a power of two integer up to 2^30, not ",
                   Describe(v), " ", v.integer);
    alignment_ = static_cast<uint64_t>(v.integer);
  } else {
    alignment_ = kDefaultAlignment;
  }

  // Each tensor info takes at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes.
  r.set_context("header");
  if (tensor_count > r.remaining() / 24) {
    r.Fail(tensor_count, " tensor infos cannot fit in the ", r.remaining(),
           " bytes that remain (truncated or corrupt file)");
  }
  tensors_.reserve(static_cast<size_t>(tensor_count));
  for (uint64_t i = 0; i < tensor_count; ++i) {
    r.set_context(StrCat("tensor info ", i));
    GgufTensorInfo t;
    t.name = r.ReadString("tensor name");
    r.set_context(StrCat("tensor '", t.name, "'"));
    if (tensor_index_.count(t.name)) r.Fail("the tensor name appears twice");
    const auto n_dims = r.Read<uint32_t>("dimension count");
    if (n_dims > kMaxDims) r.Fail(n_dims, " dimensions; ggml allows at most ", kMaxDims);
    uint64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const auto extent = r.Read<uint64_t>("dimension");
      if (extent > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          __builtin_mul_overflow(elements, extent, &elements) ||
          elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        r.Fail("dimension ", d, " of ", extent, " makes the element count overflow");
      }
      t.dims.push_back(static_cast<int64_t>(extent));
    }
    const auto type_id = r.Read<uint32_t>("ggml type");
    if (!IsKnownGgmlType(type_id)) r.Fail("unknown ggml type id ", type_id);
    t.type = static_cast<GgmlType>(type_id);
    t.offset = r.Read<uint64_t>("data offset");

    const auto block_size = static_cast<uint64_t>(GgmlBlockSize(t.type));
    if (static_cast<uint64_t>(t.row_length()) % block_size != 0) {
      r.Fail("a row of ", t.row_length(), " elements (dims[0]) is not a whole number of ",
             GgmlTypeName(t.type), " blocks of ", block_size);
    }
    if (__builtin_mul_overflow(elements / block_size, static_cast<uint64_t>(GgmlBlockBytes(t.type)),
                               &t.nbytes)) {
      r.Fail("the byte size of ", elements, " ", GgmlTypeName(t.type), " elements overflows");
    }
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment (alignment <= 2^30 and the
  // position <= the file size, so this cannot overflow).
  data_offset_ = (r.pos() + alignment_ - 1) / alignment_ * alignment_;
  for (const GgufTensorInfo& t : tensors_) {
    const std::string where = StrCat(path_, ": tensor '", t.name, "'");
    GEMMAPOD_CHECK(t.offset % alignment_ == 0, where, ": data offset ", t.offset,
                   " is not a multiple of the alignment ", alignment_);
    GEMMAPOD_CHECK(data_offset_ <= size && t.offset <= size - data_offset_ &&
                       t.nbytes <= size - data_offset_ - t.offset,
                   where, ": its ", t.nbytes, " bytes at data offset ", t.offset, " (file offset ",
                   data_offset_, " + ", t.offset, ") lie past the end of the file (", size,
                   " bytes; truncated or corrupt file)");
  }
  // No two tensors may share bytes (a file made wrongly, or on purpose).
  std::vector<const GgufTensorInfo*> by_offset;
  for (const GgufTensorInfo& t : tensors_) {
    if (t.nbytes > 0) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const GgufTensorInfo& a = *by_offset[i - 1];
    const GgufTensorInfo& b = *by_offset[i];
    GEMMAPOD_CHECK(a.offset + a.nbytes <= b.offset, path_, ": tensors '", a.name, "' and '", b.name,
                   "' overlap (data offsets ", a.offset, " + ", a.nbytes, " bytes and ", b.offset,
                   "): each tensor needs bytes of its own");
  }
}

const GgufValue& GgufFile::Value(const std::string& key) const {
  auto it = metadata_.find(key);
  GEMMAPOD_CHECK(it != metadata_.end(), path_, ": no metadata key '", key, "'");
  return it->second;
}

namespace {

[[noreturn]] void WrongType(const std::string& path, const std::string& key, const GgufValue& v,
                            const char* wanted) {
  throw Error(StrCat(path, ": metadata key '", key, "' is ", Describe(v), ", not ", wanted));
}

}  // namespace

const std::string& GgufFile::String(const std::string& key) const {
  const GgufValue& v = Value(key);
  if (v.type != GgufValueType::kString) WrongType(path_, key, v, "a string");
  return v.text;
}

int64_t GgufFile::Int(const std::string& key) const {
  const GgufValue& v = Value(key);
  if (!IsIntegerType(v.type)) WrongType(path_, key, v, "an integer");
  GEMMAPOD_CHECK(v.type != GgufValueType::kUint64 || v.integer >= 0, path_, ": metadata key '", key,
                 "' holds ", static_cast<uint64_t>(v.integer),
                 ", which does not fit a signed 64-bit integer");
  return v.integer;
}

double GgufFile::Float(const std::string& key) const {
  const GgufValue& v = Value(key);
  if (!IsFloatType(v.type)) WrongType(path_, key, v, "a float");
  return v.real;
}

bool GgufFile::Bool(const std::string& key) const {
  const GgufValue& v = Value(key);
  if (v.type != GgufValueType::kBool) WrongType(path_, key, v, "a bool");
  return v.integer != 0;
}

const std::vector<std::string>& GgufFile::StringArray(const std::string& key) const {
  const GgufValue& v = Value(key);
  if (v.type != GgufValueType::kArray || v.element_type != GgufValueType::kString) {
    WrongType(path_, key, v, "an array of strings");
  }
  return v.texts;
}

const std::vector<int64_t>& GgufFile::IntArray(const std::string& key) const {
  const GgufValue& v = Value(key);
  if (v.type != GgufValueType::kArray || !IsIntegerType(v.element_type)) {
    WrongType(path_, key, v, "an array of integers");
  }
  if (v.element_type == GgufValueType::kUint64) {
    for (size_t i = 0; i < v.integers.size(); ++i) {
      GEMMAPOD_CHECK(v.integers[i] >= 0, path_, ": metadata key '", key, "': element ", i,
                     " holds ", static_cast<uint64_t>(v.integers[i]),
                     ", which does not fit a signed 64-bit integer");
    }
  }
  return v.integers;
}

const std::vector<double>& GgufFile::FloatArray(const std::string& key) const {
  const GgufValue& v = Value(key);
  if (v.type != GgufValueType::kArray || !IsFloatType(v.element_type)) {
    WrongType(path_, key, v, "an array of floats");
  }
  return v.reals;
}

const GgufTensorInfo& GgufFile::FindTensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  GEMMAPOD_CHECK(it != tensor_index_.end(), path_, ": no tensor named '", name, "'");
  return tensors_[it->second];
}

const uint8_t* GgufFile::RawData(const GgufTensorInfo& info) const {
  return mapping_->bytes() + data_offset_ + info.offset;
}

Tensor GgufFile::Dequantize(const std::string& name) const {
  const GgufTensorInfo& info = FindTensor(name);
  // Checked before allocating, so an unreadable tensor costs nothing.
  GEMMAPOD_CHECK(CanDequantize(info.type), path_, ": tensor '", name, "' has ggml type ",
                 GgmlTypeName(info.type), ", which gemmapod cannot dequantize (it reads ",
                 kDequantizable, ")");
  Tensor t = Tensor::Empty(info.shape(), DType::kF32);
  DequantizeRows(info, 0, info.num_rows(), t.data<float>());
  return t;
}

void GgufFile::DequantizeRows(const GgufTensorInfo& info, int64_t first_row, int64_t num_rows,
                              float* dst) const {
  const int64_t rows = info.num_rows();
  GEMMAPOD_CHECK(first_row >= 0 && num_rows >= 0 && first_row <= rows - num_rows, path_,
                 ": tensor '", info.name, "': rows [", first_row, ", ", first_row + num_rows,
                 ") are out of range (it has ", rows, ")");
  GEMMAPOD_CHECK(CanDequantize(info.type), path_, ": tensor '", info.name, "' has ggml type ",
                 GgmlTypeName(info.type), ", which gemmapod cannot dequantize (it reads ",
                 kDequantizable, ")");
  const int64_t row_bytes =
      info.row_length() / GgmlBlockSize(info.type) * GgmlBlockBytes(info.type);
  try {
    DequantizeRow(info.type, RawData(info) + first_row * row_bytes, dst,
                  num_rows * info.row_length());
  } catch (const Error& e) {
    throw Error(StrCat(path_, ": tensor '", info.name, "': ", e.what()));
  }
}

namespace {

class GgufSource final : public TensorSource {
 public:
  explicit GgufSource(std::shared_ptr<const GgufFile> file) : file_(std::move(file)) {}

  const std::string& origin() const override { return file_->path(); }

  std::vector<TensorInfo> List() const override {
    std::vector<TensorInfo> out;
    out.reserve(file_->tensors().size());
    for (const GgufTensorInfo& t : file_->tensors())
      out.push_back({t.name, t.shape(), DType::kF32});
    std::sort(out.begin(), out.end(),
              [](const TensorInfo& a, const TensorInfo& b) { return a.name < b.name; });
    return out;
  }

  bool Has(const std::string& name) const override { return file_->HasTensor(name); }

  TensorInfo Info(const std::string& name) const override {
    const GgufTensorInfo& t = Readable(name);
    return {t.name, t.shape(), DType::kF32};
  }

  Tensor Read(const std::string& name) const override { return file_->Dequantize(name); }

  Tensor ReadSlice(const std::string& name, int dim, int64_t begin, int64_t end) const override {
    const GgufTensorInfo& info = Readable(name);
    const Shape shape = info.shape();
    const int rank = static_cast<int>(shape.size());
    GEMMAPOD_CHECK(dim >= 0 && dim < rank && begin >= 0 && begin <= end &&
                       end <= shape[static_cast<size_t>(dim)],
                   file_->path(), ": tensor '", name, "' of shape ", ShapeToString(shape),
                   ": slice [", begin, ", ", end, ") of dimension ", dim, " is out of range");
    Shape out_shape = shape;
    out_shape[static_cast<size_t>(dim)] = end - begin;
    Tensor out = Tensor::Empty(out_shape, DType::kF32);
    if (out.numel() == 0) return out;

    int64_t outer = 1, inner = 1;
    for (int i = 0; i < dim; ++i) outer *= shape[static_cast<size_t>(i)];
    for (int i = dim + 1; i < rank; ++i) inner *= shape[static_cast<size_t>(i)];
    const int64_t extent = shape[static_cast<size_t>(dim)];
    const int64_t row_length = info.row_length();
    float* dst = out.data<float>();
    if (dim < rank - 1) {
      // The slice is whole ggml rows (the last dimension is the row): dequantize only those.
      const int64_t rows_per_index = inner / row_length;
      for (int64_t o = 0; o < outer; ++o) {
        file_->DequantizeRows(info, (o * extent + begin) * rows_per_index,
                              (end - begin) * rows_per_index, dst + o * (end - begin) * inner);
      }
    } else {
      // Part of every row: blocks span the cut, so dequantize each row whole and keep the part.
      std::vector<float> row(static_cast<size_t>(row_length));
      for (int64_t o = 0; o < outer; ++o) {
        file_->DequantizeRows(info, o, 1, row.data());
        std::copy(row.begin() + begin, row.begin() + end, dst + o * (end - begin));
      }
    }
    return out;
  }

 private:
  const GgufTensorInfo& Readable(const std::string& name) const {
    const GgufTensorInfo& t = file_->FindTensor(name);
    GEMMAPOD_CHECK(CanDequantize(t.type), file_->path(), ": tensor '", name, "' has ggml type ",
                   GgmlTypeName(t.type), ", which gemmapod cannot dequantize (it reads ",
                   kDequantizable, ")");
    return t;
  }

  std::shared_ptr<const GgufFile> file_;
};

}  // namespace

std::unique_ptr<TensorSource> OpenGguf(const std::string& path) {
  return GgufTensorSource(std::make_shared<const GgufFile>(path));
}

std::unique_ptr<TensorSource> GgufTensorSource(std::shared_ptr<const GgufFile> file) {
  GEMMAPOD_CHECK(file != nullptr, "GgufTensorSource: no file");
  return std::make_unique<GgufSource>(std::move(file));
}

}  // namespace gemmapod
