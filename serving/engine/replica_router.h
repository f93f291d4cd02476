// Data-parallel serving: each replica of the pod runs its own scheduler over its own pipeline,
// and world rank 0 (replica 0's leader, which also answers HTTP) deals the requests out. A
// request's choices go together to the replica with the fewest jobs; jobs for another replica
// travel to its leader over MPI, and the tokens, texts and endings come back the same way, so
// the HTTP side sees one queue whichever replica runs a job.
//
// Every MPI call stays on the ranks' main threads (MPI_THREAD_FUNNELED): HTTP threads only queue
// work for rank 0's main thread, which sends and receives between its own steps (Pump, called by
// BatchScheduler::Run); a replica leader polls for jobs the same way (ServeReplica).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "serving/engine/batch_scheduler.h"

namespace gemmapod {

class Communicator;
class PendingTransfer;

class ReplicaRouter final : public JobQueue {
 public:
  // On world rank 0. `leaders[r]` is the world rank of replica r's leader (leaders[0] is rank 0,
  // whose scheduler is `local`); a replica holding `capacity` jobs (its slots and its queue) takes
  // no more.
  ReplicaRouter(Communicator& world, std::vector<int> leaders, BatchScheduler& local,
                int64_t capacity);
  ~ReplicaRouter() override;

  Admission Enqueue(std::vector<std::shared_ptr<ServeJob>> jobs) override;
  void Wake() override;
  // Drains the local scheduler now and, at the next Pump, every other replica.
  void Drain() override;
  // Replica 0's slots and queue, with the jobs out on other replicas counted as running and
  // their slots added.
  SchedulerLoad load() const override;
  // Jobs each replica has been given so far.
  std::vector<int64_t> dealt() const;

  // Rank 0's main thread, between steps: sends the jobs, cancellations and the drain queued for
  // other replicas and relays their events. True while another replica still has jobs.
  bool Pump();

 private:
  struct Remote;
  void Send(int dst, int tag, std::vector<int32_t> words);

  Communicator& world_;
  std::vector<int> leaders_;
  BatchScheduler& local_;
  int64_t capacity_;

  mutable std::mutex mutex_;
  std::vector<int64_t> held_;   // per replica: jobs given and not yet finished
  std::vector<int64_t> dealt_;  // per replica: jobs given in all
  std::deque<std::pair<int, std::shared_ptr<ServeJob>>> outbox_;  // (replica, job) to send
  bool draining_ = false;

  // The main thread's own state.
  uint64_t next_id_ = 1;
  std::map<uint64_t, std::unique_ptr<Remote>> remote_;  // jobs out on other replicas
  bool drain_sent_ = false;
  std::deque<std::unique_ptr<PendingTransfer>> pending_;
};

// On the leader of a replica other than 0: runs `scheduler` on the jobs rank 0 sends, reporting
// their events back, until rank 0 drains it. Finishes the replica's pipeline.
void ServeReplica(Communicator& world, BatchScheduler& scheduler);

}  // namespace gemmapod
