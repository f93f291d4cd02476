#include "serving/engine/batch_scheduler.h"

#include <algorithm>
#include <chrono>

#include "runtime/error.h"
#include "serving/engine/engine_driver.h"

namespace gemmapod {

struct BatchScheduler::Member {
  std::shared_ptr<ServeJob> job;
  int64_t slot = 0;
  size_t prefilled = 0;   // prompt tokens submitted so far (or found in the prefix cache)
  int64_t positions = 0;  // positions submitted so far (or found in the prefix cache)
  int32_t next = -1;      // once the prompt is in: the token to feed at the next step
  std::unique_ptr<GenerationTracker> tracker;
  // What the tracker made final during the current Accept (on the heap: members move).
  std::unique_ptr<std::string> text = std::make_unique<std::string>();
  bool done = false;
};

struct BatchScheduler::Lane {
  std::vector<Member> members;
  std::vector<size_t> batch;  // per chunk of the micro-batch in flight: its member
  std::vector<uint8_t> sampled;
  bool in_flight = false;
};

BatchScheduler::BatchScheduler(EngineDriver& engine, const Tokenizer& tokenizer,
                               const SchedulerOptions& options)
    : engine_(engine), tokenizer_(tokenizer), options_(options) {
  GEMMAPOD_CHECK(engine_.leads(), "serve: the scheduler runs on the first stage's leader");
  GEMMAPOD_CHECK(options_.prefill_chunk > 0, "serve: prefill_chunk must be positive, got ",
                 options_.prefill_chunk);
  GEMMAPOD_CHECK(options_.max_waiting >= 0, "serve: max_waiting must be >= 0, got ",
                 options_.max_waiting);
  for (int64_t s = engine_.max_sequences() - 1; s >= 0; --s) free_slots_.push_back(s);
  for (int i = 0; i < engine_.stages(); ++i) lanes_.push_back(std::make_unique<Lane>());
  const KvPool pool = engine_.kv_pool();
  if (pool.block_tokens > 0) {
    kv_ = std::make_unique<KvBlockManager>(pool, engine_.max_sequences(), options_.prefill_chunk,
                                           options_.prefix_caching);
    kv_usage_ = kv_->usage();
  }
}

namespace {

// Positions a job may fill: its prompt and its completion, within the context.
int64_t JobTokens(const ServeJob& job, int64_t max_context) {
  return std::min<int64_t>(
      static_cast<int64_t>(job.request.prompt.size()) + job.request.max_new_tokens, max_context);
}

}  // namespace

Admission BatchScheduler::Fits(const std::vector<std::shared_ptr<ServeJob>>& jobs) const {
  if (!kv_ || jobs.empty()) return Admission::kAccepted;
  int64_t longest = 0;
  for (const auto& job : jobs) longest = std::max(longest, JobTokens(*job, engine_.max_context()));
  return kv_->EverFits(longest, static_cast<int64_t>(jobs.size())) ? Admission::kAccepted
                                                                   : Admission::kTooLong;
}

BatchScheduler::~BatchScheduler() = default;

BatchScheduler::Admission BatchScheduler::Enqueue(std::vector<std::shared_ptr<ServeJob>> jobs) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (draining_) return Admission::kDraining;
    if (static_cast<int64_t>(jobs.size()) > engine_.max_sequences() + options_.max_waiting) {
      return Admission::kNeverFits;
    }
    if (Fits(jobs) != Admission::kAccepted) return Admission::kTooLong;
    // Jobs beyond the free slots wait; the queue's bound counts those.
    const int64_t free = engine_.max_sequences() - running_.load();
    const int64_t queued = static_cast<int64_t>(waiting_.size() + jobs.size());
    if (queued - std::max<int64_t>(free, 0) > options_.max_waiting) return Admission::kQueueFull;
    for (auto& job : jobs) waiting_.push_back(std::move(job));
  }
  wake_.notify_one();
  return Admission::kAccepted;
}

void BatchScheduler::Wake() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    woken_ = true;
  }
  wake_.notify_one();
}

void BatchScheduler::Drain() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    draining_ = true;
  }
  wake_.notify_one();
}

SchedulerLoad BatchScheduler::load() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return {running_.load(), static_cast<int64_t>(waiting_.size()), engine_.max_sequences(),
          kv_usage_};
}

namespace {

void Finish(const ServeJob& job, GenerationResult& result, bool cancelled) {
  if (cancelled) result.finish = FinishReason::kCancelled;
  JobEvent e;
  e.kind = JobEvent::Kind::kFinished;
  e.result = &result;
  job.on_event(e);
}

}  // namespace

