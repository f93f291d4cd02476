// A `gemmapod serve` process for the server's end-to-end tests: started in the background (alone
// or under mpirun), waited for until it reports ready, stopped with a signal, its log kept.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

namespace gemmapod {

class ServeProcess {
 public:
  ServeProcess() = default;
  ServeProcess(const ServeProcess&) = delete;
  ~ServeProcess() {
    if (pid_ > 0) {
      kill(-pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (!log_path_.empty()) std::remove(log_path_.c_str());
  }

  // Runs `gemmapod serve <args> --port 0` (under `mpirun -np ranks` when ranks > 1) and waits up
  // to `timeout_s` for "serve: ready". False when it exits or never gets ready (see log()).
  bool Start(const std::string& args, int ranks = 1, const std::string& env = "",
             int timeout_s = 60) {
    // A name no earlier run left behind: process ids are reused (a test run forks thousands of
    // processes), and reading a stale log's "ready" line once sent a test to another server.
    log_path_ =
        "/tmp/gemmapod-serve-" + std::to_string(getpid()) + "-" + std::to_string(counter_++) + "-" +
        std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) + ".log";
    std::remove(log_path_.c_str());
    std::string command = env + " exec ";
    if (ranks > 1) {
      command +=
          "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader "
          "OMPI_MCA_rmaps_base_oversubscribe=1 mpirun -np " +
          std::to_string(ranks) + " ";
    }
    command += std::string(GEMMAPOD_BIN) + " serve " + args + " --port 0 > " + log_path_ + " 2>&1";
    pid_ = fork();
    if (pid_ == 0) {
      setpgid(0, 0);
      execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    const std::regex listening("listening on http://[0-9.]+:([0-9]+) \\(pid ([0-9]+)");
    while (std::chrono::steady_clock::now() < until) {
      const std::string text = log();
      std::smatch m;
      if (port_ == 0 && std::regex_search(text, m, listening)) {
        port_ = std::stoi(m[1]);
        leader_ = std::stoi(m[2]);
      }
      if (text.find("serve: ready") != std::string::npos) return port_ > 0;
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  int port() const { return port_; }
  // The rank-0 process, which drains on SIGTERM (under mpirun too).
  pid_t leader() const { return leader_; }

  std::string log() const {
    std::ifstream in(log_path_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  // Sends `signal` to rank 0 and waits up to `timeout_s` for the job to end; its exit code, or -1
  // when it did not end (then it is killed).
  int Stop(int signal = SIGTERM, int timeout_s = 60) {
    if (pid_ <= 0) return exit_code_;
    kill(leader_ > 0 ? leader_ : pid_, signal);
    return Wait(timeout_s);
  }

  int Wait(int timeout_s) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    while (std::chrono::steady_clock::now() < until) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return exit_code_;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    kill(-pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
    return -1;
  }

 private:
  static inline int counter_ = 0;
  std::string log_path_;
  pid_t pid_ = -1;
  pid_t leader_ = -1;
  int port_ = 0;
  int exit_code_ = -1;
};

}  // namespace gemmapod
