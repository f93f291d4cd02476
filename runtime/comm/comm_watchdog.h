// A deadline on every blocking MPI call, so a rank that stops (SIGSTOP, a hung device, a dead
// host whose connection never closes) ends the job with a message instead of leaving the other
// ranks spinning in MPI forever.
//
// The blocking calls stay MPI's own (their tuned algorithms and latency are untouched): each
// marks the start and end of its wait in a process-wide slot (two atomic stores), and a watchdog
// thread looks at the slot once a second. A wait longer than the deadline prints what this rank
// waited on (the call, the peer's world rank or the group's size, the tag) with its host and
// ends the process with exit code 3, and mpirun then ends the job. Waits for work that may
// legitimately never come (an idle server's ranks) poll with Probe and are never guarded.
//
// The deadline: GEMMAPOD_COMM_TIMEOUT seconds (default 600; 0 turns the watchdog off), which the
// command line's --timeout and a pod file's launch.timeout_s set (launch/main.cc,
// launch/mpirun_command.cc). It must
// exceed the longest legitimate wait: a rank that loads its shard while its peers wait at the
// next collective, the longest pipeline step.
#pragma once

#include <cstdint>

namespace gemmapod {

// Seconds a blocking call may wait (from GEMMAPOD_COMM_TIMEOUT); 0: no deadline. Throws
// gemmapod::Error naming the variable when it holds something else than a number >= 0.
double CommDeadlineSeconds();

// Starts the watchdog thread once (a no-op when the deadline is 0). `world_rank` and `host` name
// this rank in its message.
void StartCommWatchdog(int world_rank);

// Marks one blocking call for its duration (main thread only, as all MPI calls here are).
// `what` must outlive the call (a string literal); peer is a world rank or -1, tag or -1.
class CommWait {
 public:
  CommWait(const char* what, int peer, int tag, int group_size);
  ~CommWait();
  CommWait(const CommWait&) = delete;
  CommWait& operator=(const CommWait&) = delete;
};

}  // namespace gemmapod
