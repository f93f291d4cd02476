#include "runtime/comm/comm_watchdog.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "runtime/error.h"

namespace gemmapod {
namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The call in progress: written by the main thread, read by the watchdog.
std::atomic<int64_t> g_since_ms{0};  // 0: no call in progress
std::atomic<const char*> g_what{nullptr};
std::atomic<int> g_peer{-1}, g_tag{-1}, g_group{0};
std::atomic<bool> g_started{false};

}  // namespace

double CommDeadlineSeconds() {
  const char* text = std::getenv("GEMMAPOD_COMM_TIMEOUT");
  if (text == nullptr || *text == '\0') return 600;
  char* end = nullptr;
  const double s = std::strtod(text, &end);
  GEMMAPOD_CHECK(end != text && *end == '\0' && s >= 0 && s < 1e9,
                 "GEMMAPOD_COMM_TIMEOUT must be a number of seconds >= 0 (0: no deadline), got '",
                 text, "'");
  return s;
}

void StartCommWatchdog(int world_rank) {
  const double deadline = CommDeadlineSeconds();
  if (deadline <= 0 || g_started.exchange(true)) return;
  char host[256] = "?";
  gethostname(host, sizeof(host) - 1);
  const std::string name = host;
  const int64_t limit_ms = static_cast<int64_t>(deadline * 1000);
  std::thread([world_rank, name, limit_ms, deadline] {
    for (;;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(limit_ms < 5000 ? 100 : 1000));
      const int64_t since = g_since_ms.load();
      if (since == 0 || NowMs() - since < limit_ms) continue;
      const char* what = g_what.load();
      const int peer = g_peer.load(), tag = g_tag.load(), group = g_group.load();
      std::string detail;
      if (peer >= 0) detail += " with rank " + std::to_string(peer);
      if (tag >= 0) detail += " (tag " + std::to_string(tag) + ")";
      if (peer < 0 && group > 0) detail += " over a group of " + std::to_string(group) + " ranks";
      std::fprintf(
          stderr,
          "\ngemmapod: error: rank %d (host %s) waited %.0f s in %s%s without an answer: a "
          "rank of the job is stopped, hung or gone; ending the job "
          "(--timeout or GEMMAPOD_COMM_TIMEOUT sets the deadline)\n",
          world_rank, name.c_str(), deadline, what ? what : "MPI", detail.c_str());
      std::fflush(stderr);
      std::_Exit(3);  // mpirun ends the other ranks
    }
  }).detach();
}

CommWait::CommWait(const char* what, int peer, int tag, int group_size) {
  g_what.store(what, std::memory_order_relaxed);
  g_peer.store(peer, std::memory_order_relaxed);
  g_tag.store(tag, std::memory_order_relaxed);
  g_group.store(group_size, std::memory_order_relaxed);
  g_since_ms.store(NowMs(), std::memory_order_release);
}

CommWait::~CommWait() { g_since_ms.store(0, std::memory_order_release); }

}  // namespace gemmapod
