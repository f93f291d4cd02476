// Iteration-level continuous batching over the pipeline engine. Requests wait in a queue; at
// every step each running sequence feeds the token it just sampled, waiting requests join as soon
// as a sequence slot is free, and finished ones leave at once, freeing their slot for the next.
// A prompt is prefilled in pieces of at most `prefill_chunk` tokens per step, batched with the
// running sequences' decode tokens, so a long prompt never stalls the streams already flowing.
//
// With a pipeline of s stages the sequences are dealt into s lanes, each its own micro-batch:
// while one lane's step runs on the last stage, the next lane's runs on the first, so every
// stage is busy. Runs on the first stage's leader (Run); HTTP threads Enqueue.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/tokenizer/tokenizer.h"
#include "serving/engine/kv_block_manager.h"
#include "serving/engine/pipeline_engine.h"
#include "serving/generator.h"

namespace gemmapod {

class EngineDriver;

// What happens to a job, told on the engine's thread.
struct JobEvent {
  enum class Kind { kToken, kFinished, kFailed };
  Kind kind = Kind::kToken;
  int32_t token = -1;     // kToken: the id generated (stop tokens are not reported)
  std::string_view text;  // kToken: text that became final with it (may be empty)
  // kToken with request.top_logprobs >= 0: the token's log-probability and the most likely ids'.
  float logprob = 0;
  std::span<const std::pair<int32_t, float>> top;
  const GenerationResult* result = nullptr;  // kFinished (finish is kCancelled when cancelled)
  std::string_view error;                    // kFailed
};

// One sequence to generate: a request's choice.
struct ServeJob {
  GenerationRequest request;
  std::function<void(const JobEvent&)> on_event;  // must not block
  std::atomic<bool> cancelled{false};             // set by anyone; noticed at the next step
};

struct SchedulerOptions {
  int64_t prefill_chunk = 512;  // prompt tokens per lane per step (chunked prefill)
  int64_t max_waiting = 256;    // jobs queued beyond the running ones; more are refused
  bool prefix_caching = true;   // with a shared KV pool: prompts share identical prefix blocks
};

struct SchedulerLoad {
  int64_t running = 0;  // jobs holding a sequence slot
  int64_t waiting = 0;
  int64_t slots = 0;  // sequence slots in all
  KvUsage kv;         // a shared KV pool's blocks (all zero with fixed slots)
};

// kNeverFits: more jobs at once than the slots and the queue could ever hold. kTooLong: the jobs'
// prompts and completions could never fit the KV pool together, even with nothing else running.
enum class Admission { kAccepted, kQueueFull, kDraining, kNeverFits, kTooLong };

// Where a server hands its jobs: one scheduler, or a router over data-parallel replicas.
class JobQueue {
 public:
  virtual ~JobQueue() = default;
  // Thread-safe. The jobs (a request's choices) join together or not at all. Each must fit the
  // engine's context (CheckRequest) and have valid sampling settings: checked by the caller.
  virtual Admission Enqueue(std::vector<std::shared_ptr<ServeJob>> jobs) = 0;
  // Thread-safe: a job was cancelled; the thread that runs it notices now.
  virtual void Wake() = 0;
  // Thread-safe: refuse new jobs from now on; the admitted ones finish.
  virtual void Drain() = 0;
  virtual SchedulerLoad load() const = 0;
};

class BatchScheduler final : public JobQueue {
 public:
  using Admission = gemmapod::Admission;

  BatchScheduler(EngineDriver& engine, const Tokenizer& tokenizer, const SchedulerOptions& options);
  ~BatchScheduler() override;

  Admission Enqueue(std::vector<std::shared_ptr<ServeJob>> jobs) override;
  // kTooLong when the jobs could never run together in this engine's KV pool, else kAccepted
  // (thread-safe; the router asks it before dealing jobs to a replica).
  Admission Fits(const std::vector<std::shared_ptr<ServeJob>>& jobs) const;
  // Tokens the KV pool holds (0 with fixed slots).
  int64_t kv_capacity_tokens() const { return kv_ ? kv_->capacity_tokens() : 0; }
  void Wake() override;
  // Run returns once the admitted jobs are done.
  void Drain() override;
  SchedulerLoad load() const override;

  // The engine thread: runs steps until drained and idle, then finishes the engine. `pump`, when
  // given, runs on this thread between steps and at least every millisecond while idle (a
  // replica leader's messages); it returns true while it still has work on its way, which keeps
  // Run from returning.
  void Run(const std::function<bool()>& pump = {});

 private:
  struct Member;
  struct Lane;

  // Builds and submits lane's next micro-batch: nothing to run, a micro-batch whose result is on
  // its way (the lane is in flight), or one that returns nothing (pieces of prompts only).
  enum class Submitted { kNothing, kInFlight, kNoResult };
  Submitted Step(Lane& lane);
  // Hands out the tokens of lane's micro-batch.
  void Collect(Lane& lane, const std::vector<SampledToken>& tokens);
  // `failed`: its micro-batch threw, so the KV blocks it filled are not to be shared.
  void Release(Lane& lane, size_t member, bool failed = false);
  // Fails every job of a lane whose micro-batch threw (one-rank engines only).
  void FailLane(Lane& lane, std::string_view message);
  void DropCancelledWaiting();

  EngineDriver& engine_;
  Tokenizer tokenizer_;
  SchedulerOptions options_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<ServeJob>> waiting_;
  bool draining_ = false;
  bool woken_ = false;
  std::atomic<int64_t> running_{0};

  std::vector<int64_t> free_slots_;  // engine thread only
  std::vector<std::unique_ptr<Lane>> lanes_;
  std::unique_ptr<KvBlockManager> kv_;  // a shared KV pool's book (engine thread only)
  KvUsage kv_usage_;                    // its last state, for load() (under mutex_)
};

}  // namespace gemmapod
