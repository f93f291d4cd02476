#include "runtime/checkpoint/npy.h"

#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <regex>
#include <sstream>

#include "runtime/checkpoint/output_file.h"
#include "runtime/error.h"

namespace gemmapod {
namespace {

constexpr char kMagic[] = "\x93NUMPY";

}  // namespace

void WriteNpy(const std::string& destination, const Tensor& t) {
  const std::string path = OutputTarget(destination);
  GEMMAPOD_CHECK(t.device().is_cpu(), path, ": .npy files are written from host tensors");
  const char* descr = t.dtype() == DType::kF32 ? "<f4" : t.dtype() == DType::kI32 ? "<i4" : nullptr;
  GEMMAPOD_CHECK(descr != nullptr, path, ": .npy output supports f32 and i32, not ",
                 DTypeName(t.dtype()));
  std::string shape = "(";
  for (size_t i = 0; i < t.shape().size(); ++i) {
    shape += std::to_string(t.shape()[i]);
    shape += t.shape().size() == 1 ? "," : (i + 1 < t.shape().size() ? ", " : "");
  }
  shape += ")";
  std::string header =
      StrCat("{'descr': '", descr, "', 'fortran_order': False, 'shape': ", shape, ", }");
  // Magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple of 64
  // and ended by a newline.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';

  const std::string tmp = StrCat(path, ".tmp-", getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    GEMMAPOD_CHECK(out.good(), tmp, ": cannot create: ", std::strerror(errno));
    out.write(kMagic, 6);
    const char version[2] = {1, 0};
    out.write(version, 2);
    const uint16_t len = static_cast<uint16_t>(header.size());
    const char len_bytes[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
    out.write(len_bytes, 2);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    out.write(static_cast<const char*>(t.raw()), static_cast<std::streamsize>(t.nbytes()));
    out.flush();
    if (!out.good()) {
      std::remove(tmp.c_str());
      throw Error(StrCat(path, ": write failed: ", std::strerror(errno)));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    throw Error(StrCat(path, ": cannot rename the finished file into place: ", why));
  }
}

Tensor ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  GEMMAPOD_CHECK(in.good(), path, ": cannot open: ", std::strerror(errno));
  char magic[8] = {};
  in.read(magic, 8);
  GEMMAPOD_CHECK(in.good() && std::memcmp(magic, kMagic, 6) == 0, path,
                 ": not a .npy file (bad magic)");
  const int major = static_cast<unsigned char>(magic[6]);
  size_t header_len = 0;
  if (major == 1) {
    unsigned char b[2];
    in.read(reinterpret_cast<char*>(b), 2);
    header_len = b[0] | (b[1] << 8);
  } else {
    GEMMAPOD_CHECK(major == 2 || major == 3, path, ": unsupported .npy version ", major);
    unsigned char b[4];
    in.read(reinterpret_cast<char*>(b), 4);
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<size_t>(b[3]) << 24);
  }
  GEMMAPOD_CHECK(in.good() && header_len < (1u << 20), path, ": truncated .npy header");
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  GEMMAPOD_CHECK(in.good(), path, ": truncated .npy header");

  std::smatch m;
  GEMMAPOD_CHECK(std::regex_search(header, m, std::regex("'descr':\\s*'([^']*)'")), path,
                 ": .npy header has no descr");
  const std::string descr = m[1];
  GEMMAPOD_CHECK(std::regex_search(header, m, std::regex("'fortran_order':\\s*(True|False)")), path,
                 ": .npy header has no fortran_order");
  GEMMAPOD_CHECK(m[1] == "False", path, ": Fortran-ordered arrays are not supported");
  GEMMAPOD_CHECK(std::regex_search(header, m, std::regex("'shape':\\s*\\(([^)]*)\\)")), path,
                 ": .npy header has no shape");
  Shape shape;
  std::stringstream dims(m[1]);
  std::string item;
  while (std::getline(dims, item, ',')) {
    const size_t b = item.find_first_not_of(' ');
    if (b == std::string::npos) continue;
    int64_t d = -1;
    const char* end = item.data() + item.size();
    const auto [ptr, ec] = std::from_chars(item.data() + b, end, d);
    GEMMAPOD_CHECK(ec == std::errc() && d >= 0 &&
                       item.find_first_not_of(' ', ptr - item.data()) == std::string::npos,
                   path, ": bad shape entry '", item, "' in the .npy header");
    shape.push_back(d);
  }

  const bool is_float = descr == "<f4" || descr == "<f8";
  const bool is_int = descr == "<i4" || descr == "<i8";
  GEMMAPOD_CHECK(is_float || is_int, path, ": unsupported .npy dtype '", descr,
                 "' (supported: <f4, <f8, <i4, <i8)");
  const size_t item_size = descr.back() == '8' ? 8 : 4;
  const int64_t n = NumElements(shape);
  // Check the promise against the file before allocating for it.
  const std::streampos data_start = in.tellg();
  in.seekg(0, std::ios::end);
  const uint64_t available = static_cast<uint64_t>(in.tellg() - data_start);
  in.seekg(data_start);
  uint64_t bytes = 0;
  GEMMAPOD_CHECK(
      !__builtin_mul_overflow(static_cast<uint64_t>(n), item_size, &bytes) && bytes <= available,
      path, ": truncated: the header promises ", ShapeToString(shape), " of ", descr,
      " but the file holds ", available, " bytes of data");
  std::vector<char> raw(static_cast<size_t>(bytes));
  in.read(raw.data(), static_cast<std::streamsize>(raw.size()));
  GEMMAPOD_CHECK(in.gcount() == static_cast<std::streamsize>(raw.size()), path,
                 ": read failed after ", in.gcount(), " bytes");

  Tensor t = Tensor::Empty(shape, is_float ? DType::kF32 : DType::kI32);
  for (int64_t i = 0; i < n; ++i) {
    const char* p = raw.data() + i * item_size;
    if (descr == "<f4") {
      std::memcpy(t.data<float>() + i, p, 4);
    } else if (descr == "<f8") {
      double v;
      std::memcpy(&v, p, 8);
      t.data<float>()[i] = static_cast<float>(v);
    } else if (descr == "<i4") {
      std::memcpy(t.data<int32_t>() + i, p, 4);
    } else {
      int64_t v;
      std::memcpy(&v, p, 8);
      GEMMAPOD_CHECK(
          v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max(),
          path, ": element ", i, " (", v, ") does not fit in int32");
      t.data<int32_t>()[i] = static_cast<int32_t>(v);
    }
  }
  return t;
}

}  // namespace gemmapod
