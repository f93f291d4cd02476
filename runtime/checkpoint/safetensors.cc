#include "runtime/checkpoint/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "runtime/error.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;

// Bytes per element of every dtype safetensors defines (0: unknown name).
size_t StoredSize(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL" || dtype == "F8_E4M3" ||
      dtype == "F8_E5M2") {
    return 1;
  }
  return 0;
}

// What a stored dtype is read as; false when we cannot read it.
bool ReadableAs(const std::string& dtype, DType* out) {
  if (dtype == "F32" || dtype == "F16")
    *out = DType::kF32;
  else if (dtype == "BF16")
    *out = DType::kBF16;
  else if (dtype == "I32")
    *out = DType::kI32;
  else if (dtype == "I8")
    *out = DType::kI8;
  else
    return false;
  return true;
}

const char* StoredName(DType t) {
  switch (t) {
    case DType::kF32:
      return "F32";
    case DType::kBF16:
      return "BF16";
    case DType::kI32:
      return "I32";
    case DType::kI8:
      return "I8";
  }
  return "?";
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / NaN
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    exp = 113;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

class MappedFile {
 public:
  explicit MappedFile(const std::string& path) : path_(path) {
    fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    GEMMAPOD_CHECK(fd_ >= 0, path, ": cannot open: ", std::strerror(errno));
    struct stat st {};
    if (fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
      close(fd_);
      throw Error(StrCat(path, ": not a regular file"));
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
      data_ = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
      if (data_ == MAP_FAILED) {
        close(fd_);
        throw Error(StrCat(path, ": cannot map: ", std::strerror(errno)));
      }
    }
  }
  ~MappedFile() {
    if (data_ != nullptr && data_ != MAP_FAILED) munmap(data_, size_);
    if (fd_ >= 0) close(fd_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const char* bytes() const { return static_cast<const char*>(data_); }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
  void* data_ = nullptr;
  size_t size_ = 0;
};

struct Entry {
  std::shared_ptr<MappedFile> file;
  const char* data = nullptr;  // start of the tensor's bytes in the mapping
  std::string stored_dtype;
  TensorInfo info;  // dtype: what it reads as
  bool readable = false;
};

// Parses and validates one file's header; returns its tensors.
std::map<std::string, Entry> ParseFile(const std::shared_ptr<MappedFile>& file) {
  const std::string& path = file->path();
  GEMMAPOD_CHECK(file->size() >= 8, path, ": truncated: ", file->size(),
                 " bytes, too short for a safetensors header");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) {
    header_len = (header_len << 8) | static_cast<unsigned char>(file->bytes()[i]);
  }
  GEMMAPOD_CHECK(header_len <= kMaxHeaderBytes && header_len <= file->size() - 8, path,
                 ": truncated or not safetensors: the header claims ", header_len,
                 " bytes but the file has ", file->size());
  Json header;
  try {
    header = Json::parse(file->bytes() + 8, file->bytes() + 8 + header_len);
  } catch (const Json::exception& e) {
    throw Error(StrCat(path, ": the safetensors header is not valid JSON: ", e.what()));
  }
  GEMMAPOD_CHECK(header.is_object(), path, ": the safetensors header is not a JSON object");
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = file->size() - data_start;
  std::map<std::string, Entry> entries;
  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string where = StrCat(path, ": tensor '", name, "'");
    GEMMAPOD_CHECK(v.is_object() && v.contains("dtype") && v["dtype"].is_string() &&
                       v.contains("shape") && v["shape"].is_array() && v.contains("data_offsets") &&
                       v["data_offsets"].is_array() && v["data_offsets"].size() == 2,
                   where, ": needs dtype, shape and data_offsets [begin, end]");
    Entry e;
    e.file = file;
    e.stored_dtype = v["dtype"].get<std::string>();
    e.info.name = name;
    for (const Json& d : v["shape"]) {
      GEMMAPOD_CHECK(d.is_number_integer() && d.get<int64_t>() >= 0, where,
                     ": shape entries must be non-negative integers");
      e.info.shape.push_back(d.get<int64_t>());
    }
    const Json& off = v["data_offsets"];
    GEMMAPOD_CHECK(off[0].is_number_unsigned() && off[1].is_number_unsigned(), where,
                   ": data_offsets must be non-negative integers");
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    GEMMAPOD_CHECK(begin <= end && end <= data_size, where, ": bytes [", begin, ", ", end,
                   ") lie outside the file's ", data_size,
                   " bytes of data (truncated or corrupt file)");
    const size_t item = StoredSize(e.stored_dtype);
    GEMMAPOD_CHECK(item > 0, where, ": unknown dtype '", e.stored_dtype, "'");
    uint64_t want = 0;
    GEMMAPOD_CHECK(!__builtin_mul_overflow(static_cast<uint64_t>(NumElements(e.info.shape)),
                                           static_cast<uint64_t>(item), &want),
                   where, ": shape ", ShapeToString(e.info.shape), " is too large");
    GEMMAPOD_CHECK(end - begin == want, where, ": ", end - begin, " bytes for shape ",
                   ShapeToString(e.info.shape), " of ", e.stored_dtype, " (needs ", want, ")");
    e.readable = ReadableAs(e.stored_dtype, &e.info.dtype);
    e.data = file->bytes() + data_start + begin;
    entries.emplace(name, std::move(e));
  }
  // No two tensors may share bytes: a file whose ranges overlap was made wrongly or on purpose,
  // and converting it would give tensors that alias each other's data.
  std::vector<std::pair<const char*, const Entry*>> starts;
  for (const auto& [name, e] : entries) {
    if (NumElements(e.info.shape) > 0) starts.push_back({e.data, &e});
  }
  std::sort(starts.begin(), starts.end());
  for (size_t i = 1; i < starts.size(); ++i) {
    const Entry& a = *starts[i - 1].second;
    const Entry& b = *starts[i].second;
    const uint64_t a_end =
        static_cast<uint64_t>(a.data - (file->bytes() + data_start)) +
        static_cast<uint64_t>(NumElements(a.info.shape)) * StoredSize(a.stored_dtype);
    const uint64_t b_begin = static_cast<uint64_t>(b.data - (file->bytes() + data_start));
    GEMMAPOD_CHECK(a_end <= b_begin, path, ": tensors '", a.info.name, "' and '", b.info.name,
                   "' overlap (bytes up to ", a_end, " and from ", b_begin,
                   "): each tensor needs bytes of its own");
  }
  return entries;
}

class SafetensorsSource final : public TensorSource {
 public:
  explicit SafetensorsSource(std::string origin) : origin_(std::move(origin)) {}

  void Add(const std::map<std::string, Entry>& entries) {
    for (const auto& [name, e] : entries) entries_[name] = e;
  }
  void AddFrom(const std::map<std::string, Entry>& shard, const std::string& name,
               const std::string& shard_path, const std::string& index_path) {
    auto it = shard.find(name);
    GEMMAPOD_CHECK(it != shard.end(), index_path, ": names tensor '", name, "' in ", shard_path,
                   ", which does not hold it");
    entries_[name] = it->second;
  }

  const std::string& origin() const override { return origin_; }
  std::vector<TensorInfo> List() const override {
    std::vector<TensorInfo> out;
    for (const auto& [name, e] : entries_) out.push_back(e.info);
    return out;
  }
  bool Has(const std::string& name) const override { return entries_.count(name) > 0; }
  // A tensor of a dtype we do not read is listed (a model may carry one it does not need) but
  // asking about it or reading it names the problem.
  TensorInfo Info(const std::string& name) const override { return Readable(name).info; }

  Tensor Read(const std::string& name) const override { return Copy(Readable(name), -1, 0, 0); }

  Tensor ReadSlice(const std::string& name, int dim, int64_t begin, int64_t end) const override {
    const Entry& e = Readable(name);
    const Shape& shape = e.info.shape;
    GEMMAPOD_CHECK(dim >= 0 && dim < static_cast<int>(shape.size()) && begin >= 0 && begin <= end &&
                       end <= shape[static_cast<size_t>(dim)],
                   e.file->path(), ": tensor '", name, "' of shape ", ShapeToString(shape),
                   ": slice [", begin, ", ", end, ") of dimension ", dim, " is out of range");
    return Copy(e, dim, begin, end);
  }

 private:
  const Entry& Find(const std::string& name) const {
    auto it = entries_.find(name);
    GEMMAPOD_CHECK(it != entries_.end(), origin_, ": no tensor named '", name, "'");
    return it->second;
  }

  const Entry& Readable(const std::string& name) const {
    const Entry& e = Find(name);
    GEMMAPOD_CHECK(e.readable, e.file->path(), ": tensor '", name, "' has dtype ", e.stored_dtype,
                   ", which gemmapod does not read (F32, BF16, F16, I32, I8)");
    return e;
  }

  // Elements [begin, end) of dimension `dim` and all of the others; the whole tensor (scalars
  // included) when dim < 0.
  static Tensor Copy(const Entry& e, int dim, int64_t begin, int64_t end) {
    const Shape& shape = e.info.shape;
    Shape out_shape = shape;
    int64_t outer = 1, inner = NumElements(shape), extent = 1;
    if (dim < 0) {
      begin = 0, end = 1;  // the whole tensor as one run
    } else {
      inner = 1;
      for (int i = 0; i < dim; ++i) outer *= shape[static_cast<size_t>(i)];
      for (size_t i = static_cast<size_t>(dim) + 1; i < shape.size(); ++i) inner *= shape[i];
      extent = shape[static_cast<size_t>(dim)];
      out_shape[static_cast<size_t>(dim)] = end - begin;
    }
    Tensor t = Tensor::Empty(out_shape, e.info.dtype);
    const size_t stored = StoredSize(e.stored_dtype);
    const int64_t run = (end - begin) * inner;  // contiguous elements per outer index
    for (int64_t o = 0; o < outer; ++o) {
      const char* src = e.data + ((o * extent + begin) * inner) * static_cast<int64_t>(stored);
      const int64_t dst_index = o * run;
      if (e.stored_dtype == "F16") {
        float* dst = t.data<float>() + dst_index;
        for (int64_t i = 0; i < run; ++i) {
          uint16_t h;
          std::memcpy(&h, src + 2 * i, 2);
          dst[i] = HalfToFloat(h);
        }
      } else {
        std::memcpy(static_cast<char*>(t.raw()) + dst_index * static_cast<int64_t>(stored), src,
                    static_cast<size_t>(run) * stored);
      }
    }
    return t;
  }

  std::string origin_;
  std::map<std::string, Entry> entries_;
};

void WriteAll(int fd, const char* data, size_t size, uint64_t offset, const std::string& path) {
  while (size > 0) {
    const ssize_t n = pwrite(fd, data, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    GEMMAPOD_CHECK(n > 0, path, ": write failed: ", std::strerror(errno));
    data += n;
    size -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

void SyncPath(const fs::path& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  fsync(fd);
  close(fd);
}

}  // namespace

std::unique_ptr<TensorSource> OpenSafetensors(const std::string& path) {
  auto source = std::make_unique<SafetensorsSource>(path);
  if (!fs::is_directory(path)) {
    source->Add(ParseFile(std::make_shared<MappedFile>(path)));
    return source;
  }
  const fs::path dir(path);
  const fs::path index = dir / "model.safetensors.index.json";
  if (fs::exists(index)) {
    std::ifstream in(index);
    Json j;
    try {
      j = Json::parse(in);
    } catch (const Json::exception& e) {
      throw Error(StrCat(index.string(), ": not valid JSON: ", e.what()));
    }
    GEMMAPOD_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
                   index.string(), ": no \"weight_map\" object");
    std::map<std::string, std::map<std::string, Entry>> shards;
    for (const auto& [name, file] : j["weight_map"].items()) {
      GEMMAPOD_CHECK(file.is_string(), index.string(), ": weight_map entry for '", name,
                     "' is not a file name");
      const std::string shard = file.get<std::string>();
      GEMMAPOD_CHECK(shard.find('/') == std::string::npos, index.string(), ": shard '", shard,
                     "' must be a file in the same directory");
      const fs::path shard_path = dir / shard;
      if (!shards.count(shard)) {
        GEMMAPOD_CHECK(fs::exists(shard_path), index.string(), ": names shard ", shard,
                       " (for tensor '", name, "'), which does not exist");
        shards[shard] = ParseFile(std::make_shared<MappedFile>(shard_path.string()));
      }
      source->AddFrom(shards[shard], name, shard_path.string(), index.string());
    }
    return source;
  }
  const fs::path single = dir / "model.safetensors";
  GEMMAPOD_CHECK(fs::exists(single), path,
                 ": no model.safetensors or model.safetensors.index.json in this directory");
  source->Add(ParseFile(std::make_shared<MappedFile>(single.string())));
  return source;
}

SafetensorsWriter::SafetensorsWriter(std::string directory, std::vector<TensorInfo> tensors,
                                     int64_t max_shard_bytes)
    : directory_(std::move(directory)) {
  GEMMAPOD_CHECK(max_shard_bytes > 0, "safetensors: max shard size must be positive");
  GEMMAPOD_CHECK(!tensors.empty(), directory_.string(), ": no tensors to write");
  std::error_code ec;
  if (fs::exists(directory_, ec)) {
    GEMMAPOD_CHECK(fs::is_directory(directory_) && fs::is_empty(directory_), directory_.string(),
                   ": exists and is not an empty directory; refusing to overwrite it");
  }
  staging_ = directory_;
  staging_ += StrCat(".tmp-", getpid());
  GEMMAPOD_CHECK(!fs::exists(staging_), staging_.string(),
                 ": a temporary directory of that name already exists");

  // Plan the shards: tensors in the given order, a new shard when the next one would overflow.
  std::vector<std::vector<std::string>> shard_tensors(1);
  std::vector<uint64_t> shard_bytes(1, 0);
  for (const TensorInfo& t : tensors) {
    GEMMAPOD_CHECK(!slots_.count(t.name), directory_.string(), ": tensor '", t.name,
                   "' listed twice");
    const uint64_t bytes = static_cast<uint64_t>(NumElements(t.shape)) * DTypeSize(t.dtype);
    if (shard_bytes.back() > 0 &&
        shard_bytes.back() + bytes > static_cast<uint64_t>(max_shard_bytes)) {
      shard_tensors.emplace_back();
      shard_bytes.push_back(0);
    }
    Slot s;
    s.shard = shard_tensors.size() - 1;
    s.offset = shard_bytes.back();  // relative to the data start, for now
    s.info = t;
    slots_[t.name] = s;
    shard_tensors.back().push_back(t.name);
    shard_bytes.back() += bytes;
  }
  const size_t n = shard_tensors.size();
  for (size_t i = 0; i < n; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, n);
    shard_names_.push_back(n == 1 ? "model.safetensors" : name);
  }

  fs::create_directories(staging_, ec);
  GEMMAPOD_CHECK(!ec, staging_.string(), ": cannot create: ", ec.message());
  // A constructor that throws runs no destructor: clean up here what was made so far.
  try {
    Json weight_map = Json::object();
    uint64_t total = 0;
    for (size_t i = 0; i < n; ++i) {
      Json header = Json::object();
      header["__metadata__"] = {{"format", "pt"}};
      for (const std::string& name : shard_tensors[i]) {
        const Slot& s = slots_[name];
        const uint64_t bytes =
            static_cast<uint64_t>(NumElements(s.info.shape)) * DTypeSize(s.info.dtype);
        header[name] = {{"dtype", StoredName(s.info.dtype)},
                        {"shape", s.info.shape},
                        {"data_offsets", {s.offset, s.offset + bytes}}};
        weight_map[name] = shard_names_[i];
        total += bytes;
      }
      std::string text = header.dump();
      text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned
      const uint64_t data_start = 8 + text.size();
      const fs::path file = staging_ / shard_names_[i];
      const int fd = open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      GEMMAPOD_CHECK(fd >= 0, file.string(), ": cannot create: ", std::strerror(errno));
      shard_fds_.push_back(fd);
      char len[8];
      for (int b = 0; b < 8; ++b) len[b] = static_cast<char>((text.size() >> (8 * b)) & 0xff);
      WriteAll(fd, len, 8, 0, file.string());
      WriteAll(fd, text.data(), text.size(), 8, file.string());
      GEMMAPOD_CHECK(ftruncate(fd, static_cast<off_t>(data_start + shard_bytes[i])) == 0,
                     file.string(), ": cannot size: ", std::strerror(errno));
      for (const std::string& name : shard_tensors[i]) slots_[name].offset += data_start;
    }
    if (n > 1) {
      Json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
      std::ofstream out(staging_ / "model.safetensors.index.json");
      out << index.dump(2) << "\n";
      GEMMAPOD_CHECK(out.good(), (staging_ / "model.safetensors.index.json").string(),
                     ": write failed");
    }

  } catch (...) {
    for (int fd : shard_fds_) close(fd);
    shard_fds_.clear();
    fs::remove_all(staging_, ec);
    throw;
  }
}

SafetensorsWriter::~SafetensorsWriter() {
  for (int fd : shard_fds_) {
    if (fd >= 0) close(fd);
  }
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(staging_, ec);
  }
}

