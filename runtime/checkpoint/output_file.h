// Where an output file goes. Every writer here writes a temporary file and renames it over the
// destination, so a reader never sees half a file; but a rename replaces whatever the name held.
// A symbolic link is followed (the file it names is replaced and the link stays a link); a FIFO,
// a device, a directory or a socket is refused, so `--out /dev/null` run as root cannot turn
// the system's /dev/null into a regular file.
#pragma once

#include <string>

namespace gemmapod {

// The regular file (existing or not) that writing `path` replaces. Throws gemmapod::Error naming
// `path` (and where its links lead) when that is something else.
std::string OutputTarget(const std::string& path);

}  // namespace gemmapod
