#include "runtime/checkpoint/output_file.h"

#include <filesystem>

#include "runtime/error.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;

const char* KindOf(const fs::file_status& s) {
  switch (s.type()) {
    case fs::file_type::directory:
      return "a directory";
    case fs::file_type::fifo:
      return "a FIFO";
    case fs::file_type::character:
      return "a character device";
    case fs::file_type::block:
      return "a block device";
    case fs::file_type::socket:
      return "a socket";
    default:
      return "not a regular file";
  }
}

}  // namespace

std::string OutputTarget(const std::string& path) {
  GEMMAPOD_CHECK(!path.empty(), "an output path is empty");
  fs::path p = path;
  std::error_code ec;
  for (int hops = 0; fs::is_symlink(fs::symlink_status(p, ec)); ++hops) {
    GEMMAPOD_CHECK(hops < 40, path, ": too many levels of symbolic links");
    const fs::path target = fs::read_symlink(p, ec);
    GEMMAPOD_CHECK(!ec, path, ": cannot read the symbolic link: ", ec.message());
    p = target.is_absolute() ? target : p.parent_path() / target;
  }
  const fs::file_status status = fs::symlink_status(p, ec);
  if (fs::exists(status) && !fs::is_regular_file(status)) {
    throw Error(StrCat(path, p.string() != path ? StrCat(" (a link to ", p.string(), ")") : "",
                       " is ", KindOf(status),
                       "; outputs are written only over regular files (they replace what the "
                       "name holds)"));
  }
  return p.string();
}

}  // namespace gemmapod
