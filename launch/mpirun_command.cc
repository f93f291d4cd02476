#include "launch/mpirun_command.h"

#include <algorithm>
#include <cstdlib>

#include "runtime/error.h"

namespace gemmapod {

bool PodAwareSubcommand(const std::string& name) {
  return name == "demo" || name == "plan" || name == "generate" || name == "logits" ||
         name == "train";
}

std::vector<std::string> MpirunCommand(const PodTopology& pod, const MpirunOptions& o) {
  GEMMAPOD_CHECK(!o.command.empty(), "launch: no subcommand given after `--`");
  std::vector<std::string> argv = {o.mpirun, "-np", std::to_string(pod.world_size())};
  if (o.hostfile.empty()) {
    std::string hosts;
    for (const PodNode& node : pod.nodes) {
      if (!hosts.empty()) hosts += ",";
      hosts += node.host + ":" + std::to_string(node.devices);
    }
    argv.insert(argv.end(), {"--host", hosts});
  } else {
    argv.insert(argv.end(), {"--hostfile", o.hostfile});
  }
  argv.insert(argv.end(), {"--map-by", "slot"});
  if (pod.launch.oversubscribe) {
    // Binding to cores fails once ranks outnumber them.
    argv.insert(argv.end(), {"--oversubscribe", "--bind-to", "none"});
  }
  if (o.as_root) argv.push_back("--allow-run-as-root");
  if (pod.device_type() == DeviceType::kCpu) {
    // CPU ranks share their node's cores: give each its share of OpenMP threads (nodes are
    // assumed alike the launching machine).
    int per_node = 1;
    for (const PodNode& node : pod.nodes) per_node = std::max(per_node, node.devices);
    const int threads = std::max(1, o.host_threads / per_node);
    argv.insert(argv.end(), {"-x", "OMP_NUM_THREADS=" + std::to_string(threads)});
  }
  for (const auto& [key, value] : pod.interconnect.env) {
    argv.insert(argv.end(), {"-x", key + "=" + value});
  }
  // The ranks' deadline in a collective: the command line's --timeout (or the environment's),
  // else the pod's launch.timeout_s; mpirun passes it to every rank.
  if (const char* timeout = std::getenv("GEMMAPOD_COMM_TIMEOUT")) {
    argv.insert(argv.end(), {"-x", std::string("GEMMAPOD_COMM_TIMEOUT=") + timeout});
  } else if (pod.launch.timeout_s >= 0) {
    argv.insert(argv.end(), {"-x", StrCat("GEMMAPOD_COMM_TIMEOUT=", pod.launch.timeout_s)});
  }
  argv.insert(argv.end(), pod.launch.mpirun_args.begin(), pod.launch.mpirun_args.end());
  argv.push_back(o.gemmapod_exe);
  argv.insert(argv.end(), o.command.begin(), o.command.end());
  // Subcommands that lay themselves out by the pod get it passed on; the others (info, tokenize,
  // ...) would reject an option they do not know.
  const bool pod_aware = !o.command.empty() && PodAwareSubcommand(o.command.front());
  const bool has_pod = std::any_of(o.command.begin(), o.command.end(), [](const std::string& a) {
    return a == "--pod" || a.rfind("--pod=", 0) == 0;
  });
  if (pod_aware && !has_pod) argv.insert(argv.end(), {"--pod", o.pod_path});
  return argv;
}

std::string HostfileText(const PodTopology& pod) {
  std::string text;
  for (const PodNode& node : pod.nodes) {
    text += node.host + " slots=" + std::to_string(node.devices) + "\n";
  }
  return text;
}

std::string ShellJoin(const std::vector<std::string>& argv) {
  std::string out;
  for (const std::string& a : argv) {
    if (!out.empty()) out += ' ';
    const bool plain = !a.empty() && a.find_first_not_of(
                                         "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLM"
                                         "NOPQRSTUVWXYZ0123456789_-+=/.,:@%") == std::string::npos;
    if (plain) {
      out += a;
      continue;
    }
    out += '\'';
    for (char c : a) {
      if (c == '\'') {
        out += "'\\''";
      } else {
        out += c;
      }
    }
    out += '\'';
  }
  return out;
}

}  // namespace gemmapod
