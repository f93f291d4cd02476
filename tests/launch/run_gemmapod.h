// Runs the `gemmapod` binary as a user would, for the CLI tests. GEMMAPOD_BIN is the binary's
// path, defined by tests/launch/CMakeLists.txt.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

namespace gemmapod {

struct CliResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs a shell command line, stdout and stderr together.
inline CliResult RunShell(const std::string& cmd) {
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

// Runs `gemmapod <args>` from the current directory under a hard time limit; `env` (e.g.
// "VAR=value") is put in front of the command.
inline CliResult Gemmapod(const std::string& args, int timeout_s = 60,
                          const std::string& env = "") {
  return RunShell(env + (env.empty() ? "" : " ") + "timeout " + std::to_string(timeout_s) + " " +
                  GEMMAPOD_BIN + " " + args + " 2>&1");
}

// Runs `mpirun -np <ranks> gemmapod <args>` directly (not through `gemmapod launch`), as a user
// on a workstation would: shared memory only, oversubscribed, allowed to run as root.
inline CliResult MpirunGemmapod(int ranks, const std::string& args, int timeout_s = 120) {
  return RunShell(
      "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
      "OMPI_MCA_btl=self,vader OMPI_MCA_rmaps_base_oversubscribe=1 timeout " +
      std::to_string(timeout_s) + " mpirun -np " + std::to_string(ranks) + " " + GEMMAPOD_BIN +
      " " + args + " 2>&1");
}

// The pid of the process running world rank `rank` of a job whose command line mentions
// `marker`, or -1.
inline pid_t FindRank(const std::string& marker, int rank) {
  const std::string want = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream cmdline(entry.path() / "cmdline"), environ(entry.path() / "environ");
    std::stringstream cmd, env;
    cmd << cmdline.rdbuf();
    env << environ.rdbuf();
    if (cmd.str().find(marker) == std::string::npos) continue;
    if (cmd.str().find("mpirun") != std::string::npos) continue;
    std::string var;
    while (std::getline(env, var, '\0')) {
      if (var == want) return static_cast<pid_t>(std::stoi(name));
    }
  }
  return -1;
}

// Whether `text` matches the regular expression `pattern` somewhere.
inline bool Contains(const std::string& text, const std::string& pattern) {
  return std::regex_search(text, std::regex(pattern));
}

}  // namespace gemmapod
