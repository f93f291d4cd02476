// Runs the `gemmapod` binary as a user would, for the CLI tests. GEMMAPOD_BIN is the binary's
// path, defined by tests/launch/CMakeLists.txt.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <regex>
#include <string>

namespace gemmapod {

struct CliResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs `gemmapod <args>` from the current directory under a hard time limit; `env` (e.g.
// "VAR=value") is put in front of the command.
inline CliResult Gemmapod(const std::string& args, int timeout_s = 60,
                          const std::string& env = "") {
  const std::string cmd = env + (env.empty() ? "" : " ") + "timeout " + std::to_string(timeout_s) +
                          " " + GEMMAPOD_BIN + " " + args + " 2>&1";
  CliResult r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// Whether `text` matches the regular expression `pattern` somewhere.
inline bool Contains(const std::string& text, const std::string& pattern) {
  return std::regex_search(text, std::regex(pattern));
}

}  // namespace gemmapod