void BatchScheduler::DropCancelledWaiting() {
  std::vector<std::shared_ptr<ServeJob>> dropped;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    woken_ = false;
    auto keep = std::stable_partition(waiting_.begin(), waiting_.end(),
                                      [](const auto& job) { return !job->cancelled.load(); });
    dropped.assign(keep, waiting_.end());
    waiting_.erase(keep, waiting_.end());
  }
  for (const auto& job : dropped) {
    GenerationResult none;
    Finish(*job, none, /*cancelled=*/true);
  }
}

BatchScheduler::Submitted BatchScheduler::Step(Lane& lane) {
  // Members that were cancelled leave before their next step.
  for (size_t i = lane.members.size(); i-- > 0;) {
    Member& m = lane.members[i];
    if (m.job->cancelled.load()) {
      Finish(*m.job, m.tracker->result(), /*cancelled=*/true);
      Release(lane, i);
    }
  }
  std::vector<WireChunk> chunks;
  lane.batch.clear();
  lane.sampled.clear();
  auto add = [&](size_t member, std::vector<int32_t> tokens, bool sample) {
    Member& m = lane.members[member];
    const int64_t n = static_cast<int64_t>(tokens.size());
    WireChunk& c = chunks.emplace_back();
    c.tokens = SequenceChunk{m.slot, std::move(tokens)};
    c.sampling = m.job->request.sampling;
    c.sample = sample;
    c.top_logprobs = m.job->request.top_logprobs;
    if (m.positions == 0) c.encoder = m.job->request.encoder_prompt;
    if (kv_) kv_->Grow(m.slot, m.job->request.prompt, m.positions, n, chunks.back());
    m.positions += n;
    lane.batch.push_back(member);
    lane.sampled.push_back(sample ? 1 : 0);
  };
  int64_t budget = options_.prefill_chunk;
  auto prefill = [&](size_t member) {
    Member& m = lane.members[member];
    const std::vector<int32_t>& prompt = m.job->request.prompt;
    const size_t take = std::min<size_t>(static_cast<size_t>(budget), prompt.size() - m.prefilled);
    if (take == 0) return;
    if (m.positions == 0) engine_.Reset(m.slot);
    const auto begin = prompt.begin() + static_cast<ptrdiff_t>(m.prefilled);
    m.prefilled += take;
    budget -= static_cast<int64_t>(take);
    add(member, {begin, begin + static_cast<ptrdiff_t>(take)}, m.prefilled == prompt.size());
  };
  for (size_t i = 0; i < lane.members.size(); ++i) {
    const Member& m = lane.members[i];
    if (m.prefilled == m.job->request.prompt.size()) add(i, {m.next}, true);
  }
  for (size_t i = 0; i < lane.members.size(); ++i) {
    if (lane.members[i].prefilled < lane.members[i].job->request.prompt.size()) prefill(i);
  }
  // Waiting jobs join while there is a free slot, room in the lane and prefill budget.
  const size_t lanes = lanes_.size();
  const size_t lane_cap = (static_cast<size_t>(engine_.max_sequences()) + lanes - 1) / lanes;
  while (budget > 0 && !free_slots_.empty() && lane.members.size() < lane_cap) {
    std::shared_ptr<ServeJob> job;
    bool cancelled = false;
    const int64_t slot = free_slots_.back();
    int64_t cached = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (waiting_.empty()) break;
      // Read once: a cancellation landing between two reads would count a slot never released.
      cancelled = waiting_.front()->cancelled.load();
      // The first in the queue waits for the KV pool to promise it its blocks; nobody passes it.
      if (!cancelled && kv_ &&
          !kv_->Admit(slot, waiting_.front()->request.prompt,
                      JobTokens(*waiting_.front(), engine_.max_context()), cached)) {
        break;
      }
      job = std::move(waiting_.front());
      waiting_.pop_front();
      if (!cancelled) ++running_;
    }
    if (cancelled) {
      GenerationResult none;
      Finish(*job, none, /*cancelled=*/true);
      continue;
    }
    Member m;
    m.job = std::move(job);
    m.slot = slot;
    free_slots_.pop_back();
    m.prefilled = static_cast<size_t>(cached);
    m.positions = cached;
    m.tracker = std::make_unique<GenerationTracker>(
        tokenizer_, m.job->request, [text = m.text.get()](std::string_view t) { text->append(t); });
    lane.members.push_back(std::move(m));
    prefill(lane.members.size() - 1);
  }
  if (kv_) {
    std::lock_guard<std::mutex> lock(mutex_);
    kv_usage_ = kv_->usage();
  }
  if (chunks.empty()) return Submitted::kNothing;
  try {
    if (!engine_.Submit(chunks)) return Submitted::kNoResult;
  } catch (const Error& e) {
    if (!engine_.alone()) throw;
    FailLane(lane, e.what());
    return Submitted::kNothing;
  }
  lane.in_flight = true;
  return Submitted::kInFlight;
}

