#include "runtime/checkpoint/hdf5_checkpoint.h"

#include <fcntl.h>
#include <hdf5.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>

#include "runtime/checkpoint/crc32.h"
#include "runtime/checkpoint/output_file.h"
#include "runtime/error.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;

constexpr const char* kFormat = "gemmapod-checkpoint";
constexpr int64_t kFormatVersion = 1;
constexpr hsize_t kChunkBytes = hsize_t{1} << 20;

// HDF5 prints its error stack to stderr by default; we turn failures into messages instead.
void SilenceHdf5() {
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

// The innermost HDF5 error description, for the end of a message.
std::string Hdf5Detail() {
  std::string detail;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned, const H5E_error2_t* e, void* out) -> herr_t {
        auto* s = static_cast<std::string*>(out);
        if (s->empty() && e->desc != nullptr) *s = e->desc;
        return 0;
      },
      &detail);
  H5Eclear2(H5E_DEFAULT);
  return detail.empty() ? "" : " (" + detail + ")";
}

// Closes an HDF5 handle when it goes out of scope.
class Handle {
 public:
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~Handle() {
    if (id_ >= 0) close_(id_);
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

hid_t Check(hid_t id, const std::string& what) {
  if (id < 0) throw Error(what + Hdf5Detail());
  return id;
}

void CheckStatus(herr_t status, const std::string& what) {
  if (status < 0) throw Error(what + Hdf5Detail());
}

// bfloat16 as an HDF5 float: sign bit 15, 8 exponent bits at 7 (bias 127), 7 mantissa bits at 0.
// The fields must be set before shrinking the precision and size, or HDF5 refuses.
hid_t MakeBF16Type() {
  const hid_t t = Check(H5Tcopy(H5T_IEEE_F32LE), "HDF5: cannot copy the f32 type");
  CheckStatus(H5Tset_fields(t, 15, 7, 8, 0, 7), "HDF5: bf16 fields");
  CheckStatus(H5Tset_offset(t, 0), "HDF5: bf16 offset");
  CheckStatus(H5Tset_precision(t, 16), "HDF5: bf16 precision");
  CheckStatus(H5Tset_size(t, 2), "HDF5: bf16 size");
  CheckStatus(H5Tset_ebias(t, 127), "HDF5: bf16 exponent bias");
  return t;
}

bool IsBF16Type(hid_t t) {
  if (H5Tget_class(t) != H5T_FLOAT || H5Tget_size(t) != 2) return false;
  size_t spos, epos, esize, mpos, msize;
  if (H5Tget_fields(t, &spos, &epos, &esize, &mpos, &msize) < 0) return false;
  return spos == 15 && epos == 7 && esize == 8 && mpos == 0 && msize == 7 && H5Tget_ebias(t) == 127;
}

// What a stored dataset type reads as; false for types we do not read.
bool ClassifyType(hid_t t, DType* out) {
  const H5T_class_t cls = H5Tget_class(t);
  const size_t size = H5Tget_size(t);
  if (cls == H5T_FLOAT && size == 4) {
    *out = DType::kF32;
  } else if (IsBF16Type(t)) {
    *out = DType::kBF16;
  } else if (cls == H5T_INTEGER && H5Tget_sign(t) == H5T_SGN_2 && size == 4) {
    *out = DType::kI32;
  } else if (cls == H5T_INTEGER && H5Tget_sign(t) == H5T_SGN_2 && size == 1) {
    *out = DType::kI8;
  } else {
    return false;
  }
  return true;
}

hid_t MemoryType(DType t, hid_t bf16) {
  switch (t) {
    case DType::kF32:
      return H5T_NATIVE_FLOAT;
    case DType::kBF16:
      return bf16;  // same as the file type: raw 16-bit copy, no conversion
    case DType::kI32:
      return H5T_NATIVE_INT32;
    case DType::kI8:
      return H5T_NATIVE_INT8;
  }
  return -1;
}

hid_t FileType(DType t, hid_t bf16) {
  switch (t) {
    case DType::kF32:
      return H5T_IEEE_F32LE;
    case DType::kBF16:
      return bf16;
    case DType::kI32:
      return H5T_STD_I32LE;
    case DType::kI8:
      return H5T_STD_I8LE;
  }
  return -1;
}

void WriteScalarAttribute(hid_t obj, const char* name, hid_t type, const void* value,
                          const std::string& where) {
  Handle space(Check(H5Screate(H5S_SCALAR), where), H5Sclose);
  Handle attr(Check(H5Acreate2(obj, name, type, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                    where + ": cannot create attribute '" + name + "'"),
              H5Aclose);
  CheckStatus(H5Awrite(attr.get(), type, value), where + ": cannot write attribute " + name);
}

// Strings are stored fixed-length (null-padded UTF-8, at least one byte wide): a variable-length
// string lives in HDF5's global heap, the one piece of metadata without a checksum even in the
// 1.10 format, and a corrupted global heap hangs the library when the string is read.
hid_t FixedStringType(size_t width) {
  const hid_t t = Check(H5Tcopy(H5T_C_S1), "HDF5: string type");
  CheckStatus(H5Tset_size(t, std::max<size_t>(width, 1)), "HDF5: string type");
  CheckStatus(H5Tset_strpad(t, H5T_STR_NULLPAD), "HDF5: string type");
  CheckStatus(H5Tset_cset(t, H5T_CSET_UTF8), "HDF5: string type");
  return t;
}

hid_t VariableStringType() {
  const hid_t t = Check(H5Tcopy(H5T_C_S1), "HDF5: string type");
  CheckStatus(H5Tset_size(t, H5T_VARIABLE), "HDF5: string type");
  CheckStatus(H5Tset_cset(t, H5T_CSET_UTF8), "HDF5: string type");
  return t;
}

void WriteAttribute(hid_t obj, const std::string& name, const AttributeValue& value,
                    const std::string& where) {
  const std::string what = StrCat(where, ": attribute '", name, "'");
  if (const auto* v = std::get_if<int64_t>(&value)) {
    WriteScalarAttribute(obj, name.c_str(), H5T_NATIVE_INT64, v, what);
  } else if (const auto* v = std::get_if<double>(&value)) {
    WriteScalarAttribute(obj, name.c_str(), H5T_NATIVE_DOUBLE, v, what);
  } else if (const auto* v = std::get_if<std::string>(&value)) {
    Handle type(FixedStringType(v->size()), H5Tclose);
    WriteScalarAttribute(obj, name.c_str(), type.get(), v->data(), what);
  } else {
    hsize_t n = 0;
    hid_t mem = -1;
    const void* data = nullptr;
    std::string strings;  // fixed-width items, null-padded
    std::optional<Handle> string_type;
    if (const auto* v = std::get_if<std::vector<int64_t>>(&value)) {
      n = v->size(), mem = H5T_NATIVE_INT64, data = v->data();
    } else if (const auto* v = std::get_if<std::vector<double>>(&value)) {
      n = v->size(), mem = H5T_NATIVE_DOUBLE, data = v->data();
    } else {
      const auto& s = std::get<std::vector<std::string>>(value);
      size_t width = 1;
      for (const std::string& item : s) width = std::max(width, item.size());
      for (const std::string& item : s) {
        strings += item;
        strings.append(width - item.size(), '\0');
      }
      string_type.emplace(FixedStringType(width), H5Tclose);
      n = s.size(), mem = string_type->get(), data = strings.data();
    }
    Handle space(Check(H5Screate_simple(1, &n, nullptr), what), H5Sclose);
    Handle attr(Check(H5Acreate2(obj, name.c_str(), mem, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                      what + ": cannot create"),
                H5Aclose);
    if (n > 0) CheckStatus(H5Awrite(attr.get(), mem, data), what + ": cannot write");
  }
}

AttributeValue ReadAttribute(hid_t attr, const std::string& what) {
  Handle type(Check(H5Aget_type(attr), what), H5Tclose);
  Handle space(Check(H5Aget_space(attr), what), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  const hssize_t n = H5Sget_simple_extent_npoints(space.get());
  GEMMAPOD_CHECK(rank == 0 || rank == 1, what, ": attributes must be scalars or 1-D");
  GEMMAPOD_CHECK(n >= 0 && (rank == 1 || n == 1), what, ": an empty (null) attribute");
  const H5T_class_t cls = H5Tget_class(type.get());
  if (cls == H5T_STRING && H5Tis_variable_str(type.get()) <= 0) {
    // Fixed-length strings (numpy bytes written by h5py, other tools): HDF5 has no conversion
    // to variable-length strings, so read the fixed bytes and cut each at its padding.
    const size_t width = H5Tget_size(type.get());
    GEMMAPOD_CHECK(width > 0, what, ": zero-width string type");
    Handle mem(Check(H5Tcopy(type.get()), what), H5Tclose);
    CheckStatus(H5Tset_strpad(mem.get(), H5T_STR_NULLPAD), what);
    std::string buffer(width * static_cast<size_t>(std::max<hssize_t>(n, 1)), '\0');
    if (n > 0) CheckStatus(H5Aread(attr, mem.get(), buffer.data()), what);
    std::vector<std::string> out;
    for (hssize_t i = 0; i < n; ++i) {
      std::string item = buffer.substr(static_cast<size_t>(i) * width, width);
      item.resize(std::strlen(item.c_str()));
      if (H5Tget_strpad(type.get()) == H5T_STR_SPACEPAD) {
        item.erase(item.find_last_not_of(' ') + 1);
      }
      out.push_back(std::move(item));
    }
    if (rank == 0) return out.at(0);
    return out;
  }
  if (cls == H5T_STRING) {
    Handle mem(VariableStringType(), H5Tclose);
    // ASCII and UTF-8 strings do not convert into each other in HDF5: read in the file's own.
    CheckStatus(H5Tset_cset(mem.get(), H5Tget_cset(type.get())), what);
    std::vector<char*> values(static_cast<size_t>(std::max<hssize_t>(n, 1)), nullptr);
    if (n > 0) CheckStatus(H5Aread(attr, mem.get(), values.data()), what);
    std::vector<std::string> out;
    for (hssize_t i = 0; i < n; ++i) out.emplace_back(values[i] ? values[i] : "");
    if (n > 0) H5Dvlen_reclaim(mem.get(), space.get(), H5P_DEFAULT, values.data());
    if (rank == 0) return out.at(0);
    return out;
  }
  if (cls == H5T_INTEGER) {
    std::vector<int64_t> v(static_cast<size_t>(n));
    if (n > 0) CheckStatus(H5Aread(attr, H5T_NATIVE_INT64, v.data()), what);
    if (rank == 0) return v.at(0);
    return v;
  }
  if (cls == H5T_FLOAT) {
    std::vector<double> v(static_cast<size_t>(n));
    if (n > 0) CheckStatus(H5Aread(attr, H5T_NATIVE_DOUBLE, v.data()), what);
    if (rank == 0) return v.at(0);
    return v;
  }
  throw Error(StrCat(what, ": unsupported attribute type"));
}

Attributes ReadAllAttributes(hid_t obj, const std::string& where) {
  // Attributes by index rather than through H5Aiterate2: the iterator's callback cannot throw,
  // and opening each attribute ourselves keeps every handle under our control.
  H5O_info_t info;
  CheckStatus(H5Oget_info2(obj, &info, H5O_INFO_NUM_ATTRS), where + ": cannot read attributes");
  Attributes out;
  for (hsize_t i = 0; i < info.num_attrs; ++i) {
    Handle attr(
        Check(H5Aopen_by_idx(obj, ".", H5_INDEX_NAME, H5_ITER_INC, i, H5P_DEFAULT, H5P_DEFAULT),
              StrCat(where, ": attribute ", i)),
        H5Aclose);
    const ssize_t len = H5Aget_name(attr.get(), 0, nullptr);
    GEMMAPOD_CHECK(len >= 0, where, ": attribute ", i, " has no readable name");
    std::string name(static_cast<size_t>(len), '\0');
    H5Aget_name(attr.get(), name.size() + 1, name.data());
    out[name] = ReadAttribute(attr.get(), StrCat(where, ": attribute '", name, "'"));
  }
  return out;
}

int64_t ReadInt64Attribute(hid_t obj, const char* name, const std::string& what) {
  GEMMAPOD_CHECK(H5Aexists(obj, name) > 0, what, ": attribute '", name, "' is missing");
  Handle attr(Check(H5Aopen(obj, name, H5P_DEFAULT), what), H5Aclose);
  // Read through the general reader: it sizes the buffer from the file, so an attribute that is
  // an array (a crafted file) cannot overrun a single integer.
  const AttributeValue value = ReadAttribute(attr.get(), StrCat(what, ": attribute '", name, "'"));
  const int64_t* v = std::get_if<int64_t>(&value);
  GEMMAPOD_CHECK(v != nullptr, what, ": attribute '", name, "' must be one integer");
  return *v;
}

void ValidateName(const std::string& name, const std::string& where) {
  GEMMAPOD_CHECK(
      !name.empty() && name.find('/') == std::string::npos && name != "." && name != "..", where,
      ": invalid name '", name, "' (non-empty, no '/')");
}

void SyncPath(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  GEMMAPOD_CHECK(fd >= 0, path, ": cannot open to sync: ", std::strerror(errno));
  const int rc = fsync(fd);
  close(fd);
  GEMMAPOD_CHECK(rc == 0, path, ": fsync failed: ", std::strerror(errno));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Reader

namespace {
std::atomic<int64_t> opened_files{0};
}  // namespace

int64_t Hdf5CheckpointReader::files_opened() { return opened_files.load(); }

std::unique_ptr<Hdf5CheckpointReader> Hdf5CheckpointReader::Open(const std::string& path) {
  SilenceHdf5();
  std::error_code ec;
  GEMMAPOD_CHECK(fs::exists(path, ec), path, ": no such file");
  GEMMAPOD_CHECK(fs::is_regular_file(path, ec), path, ": not a regular file");
  GEMMAPOD_CHECK(H5Fis_hdf5(path.c_str()) > 0, path,
                 ": not an HDF5 file (or truncated); checkpoints come from `gemmapod convert`");
  std::unique_ptr<Hdf5CheckpointReader> r(new Hdf5CheckpointReader());
  r->path_ = path;
  r->file_ = Check(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT),
                   path + ": cannot open the HDF5 file (truncated or corrupt?)");
  ++opened_files;
  const hid_t f = r->file_;
  std::string format;
  if (H5Aexists(f, "format") > 0) {
    Handle attr(Check(H5Aopen(f, "format", H5P_DEFAULT), path), H5Aclose);
    const AttributeValue v = ReadAttribute(attr.get(), path + ": attribute 'format'");
    if (const auto* s = std::get_if<std::string>(&v)) format = *s;
  }
  GEMMAPOD_CHECK(format == kFormat, path, ": an HDF5 file but not a gemmapod checkpoint (root ",
                 "attribute format is '", format, "', expected '", kFormat, "')");
  const int64_t version = ReadInt64Attribute(f, "format_version", path);
  GEMMAPOD_CHECK(version >= 1 && version <= kFormatVersion, path, ": format_version ", version,
                 " is newer than this gemmapod reads (", kFormatVersion, ")");

  if (H5Lexists(f, "config", H5P_DEFAULT) > 0) {
    Handle group(Check(H5Gopen2(f, "config", H5P_DEFAULT), path + ": /config"), H5Gclose);
    r->config_ = ReadAllAttributes(group.get(), path + ": /config");
  }
  GEMMAPOD_CHECK(H5Lexists(f, "params", H5P_DEFAULT) > 0, path, ": no /params group");
  Handle params(Check(H5Gopen2(f, "params", H5P_DEFAULT), path + ": /params"), H5Gclose);
  std::vector<std::string> names;
  hsize_t idx = 0;
  CheckStatus(H5Literate(
                  params.get(), H5_INDEX_NAME, H5_ITER_INC, &idx,
                  [](hid_t, const char* name, const H5L_info_t* link, void* p) -> herr_t {
                    // Soft and external links could point a reader at other files: a
                    // checkpoint holds its tensors itself. "/" marks one for the error below.
                    static_cast<std::vector<std::string>*>(p)->push_back(
                        link->type == H5L_TYPE_HARD ? std::string(name) : "/" + std::string(name));
                    return 0;
                  },
                  &names),
              path + ": cannot list /params");
  for (const std::string& name : names) {
    GEMMAPOD_CHECK(name.front() != '/', path, ": /params", name,
                   " is a link, not a dataset; a checkpoint stores its tensors itself");
    const std::string what = StrCat(path, ": tensor '", name, "'");
    Handle ds(Check(H5Dopen2(params.get(), name.c_str(), H5P_DEFAULT), what), H5Dclose);
    Handle dcpl(Check(H5Dget_create_plist(ds.get()), what), H5Pclose);
    GEMMAPOD_CHECK(H5Pget_external_count(dcpl.get()) == 0, what,
                   ": stored in external files; a checkpoint stores its tensors itself");
    Handle type(Check(H5Dget_type(ds.get()), what), H5Tclose);
    Handle space(Check(H5Dget_space(ds.get()), what), H5Sclose);
    TensorInfo info;
    info.name = name;
    GEMMAPOD_CHECK(ClassifyType(type.get(), &info.dtype), what,
                   ": stored with a type gemmapod does not read (f32, bf16, i32, i8)");
    const int rank = H5Sget_simple_extent_ndims(space.get());
    GEMMAPOD_CHECK(rank >= 0, what, ": bad dataspace");
    std::vector<hsize_t> dims(static_cast<size_t>(rank));
    H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
    for (hsize_t d : dims) {
      GEMMAPOD_CHECK(d <= static_cast<hsize_t>(INT64_MAX), what, ": dimension too large");
      info.shape.push_back(static_cast<int64_t>(d));
    }
    int64_t bytes = 0;
    GEMMAPOD_CHECK(!__builtin_mul_overflow(NumElements(info.shape),
                                           static_cast<int64_t>(DTypeSize(info.dtype)), &bytes),
                   what, ": shape ", ShapeToString(info.shape), " is too large");
    r->tensors_[name] = info;
  }
  return r;
}

Hdf5CheckpointReader::~Hdf5CheckpointReader() {
  if (file_ >= 0) H5Fclose(file_);
}

std::vector<TensorInfo> Hdf5CheckpointReader::List() const {
  std::vector<TensorInfo> out;
  for (const auto& [name, info] : tensors_) out.push_back(info);
  return out;
}

TensorInfo Hdf5CheckpointReader::Info(const std::string& name) const {
  auto it = tensors_.find(name);
  GEMMAPOD_CHECK(it != tensors_.end(), path_, ": no tensor named '", name, "'");
  return it->second;
}

Tensor Hdf5CheckpointReader::Read(const std::string& name) const {
  const TensorInfo info = Info(name);
  const std::string what = StrCat(path_, ": tensor '", name, "'");
  const std::string full = "params/" + name;
  Handle ds(Check(H5Dopen2(file_, full.c_str(), H5P_DEFAULT), what), H5Dclose);
  Tensor t = Tensor::Empty(info.shape, info.dtype);
  Handle bf16(MakeBF16Type(), H5Tclose);
  if (t.numel() > 0) {
    CheckStatus(H5Dread(ds.get(), MemoryType(info.dtype, bf16.get()), H5S_ALL, H5S_ALL, H5P_DEFAULT,
                        t.raw()),
                what + ": read failed (truncated or corrupt file?)");
  }
  const int64_t stored = ReadInt64Attribute(ds.get(), "crc32", what);
  const uint32_t computed = Crc32(t.raw(), t.nbytes());
  GEMMAPOD_CHECK(static_cast<uint32_t>(stored) == computed, what,
                 ": checksum mismatch (stored crc32 ", stored, ", data has ", computed,
                 "): the file is corrupt");
  return t;
}

Tensor Hdf5CheckpointReader::ReadSlice(const std::string& name, int dim, int64_t begin,
                                       int64_t end) const {
  const TensorInfo info = Info(name);
  const std::string what = StrCat(path_, ": tensor '", name, "'");
  const int rank = static_cast<int>(info.shape.size());
  GEMMAPOD_CHECK(dim >= 0 && dim < rank && begin >= 0 && begin <= end &&
                     end <= info.shape[static_cast<size_t>(dim)],
                 what, " of shape ", ShapeToString(info.shape), ": slice [", begin, ", ", end,
                 ") of dimension ", dim, " is out of range");
  Shape out_shape = info.shape;
  out_shape[static_cast<size_t>(dim)] = end - begin;
  Tensor t = Tensor::Empty(out_shape, info.dtype);
  if (t.numel() == 0) return t;
  const std::string full = "params/" + name;
  Handle ds(Check(H5Dopen2(file_, full.c_str(), H5P_DEFAULT), what), H5Dclose);
  Handle file_space(Check(H5Dget_space(ds.get()), what), H5Sclose);
  std::vector<hsize_t> start(static_cast<size_t>(rank), 0), count(rank);
  for (int i = 0; i < rank; ++i) count[i] = static_cast<hsize_t>(out_shape[i]);
  start[static_cast<size_t>(dim)] = static_cast<hsize_t>(begin);
  CheckStatus(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start.data(), nullptr,
                                  count.data(), nullptr),
              what + ": hyperslab");
  Handle mem_space(Check(H5Screate_simple(rank, count.data(), nullptr), what), H5Sclose);
  Handle bf16(MakeBF16Type(), H5Tclose);
  CheckStatus(H5Dread(ds.get(), MemoryType(info.dtype, bf16.get()), mem_space.get(),
                      file_space.get(), H5P_DEFAULT, t.raw()),
              what + ": read failed (truncated or corrupt file?)");
  return t;
}

bool Hdf5CheckpointReader::HasFile(const std::string& name) const {
  if (H5Lexists(file_, "files", H5P_DEFAULT) <= 0) return false;
  const std::string full = "files/" + name;
  return H5Lexists(file_, full.c_str(), H5P_DEFAULT) > 0;
}

std::string Hdf5CheckpointReader::ReadFile(const std::string& name) const {
  const std::string what = StrCat(path_, ": embedded file '", name, "'");
  GEMMAPOD_CHECK(HasFile(name), what, " is absent");
  const std::string full = "files/" + name;
  Handle ds(Check(H5Dopen2(file_, full.c_str(), H5P_DEFAULT), what), H5Dclose);
  Handle space(Check(H5Dget_space(ds.get()), what), H5Sclose);
  const hssize_t n = H5Sget_simple_extent_npoints(space.get());
  std::string bytes(static_cast<size_t>(n), '\0');
  if (n > 0) {
    CheckStatus(H5Dread(ds.get(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data()),
                what + ": read failed");
  }
  const int64_t stored = ReadInt64Attribute(ds.get(), "crc32", what);
  GEMMAPOD_CHECK(static_cast<uint32_t>(stored) == Crc32(bytes.data(), bytes.size()), what,
                 ": checksum mismatch: the file is corrupt");
  return bytes;
}

std::optional<uint32_t> Hdf5CheckpointReader::StoredCrc32(const std::string& name) const {
  Info(name);  // names the file and tensor when it is absent
  const std::string what = StrCat(path_, ": tensor '", name, "'");
  const std::string full = "params/" + name;
  Handle ds(Check(H5Dopen2(file_, full.c_str(), H5P_DEFAULT), what), H5Dclose);
  return static_cast<uint32_t>(ReadInt64Attribute(ds.get(), "crc32", what));
}

void Hdf5CheckpointReader::VerifyAll() const {
  for (const auto& [name, info] : tensors_) Read(name);
  if (H5Lexists(file_, "files", H5P_DEFAULT) <= 0) return;
  Handle files(Check(H5Gopen2(file_, "files", H5P_DEFAULT), path_ + ": /files"), H5Gclose);
  std::vector<std::string> names;
  hsize_t idx = 0;
  H5Literate(
      files.get(), H5_INDEX_NAME, H5_ITER_INC, &idx,
      [](hid_t, const char* name, const H5L_info_t*, void* p) -> herr_t {
        static_cast<std::vector<std::string>*>(p)->push_back(name);
        return 0;
      },
      &names);
  for (const std::string& name : names) ReadFile(name);
}

namespace {

// A whole dataset at `full` with its crc32 checked, for groups beside /params.
Tensor ReadWholeDataset(hid_t file, const std::string& full, const std::string& what) {
  GEMMAPOD_CHECK(H5Lexists(file, full.c_str(), H5P_DEFAULT) > 0, what, " is absent");
  Handle ds(Check(H5Dopen2(file, full.c_str(), H5P_DEFAULT), what), H5Dclose);
  Handle type(Check(H5Dget_type(ds.get()), what), H5Tclose);
  Handle space(Check(H5Dget_space(ds.get()), what), H5Sclose);
  DType dtype;
  GEMMAPOD_CHECK(ClassifyType(type.get(), &dtype), what,
                 ": stored with a type gemmapod does not read (f32, bf16, i32, i8)");
  const int rank = H5Sget_simple_extent_ndims(space.get());
  GEMMAPOD_CHECK(rank >= 0 && rank <= 8, what, ": bad dataspace");
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  Shape shape;
  for (hsize_t d : dims) {
    GEMMAPOD_CHECK(d <= (hsize_t{1} << 40), what, ": dimension too large");
    shape.push_back(static_cast<int64_t>(d));
  }
  Tensor t = Tensor::Empty(shape, dtype);
  Handle bf16(MakeBF16Type(), H5Tclose);
  if (t.numel() > 0) {
    CheckStatus(
        H5Dread(ds.get(), MemoryType(dtype, bf16.get()), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw()),
        what + ": read failed (truncated or corrupt file?)");
  }
  const int64_t stored = ReadInt64Attribute(ds.get(), "crc32", what);
  GEMMAPOD_CHECK(static_cast<uint32_t>(stored) == Crc32(t.raw(), t.nbytes()), what,
                 ": checksum mismatch: the file is corrupt");
  return t;
}

}  // namespace

bool Hdf5CheckpointReader::HasGroup(const std::string& group) const {
  // H5Lexists needs every parent to exist: walk the path.
  std::string at;
  size_t begin = 0;
  while (begin <= group.size()) {
    const size_t end = std::min(group.find('/', begin), group.size());
    if (!at.empty()) at += '/';
    at.append(group, begin, end - begin);
    if (H5Lexists(file_, at.c_str(), H5P_DEFAULT) <= 0) return false;
    begin = end + 1;
  }
  H5O_info_t info;
  if (H5Oget_info_by_name2(file_, group.c_str(), &info, H5O_INFO_BASIC, H5P_DEFAULT) < 0) {
    return false;
  }
  return info.type == H5O_TYPE_GROUP;
}

Attributes Hdf5CheckpointReader::GroupAttributes(const std::string& group) const {
  const std::string what = StrCat(path_, ": group /", group);
  GEMMAPOD_CHECK(HasGroup(group), what, " is absent");
  Handle g(Check(H5Gopen2(file_, group.c_str(), H5P_DEFAULT), what), H5Gclose);
  return ReadAllAttributes(g.get(), what);
}

std::vector<TensorInfo> Hdf5CheckpointReader::ListGroup(const std::string& group) const {
  const std::string what = StrCat(path_, ": group /", group);
  GEMMAPOD_CHECK(HasGroup(group), what, " is absent");
  Handle g(Check(H5Gopen2(file_, group.c_str(), H5P_DEFAULT), what), H5Gclose);
  std::vector<std::string> names;
  hsize_t idx = 0;
  CheckStatus(
      H5Literate(
          g.get(), H5_INDEX_NAME, H5_ITER_INC, &idx,
          [](hid_t parent, const char* name, const H5L_info_t* link, void* p) -> herr_t {
            H5O_info_t info;
            if (link->type == H5L_TYPE_HARD &&
                H5Oget_info_by_name2(parent, name, &info, H5O_INFO_BASIC, H5P_DEFAULT) >= 0 &&
                info.type == H5O_TYPE_DATASET) {
              static_cast<std::vector<std::string>*>(p)->push_back(name);
            }
            return 0;
          },
          &names),
      what + ": cannot list");
  std::vector<TensorInfo> out;
  for (const std::string& name : names) {
    const std::string full = group + "/" + name;
    const std::string item = StrCat(what, ": tensor '", name, "'");
    Handle ds(Check(H5Dopen2(file_, full.c_str(), H5P_DEFAULT), item), H5Dclose);
    Handle type(Check(H5Dget_type(ds.get()), item), H5Tclose);
    Handle space(Check(H5Dget_space(ds.get()), item), H5Sclose);
    TensorInfo info;
    info.name = name;
    GEMMAPOD_CHECK(ClassifyType(type.get(), &info.dtype), item, ": stored with an unknown type");
    const int rank = H5Sget_simple_extent_ndims(space.get());
    GEMMAPOD_CHECK(rank >= 0 && rank <= 8, item, ": bad dataspace");
    std::vector<hsize_t> dims(static_cast<size_t>(rank));
    H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
    for (hsize_t d : dims) info.shape.push_back(static_cast<int64_t>(d));
    out.push_back(info);
  }
  return out;
}

Tensor Hdf5CheckpointReader::ReadFromGroup(const std::string& group,
                                           const std::string& name) const {
  const std::string what = StrCat(path_, ": tensor '", name, "' of group /", group);
  GEMMAPOD_CHECK(HasGroup(group), path_, ": group /", group, " is absent");
  return ReadWholeDataset(file_, group + "/" + name, what);
}

// ---------------------------------------------------------------------------------------------
// Writer

int RemoveAbandonedTemporaries(const std::string& path) {
  const fs::path target(path);
  const fs::path dir = target.parent_path().empty() ? fs::path(".") : target.parent_path();
  const std::string prefix = target.filename().string() + ".tmp-";
  int removed = 0;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string pid_text = name.substr(prefix.size());
    if (pid_text.empty() || pid_text.find_first_not_of("0123456789") != std::string::npos ||
        pid_text.size() > 9) {
      continue;
    }
    const long pid = std::stol(pid_text);
    // A live process may still be writing it; only a dead writer's file is abandoned.
    if (pid > 0 && kill(static_cast<pid_t>(pid), 0) == -1 && errno == ESRCH &&
        e.is_regular_file(ec)) {
      if (fs::remove(e.path(), ec)) ++removed;
    }
  }
  return removed;
}

Hdf5CheckpointWriter Hdf5CheckpointWriter::Create(const std::string& destination) {
  SilenceHdf5();
  const std::string path = OutputTarget(destination);
  // A writer killed before its rename (kill -9, a power cut) left its temporary file behind.
  RemoveAbandonedTemporaries(path);
  Hdf5CheckpointWriter w;
  w.path_ = path;
  w.tmp_path_ = StrCat(path, ".tmp-", getpid());
  // The file format of HDF5 1.10 and later: every piece of metadata (superblock, object
  // headers, the indexes of chunked datasets) carries a checksum, so a corrupted file is an error
  // when it is read, where the original format's unchecked metadata could crash the library.
  Handle access(Check(H5Pcreate(H5P_FILE_ACCESS), path + ": file access properties"), H5Pclose);
  CheckStatus(H5Pset_libver_bounds(access.get(), H5F_LIBVER_V110, H5F_LIBVER_LATEST),
              path + ": cannot ask for the HDF5 1.10 file format");
  w.file_ = Check(H5Fcreate(w.tmp_path_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, access.get()),
                  path + ": cannot create the checkpoint (is the directory writable?)");
  try {
    const std::string what = path;
    const std::string format = kFormat;
    Handle type(FixedStringType(format.size()), H5Tclose);
    WriteScalarAttribute(w.file_, "format", type.get(), format.data(), what);
    WriteScalarAttribute(w.file_, "format_version", H5T_NATIVE_INT64, &kFormatVersion, what);
    for (const char* group : {"config", "params", "files"}) {
      Handle g(Check(H5Gcreate2(w.file_, group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                     path + ": cannot create group " + group),
               H5Gclose);
    }
    w.bf16_type_ = MakeBF16Type();
    CheckStatus(
        H5Tcommit2(w.file_, "bfloat16", w.bf16_type_, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
        path + ": cannot store the bfloat16 type");
  } catch (...) {
    w.Close();
    std::remove(w.tmp_path_.c_str());
    throw;
  }
  return w;
}

Hdf5CheckpointWriter::Hdf5CheckpointWriter(Hdf5CheckpointWriter&& o) noexcept
    : path_(std::move(o.path_)),
      tmp_path_(std::move(o.tmp_path_)),
      file_(o.file_),
      bf16_type_(o.bf16_type_),
      committed_(o.committed_) {
  o.file_ = -1;
  o.bf16_type_ = -1;
  o.committed_ = true;  // the moved-from writer owns nothing to clean up
}

Hdf5CheckpointWriter::~Hdf5CheckpointWriter() {
  Close();
  if (!committed_ && !tmp_path_.empty()) std::remove(tmp_path_.c_str());
}

void Hdf5CheckpointWriter::Close() {
  if (bf16_type_ >= 0) H5Tclose(bf16_type_);
  bf16_type_ = -1;
  if (file_ >= 0) H5Fclose(file_);
  file_ = -1;
}

void Hdf5CheckpointWriter::SetConfig(const Attributes& config) {
  GEMMAPOD_CHECK(file_ >= 0, path_, ": writer already committed");
  Handle group(Check(H5Gopen2(file_, "config", H5P_DEFAULT), path_ + ": /config"), H5Gclose);
  for (const auto& [name, value] : config) {
    ValidateName(name, path_ + ": config attribute");
    if (H5Aexists(group.get(), name.c_str()) > 0) H5Adelete(group.get(), name.c_str());
    WriteAttribute(group.get(), name, value, path_ + ": /config");
  }
}

void Hdf5CheckpointWriter::Write(const std::string& name, const Tensor& t) {
  GEMMAPOD_CHECK(file_ >= 0, path_, ": writer already committed");
  ValidateName(name, path_ + ": tensor");
  WriteDataset("params/" + name, StrCat(path_, ": tensor '", name, "'"), t);
}

void Hdf5CheckpointWriter::EnsureGroup(const std::string& group) {
  GEMMAPOD_CHECK(file_ >= 0, path_, ": writer already committed");
  const std::string what = StrCat(path_, ": group '", group, "'");
  size_t begin = 0;
  std::string at;
  while (begin <= group.size()) {
    const size_t end = std::min(group.find('/', begin), group.size());
    const std::string part = group.substr(begin, end - begin);
    ValidateName(part, what);
    GEMMAPOD_CHECK(!at.empty() || (part != "config" && part != "params" && part != "files" &&
                                   part != "bfloat16"),
                   what, ": /", part, " is the model's own");
    if (!at.empty()) at += '/';
    at += part;
    if (H5Lexists(file_, at.c_str(), H5P_DEFAULT) <= 0) {
      Handle g(Check(H5Gcreate2(file_, at.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                     what + ": cannot create"),
               H5Gclose);
    }
    begin = end + 1;
  }
}

void Hdf5CheckpointWriter::WriteToGroup(const std::string& group, const std::string& name,
                                        const Tensor& t) {
  EnsureGroup(group);
  ValidateName(name, StrCat(path_, ": tensor of group '", group, "'"));
  WriteDataset(group + "/" + name, StrCat(path_, ": tensor '", name, "' of group /", group), t);
}

void Hdf5CheckpointWriter::SetGroupAttributes(const std::string& group,
                                              const Attributes& attributes) {
  EnsureGroup(group);
  const std::string what = StrCat(path_, ": /", group);
  Handle g(Check(H5Gopen2(file_, group.c_str(), H5P_DEFAULT), what), H5Gclose);
  for (const auto& [name, value] : attributes) {
    ValidateName(name, what + " attribute");
    if (H5Aexists(g.get(), name.c_str()) > 0) H5Adelete(g.get(), name.c_str());
    WriteAttribute(g.get(), name, value, what);
  }
}

void Hdf5CheckpointWriter::WriteDataset(const std::string& full, const std::string& what,
                                        const Tensor& t) {
  GEMMAPOD_CHECK(t.device().is_cpu(), what, ": must be on the host");
  GEMMAPOD_CHECK(H5Lexists(file_, full.c_str(), H5P_DEFAULT) <= 0, what, ": written twice");
  const int rank = t.rank();
  std::vector<hsize_t> dims;
  for (int64_t d : t.shape()) dims.push_back(static_cast<hsize_t>(d));
  Handle space(
      Check(rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(rank, dims.data(), nullptr), what),
      H5Sclose);
  Handle dcpl(Check(H5Pcreate(H5P_DATASET_CREATE), what), H5Pclose);
  // Big tensors are stored in ~1 MiB chunks of whole rows: quick to write, and a rank's row
  // range reads only its chunks. No compression: random-mantissa weights barely compress.
  if (rank >= 1 && t.nbytes() > kChunkBytes && t.numel() > 0) {
    std::vector<hsize_t> chunk = dims;
    const hsize_t row_bytes = t.nbytes() / dims[0];
    chunk[0] = std::max<hsize_t>(1, std::min<hsize_t>(dims[0], kChunkBytes / row_bytes));
    if (row_bytes * chunk[0] < (hsize_t{4} << 30)) {  // HDF5's chunk size limit
      CheckStatus(H5Pset_chunk(dcpl.get(), rank, chunk.data()), what + ": chunking");
    }
  }
  Handle ds(Check(H5Dcreate2(file_, full.c_str(), FileType(t.dtype(), bf16_type_), space.get(),
                             H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
                  what + ": cannot create dataset"),
            H5Dclose);
  if (t.numel() > 0) {
    CheckStatus(H5Dwrite(ds.get(), MemoryType(t.dtype(), bf16_type_), H5S_ALL, H5S_ALL, H5P_DEFAULT,
                         t.raw()),
                what + ": write failed (disk full?)");
  }
  const int64_t crc = Crc32(t.raw(), t.nbytes());
  WriteScalarAttribute(ds.get(), "crc32", H5T_NATIVE_INT64, &crc, what);
}

void Hdf5CheckpointWriter::WriteFile(const std::string& name, std::string_view bytes) {
  GEMMAPOD_CHECK(file_ >= 0, path_, ": writer already committed");
  ValidateName(name, path_ + ": embedded file");
  const std::string what = StrCat(path_, ": embedded file '", name, "'");
  const std::string full = "files/" + name;
  GEMMAPOD_CHECK(H5Lexists(file_, full.c_str(), H5P_DEFAULT) <= 0, what, ": written twice");
  const hsize_t n = bytes.size();
  Handle space(Check(H5Screate_simple(1, &n, nullptr), what), H5Sclose);
  Handle ds(Check(H5Dcreate2(file_, full.c_str(), H5T_STD_U8LE, space.get(), H5P_DEFAULT,
                             H5P_DEFAULT, H5P_DEFAULT),
                  what + ": cannot create dataset"),
            H5Dclose);
  if (n > 0) {
    CheckStatus(H5Dwrite(ds.get(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data()),
                what + ": write failed");
  }
  const int64_t crc = Crc32(bytes.data(), bytes.size());
  WriteScalarAttribute(ds.get(), "crc32", H5T_NATIVE_INT64, &crc, what);
}

void Hdf5CheckpointWriter::Commit() {
  GEMMAPOD_CHECK(file_ >= 0, path_, ": writer already committed");
  CheckStatus(H5Fflush(file_, H5F_SCOPE_GLOBAL), path_ + ": flush failed (disk full?)");
  Close();
  SyncPath(tmp_path_);
  GEMMAPOD_CHECK(std::rename(tmp_path_.c_str(), path_.c_str()) == 0, path_,
                 ": cannot move the finished checkpoint into place: ", std::strerror(errno));
  committed_ = true;
  const fs::path parent = fs::path(path_).parent_path();
  SyncPath(parent.empty() ? "." : parent.string());
}

}  // namespace gemmapod
