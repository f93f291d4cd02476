#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "launch/commands.h"
#include "launch/mpirun_command.h"
#include "runtime/checkpoint/output_file.h"
#include "runtime/error.h"
#include "sharding/pod_topology.h"

namespace gemmapod {
namespace {

// Written whole or not at all: a temporary file renamed over the target.
void WriteFileAtomically(const std::string& destination, const std::string& text) {
  const std::string path = OutputTarget(destination);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    out.close();
    if (!out) throw Error(StrCat("cannot write hostfile ", tmp, ": ", std::strerror(errno)));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw Error(StrCat("cannot write hostfile ", path, ": ", ec.message()));
}

}  // namespace

int RunLaunch(const LaunchCommandOptions& options, const std::string& self_exe) {
  GEMMAPOD_CHECK(options.command.front() != "launch",
                 "launch: the command to run on every rank cannot itself be 'launch'");
  const PodTopology pod = LoadPodTopology(options.pod_path);
  MpirunOptions m;
  m.gemmapod_exe = self_exe;
  m.pod_path = std::filesystem::absolute(options.pod_path).string();
  m.command = options.command;
  m.as_root = geteuid() == 0;
  m.host_threads = static_cast<int>(std::thread::hardware_concurrency());
  if (!options.hostfile.empty()) {
    m.hostfile = std::filesystem::absolute(options.hostfile).string();
    // A dry run only prints the command: it leaves the file system as it was.
    if (!options.dry_run) WriteFileAtomically(m.hostfile, HostfileText(pod));
  }
  const std::vector<std::string> argv = MpirunCommand(pod, m);
  std::fprintf(options.dry_run ? stdout : stderr, "%s\n", ShellJoin(argv).c_str());
  if (options.dry_run) return 0;
  std::fflush(nullptr);

  std::vector<char*> c_argv;
  for (const std::string& a : argv) c_argv.push_back(const_cast<char*>(a.c_str()));
  c_argv.push_back(nullptr);
  execvp(c_argv[0], c_argv.data());
  // Only reached when exec failed.
  throw Error(StrCat("cannot run '", argv[0], "': ", std::strerror(errno),
                     " (Open MPI's launcher; tools/install_deps.sh installs it)"));
}

}  // namespace gemmapod