void BatchScheduler::Collect(Lane& lane, const std::vector<SampledToken>& tokens) {
  lane.in_flight = false;
  GEMMAPOD_CHECK(tokens.size() == lane.batch.size(), "serve: ", tokens.size(),
                 " tokens for a micro-batch of ", lane.batch.size(), " chunks");
  for (size_t k = 0; k < tokens.size(); ++k) {
    if (lane.sampled[k] == 0) continue;
    Member& m = lane.members[lane.batch[k]];
    if (m.job->cancelled.load()) continue;  // leaves at the lane's next step
    GenerationResult& result = m.tracker->result();
    const size_t before = result.tokens.size();
    std::string& text = *m.text;
    text.clear();
    const SampledToken& sample = tokens[k];
    const bool more = m.tracker->Accept(sample.id);
    if (result.tokens.size() > before || !text.empty()) {
      JobEvent e;
      e.kind = JobEvent::Kind::kToken;
      e.token = result.tokens.size() > before ? sample.id : -1;
      e.text = text;
      e.logprob = sample.logprob;
      e.top = sample.top;
      m.job->on_event(e);
    }
    if (more) {
      m.next = sample.id;
    } else {
      Finish(*m.job, result, /*cancelled=*/false);
      m.done = true;
    }
  }
  for (size_t i = lane.members.size(); i-- > 0;) {
    if (lane.members[i].done) Release(lane, i);
  }
}

void BatchScheduler::Release(Lane& lane, size_t member, bool failed) {
  free_slots_.push_back(lane.members[member].slot);
  if (kv_) {
    kv_->Release(lane.members[member].slot, failed);
    std::lock_guard<std::mutex> lock(mutex_);
    kv_usage_ = kv_->usage();  // what /metrics shows once the last request is done
  }
  lane.members.erase(lane.members.begin() + static_cast<ptrdiff_t>(member));
  --running_;
}

void BatchScheduler::FailLane(Lane& lane, std::string_view message) {
  for (size_t i = lane.members.size(); i-- > 0;) {
    JobEvent e;
    e.kind = JobEvent::Kind::kFailed;
    e.error = message;
    lane.members[i].job->on_event(e);
    Release(lane, i, /*failed=*/true);
  }
  lane.in_flight = false;
}

void BatchScheduler::Run(const std::function<bool()>& pump) {
  std::deque<Lane*> in_flight;  // lanes in submission order
  for (;;) {
    if (pump) pump();
    for (auto& lane : lanes_) {
      if (lane->in_flight) continue;
      // Pieces of prompts that want no token return nothing: the lane's next piece goes at once,
      // so a long prompt's pieces fill a pipeline's stages back to back.
      Submitted s;
      while ((s = Step(*lane)) == Submitted::kNoResult) {
      }
      if (s == Submitted::kInFlight) in_flight.push_back(lane.get());
    }
    if (in_flight.empty()) {
      std::unique_lock<std::mutex> lock(mutex_);
      if (draining_ && waiting_.empty()) {
        if (!pump) break;
        // One more pump after the drain was seen: it passes the drain on (to other replicas)
        // and says whether their jobs are still out.
        lock.unlock();
        if (!pump()) break;
        lock.lock();
      }
      // With a pump, draining is re-checked every millisecond (the pump's work may still come).
      const auto ready = [&] { return woken_ || !waiting_.empty() || (draining_ && !pump); };
      if (pump) {
        wake_.wait_for(lock, std::chrono::milliseconds(1), ready);
      } else {
        wake_.wait(lock, ready);
      }
      lock.unlock();
      DropCancelledWaiting();
      continue;
    }
    // Jobs cancelled while they wait leave the queue now, not when the engine next idles: under
    // load the queue's room is what refuses new requests.
    DropCancelledWaiting();
    Lane& lane = *in_flight.front();
    in_flight.pop_front();
    std::vector<SampledToken> tokens;
    try {
      tokens = engine_.TakeSamples();
    } catch (const Error& e) {
      if (!engine_.alone()) throw;
      FailLane(lane, e.what());
      continue;
    }
    Collect(lane, tokens);
  }
  engine_.Finish();
}

}  // namespace gemmapod
