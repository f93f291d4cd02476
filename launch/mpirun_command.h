// The mpirun command line that starts a gemmapod subcommand on every rank of a pod: one rank per
// device, ranks filling nodes in pod-file order (--map-by slot with per-host slot counts), so
// world rank r lands on the node and local device PodTopology assigns it.
#pragma once

#include <string>
#include <vector>

#include "sharding/pod_topology.h"

namespace gemmapod {

struct MpirunOptions {
  std::string mpirun = "mpirun";
  std::string gemmapod_exe;          // absolute path of the binary every rank runs
  std::string pod_path;              // absolute path; passed to the subcommand as --pod
  std::vector<std::string> command;  // the subcommand and its arguments
  std::string hostfile;              // when set: name this hostfile instead of listing --host
  bool as_root = false;              // Open MPI refuses root unless told
  int host_threads = 0;              // cores of the launching machine (0: unknown)
};

std::vector<std::string> MpirunCommand(const PodTopology& pod, const MpirunOptions& options);

// Subcommands that take --pod and lay their ranks out by it; `launch` passes the pod on to these.
bool PodAwareSubcommand(const std::string& name);

// The pod's nodes as an Open MPI hostfile: "<host> slots=<devices>" per line, in file order.
std::string HostfileText(const PodTopology& pod);

// Joins argv for display, quoting arguments that a POSIX shell would split or expand.
std::string ShellJoin(const std::vector<std::string>& argv);

}  // namespace gemmapod