void SafetensorsWriter::Write(const std::string& name, const Tensor& tensor) {
  auto it = slots_.find(name);
  GEMMAPOD_CHECK(it != slots_.end(), directory_.string(), ": tensor '", name,
                 "' was not planned for this file");
  Slot& s = it->second;
  GEMMAPOD_CHECK(tensor.shape() == s.info.shape && tensor.dtype() == s.info.dtype,
                 directory_.string(), ": tensor '", name, "' is ", tensor.Describe(),
                 " but was planned as ", DTypeName(s.info.dtype), ShapeToString(s.info.shape));
  GEMMAPOD_CHECK(tensor.device().is_cpu(), directory_.string(), ": tensor '", name,
                 "' must be on the host");
  const fs::path file = staging_ / shard_names_[s.shard];
  WriteAll(shard_fds_[s.shard], static_cast<const char*>(tensor.raw()), tensor.nbytes(), s.offset,
           file.string());
  s.written = true;
}

void SafetensorsWriter::Commit() {
  for (const auto& [name, s] : slots_) {
    GEMMAPOD_CHECK(s.written, directory_.string(), ": tensor '", name, "' was never written");
  }
  for (size_t i = 0; i < shard_fds_.size(); ++i) {
    GEMMAPOD_CHECK(fsync(shard_fds_[i]) == 0, (staging_ / shard_names_[i]).string(),
                   ": fsync failed: ", std::strerror(errno));
    close(shard_fds_[i]);
    shard_fds_[i] = -1;
  }
  for (const auto& entry : fs::directory_iterator(staging_)) SyncPath(entry.path());
  SyncPath(staging_);
  std::error_code ec;
  if (fs::exists(directory_)) fs::remove(directory_, ec);  // checked empty at construction
  fs::rename(staging_, directory_, ec);
  GEMMAPOD_CHECK(!ec, directory_.string(),
                 ": cannot move the finished model into place: ", ec.message());
  SyncPath(directory_.parent_path().empty() ? fs::path(".") : directory_.parent_path());
  committed_ = true;
}

}  // namespace gemmapod
