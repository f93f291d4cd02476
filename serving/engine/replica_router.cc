#include "serving/engine/replica_router.h"

#include <bit>
#include <cstring>
#include <limits>

#include "runtime/comm/communicator.h"
#include "runtime/error.h"
#include "serving/engine/chunk_wire.h"

namespace gemmapod {
namespace {

// Tags on the world communicator. Each message is a one-word header (its payload's length in
// words) and the payload. Everything rank 0 tells a replica travels under one tag, so it arrives
// in the order sent (MPI orders messages of one tag from one rank): a job before the drain that
// follows it. Its first word says what it is.
constexpr int kToReplicaTag = 301;  // rank 0 -> replica leader (and 302: the payload)
constexpr int kEventTag = 303;      // replica leader -> rank 0: a job's event (and 304)
enum Order : int32_t { kJob = 1, kCancel = 2, kDrain = 3 };

void AppendId(uint64_t id, std::vector<int32_t>& w) {
  w.push_back(static_cast<int32_t>(id & 0xffffffffu));
  w.push_back(static_cast<int32_t>(id >> 32));
}

uint64_t ReadId(const int32_t* w) {
  return static_cast<uint64_t>(static_cast<uint32_t>(w[0])) |
         (static_cast<uint64_t>(static_cast<uint32_t>(w[1])) << 32);
}

void AppendBytes(std::string_view s, std::vector<int32_t>& w) {
  w.push_back(static_cast<int32_t>(s.size()));
  const size_t at = w.size();
  w.resize(at + (s.size() + 3) / 4, 0);
  if (!s.empty()) std::memcpy(w.data() + at, s.data(), s.size());
}

// Reads what a message holds, checking every count against what is left.
class Reader {
 public:
  Reader(std::span<const int32_t> w, const char* what) : w_(w), what_(what) {}
  int32_t Word() {
    Need(1);
    return w_[at_++];
  }
  std::span<const int32_t> Words(int64_t n) {
    GEMMAPOD_CHECK(n >= 0, what_, ": a negative count");
    Need(n);
    const auto s = w_.subspan(at_, static_cast<size_t>(n));
    at_ += static_cast<size_t>(n);
    return s;
  }
  std::string Bytes() {
    const int32_t n = Word();
    GEMMAPOD_CHECK(n >= 0, what_, ": a negative length");
    const auto words = Words((static_cast<int64_t>(n) + 3) / 4);
    std::string s(static_cast<size_t>(n), '\0');
    if (n > 0) std::memcpy(s.data(), words.data(), static_cast<size_t>(n));
    return s;
  }
  void End() const { GEMMAPOD_CHECK(at_ == w_.size(), what_, ": words past its end"); }

 private:
  void Need(int64_t n) const {
    GEMMAPOD_CHECK(at_ + static_cast<size_t>(n) <= w_.size(), what_, ": truncated");
  }
  std::span<const int32_t> w_;
  const char* what_;
  size_t at_ = 0;
};

std::vector<int32_t> EncodeJob(uint64_t id, const GenerationRequest& r) {
  std::vector<int32_t> w{kJob};
  AppendId(id, w);
  AppendId(static_cast<uint64_t>(r.max_new_tokens), w);
  w.push_back(r.top_logprobs);
  AppendSamplingWords(r.sampling, w);
  w.push_back(static_cast<int32_t>(r.prompt.size()));
  w.insert(w.end(), r.prompt.begin(), r.prompt.end());
  w.push_back(static_cast<int32_t>(r.stop_tokens.size()));
  w.insert(w.end(), r.stop_tokens.begin(), r.stop_tokens.end());
  w.push_back(static_cast<int32_t>(r.stop_strings.size()));
  for (const std::string& s : r.stop_strings) AppendBytes(s, w);
  return w;
}

std::pair<uint64_t, GenerationRequest> DecodeJob(std::span<const int32_t> words) {
  Reader in(words, "serve: a job from rank 0");
  GenerationRequest r;
  in.Word();  // kJob
  const auto id = in.Words(2);
  const auto max_new = in.Words(2);
  r.max_new_tokens = static_cast<int64_t>(ReadId(max_new.data()));
  r.top_logprobs = in.Word();
  r.sampling = ReadSamplingWords(in.Words(kSamplingWords).data());
  const auto prompt = in.Words(in.Word());
  r.prompt.assign(prompt.begin(), prompt.end());
  const auto stops = in.Words(in.Word());
  r.stop_tokens.assign(stops.begin(), stops.end());
  for (int32_t n = in.Word(); n > 0; --n) r.stop_strings.push_back(in.Bytes());
  in.End();
  return {ReadId(id.data()), std::move(r)};
}

std::vector<int32_t> EncodeEvent(uint64_t id, const JobEvent& e) {
  std::vector<int32_t> w;
  AppendId(id, w);
  w.push_back(static_cast<int32_t>(e.kind));
  w.push_back(e.token);
  w.push_back(std::bit_cast<int32_t>(e.logprob));
  w.push_back(e.result != nullptr ? static_cast<int32_t>(e.result->finish) : 0);
  w.push_back(static_cast<int32_t>(e.top.size()));
  for (const auto& [token, lp] : e.top) {
    w.push_back(token);
    w.push_back(std::bit_cast<int32_t>(lp));
  }
  AppendBytes(e.kind == JobEvent::Kind::kFailed ? e.error : e.text, w);
  return w;
}

// A decoded event and the storage its views point into.
struct ReceivedEvent {
  uint64_t id = 0;
  JobEvent event;
  std::vector<std::pair<int32_t, float>> top;
  std::string text;
  GenerationResult result;
};

void DecodeEvent(std::span<const int32_t> words, ReceivedEvent& out) {
  Reader in(words, "serve: an event from a replica");
  out.id = ReadId(in.Words(2).data());
  const int32_t kind = in.Word();
  GEMMAPOD_CHECK(kind >= 0 && kind <= static_cast<int32_t>(JobEvent::Kind::kFailed),
                 "serve: an event of unknown kind ", kind);
  out.event.kind = static_cast<JobEvent::Kind>(kind);
  out.event.token = in.Word();
  out.event.logprob = std::bit_cast<float>(in.Word());
  out.result.finish = static_cast<FinishReason>(in.Word());
  const auto top = in.Words(2 * static_cast<int64_t>(in.Word()));
  for (size_t i = 0; i + 1 < top.size(); i += 2) {
    out.top.push_back({top[i], std::bit_cast<float>(top[i + 1])});
  }
  out.text = in.Bytes();
  in.End();
  out.event.top = out.top;
  if (out.event.kind == JobEvent::Kind::kFailed) {
    out.event.error = out.text;
  } else {
    out.event.text = out.text;
  }
  if (out.event.kind == JobEvent::Kind::kFinished) out.event.result = &out.result;
}

bool IsFinal(const JobEvent& e) { return e.kind != JobEvent::Kind::kToken; }

void SendWords(Communicator& world, int dst, int tag, std::vector<int32_t> words,
               std::deque<std::unique_ptr<PendingTransfer>>& pending) {
  Tensor header = Tensor::Empty({1}, DType::kI32);
  header.data<int32_t>()[0] = static_cast<int32_t>(words.size());
  Tensor payload = Tensor::Empty({static_cast<int64_t>(words.size())}, DType::kI32);
  if (!words.empty()) std::memcpy(payload.raw(), words.data(), words.size() * sizeof(int32_t));
  pending.push_back(world.SendAsync(header, dst, tag));
  if (!words.empty()) pending.push_back(world.SendAsync(payload, dst, tag + 1));
}

// The payload of a message whose header is waiting (Probe said so).
std::vector<int32_t> ReceiveWords(Communicator& world, int src, int tag) {
  Tensor header = Tensor::Empty({1}, DType::kI32);
  world.Recv(header, src, tag);
  const int32_t n = header.data<int32_t>()[0];
  GEMMAPOD_CHECK(n >= 0, "serve: a message of ", n, " words from rank ", src);
  std::vector<int32_t> words(static_cast<size_t>(n));
  if (n > 0) {
    Tensor payload = Tensor::Borrow(words.data(), {n}, DType::kI32);
    world.Recv(payload, src, tag + 1);
  }
  return words;
}

void ReapSends(std::deque<std::unique_ptr<PendingTransfer>>& pending) {
  while (!pending.empty() && pending.front()->Done()) pending.pop_front();
}

}  // namespace

struct ReplicaRouter::Remote {
  int replica = 0;
  std::shared_ptr<ServeJob> job;
  bool cancel_sent = false;
};

ReplicaRouter::ReplicaRouter(Communicator& world, std::vector<int> leaders, BatchScheduler& local,
                             int64_t capacity)
    : world_(world),
      leaders_(std::move(leaders)),
      local_(local),
      capacity_(capacity),
      held_(leaders_.size(), 0),
      dealt_(leaders_.size(), 0) {
  GEMMAPOD_CHECK(!leaders_.empty() && leaders_[0] == world_.rank(),
                 "serve: the router runs on replica 0's leader");
}

ReplicaRouter::~ReplicaRouter() {
  for (auto& p : pending_) p->Wait();
}

Admission ReplicaRouter::Enqueue(std::vector<std::shared_ptr<ServeJob>> jobs) {
  const int64_t n = static_cast<int64_t>(jobs.size());
  int replica = -1;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (draining_) return Admission::kDraining;
    if (n > capacity_) return Admission::kNeverFits;
    // Every replica's KV pool is the same as replica 0's.
    if (local_.Fits(jobs) != Admission::kAccepted) return Admission::kTooLong;
    for (size_t r = 0; r < held_.size(); ++r) {
      if (held_[r] + n <= capacity_ && (replica < 0 || held_[r] < held_[replica])) {
        replica = static_cast<int>(r);
      }
    }
    if (replica < 0) return Admission::kQueueFull;
    held_[static_cast<size_t>(replica)] += n;
    dealt_[static_cast<size_t>(replica)] += n;
    if (replica > 0) {
      for (auto& job : jobs) outbox_.push_back({replica, job});
      return Admission::kAccepted;
    }
  }
  // Replica 0's jobs report their end to the router's count on the way out.
  for (auto& job : jobs) {
    auto report = std::move(job->on_event);
    job->on_event = [this, report = std::move(report)](const JobEvent& e) {
      report(e);
      if (IsFinal(e)) {
        std::lock_guard<std::mutex> lock(mutex_);
        --held_[0];
      }
    };
  }
  const Admission a = local_.Enqueue(std::move(jobs));
  if (a != Admission::kAccepted) {
    std::lock_guard<std::mutex> lock(mutex_);
    held_[0] -= n;
    dealt_[0] -= n;
  }
  return a;
}

void ReplicaRouter::Wake() { local_.Wake(); }

void ReplicaRouter::Drain() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    draining_ = true;
  }
  local_.Drain();
}

SchedulerLoad ReplicaRouter::load() const {
  SchedulerLoad l = local_.load();
  std::lock_guard<std::mutex> lock(mutex_);
  for (size_t r = 1; r < held_.size(); ++r) l.running += held_[r];
  l.slots *= static_cast<int64_t>(leaders_.size());
  return l;
}

std::vector<int64_t> ReplicaRouter::dealt() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return dealt_;
}

void ReplicaRouter::Send(int dst, int tag, std::vector<int32_t> words) {
  SendWords(world_, dst, tag, std::move(words), pending_);
}

bool ReplicaRouter::Pump() {
  std::deque<std::pair<int, std::shared_ptr<ServeJob>>> out;
  bool draining = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    out.swap(outbox_);
    draining = draining_;
  }
  for (auto& [replica, job] : out) {
    const uint64_t id = next_id_++;
    Send(leaders_[static_cast<size_t>(replica)], kToReplicaTag, EncodeJob(id, job->request));
    remote_[id] = std::make_unique<Remote>(Remote{replica, std::move(job), false});
  }
  // After the last jobs: nothing is sent to a replica once it has been drained.
  if (draining && !drain_sent_) {
    for (size_t r = 1; r < leaders_.size(); ++r) Send(leaders_[r], kToReplicaTag, {kDrain});
    drain_sent_ = true;
  }
  for (size_t r = 1; r < leaders_.size(); ++r) {
    while (world_.Probe(leaders_[r], kEventTag)) {
      ReceivedEvent got;
      DecodeEvent(ReceiveWords(world_, leaders_[r], kEventTag), got);
      const auto it = remote_.find(got.id);
      GEMMAPOD_CHECK(it != remote_.end(), "serve: replica ", r, " reported job ", got.id,
                     ", which it was not given");
      it->second->job->on_event(got.event);
      if (IsFinal(got.event)) {
        remote_.erase(it);
        std::lock_guard<std::mutex> lock(mutex_);
        --held_[r];
      }
    }
  }
  // Cancellations after the events: a job that has just ended needs none.
  for (auto& [id, remote] : remote_) {
    if (!remote->cancel_sent && remote->job->cancelled.load()) {
      std::vector<int32_t> w{kCancel};
      AppendId(id, w);
      Send(leaders_[static_cast<size_t>(remote->replica)], kToReplicaTag, std::move(w));
      remote->cancel_sent = true;
    }
  }
  ReapSends(pending_);
  return !remote_.empty() || (draining && !drain_sent_);
}

void ServeReplica(Communicator& world, BatchScheduler& scheduler) {
  std::deque<std::unique_ptr<PendingTransfer>> pending;
  std::map<uint64_t, std::shared_ptr<ServeJob>> jobs;
  const auto pump = [&]() -> bool {
    while (world.Probe(0, kToReplicaTag)) {
      const std::vector<int32_t> words = ReceiveWords(world, 0, kToReplicaTag);
      GEMMAPOD_CHECK(!words.empty(), "serve: an empty message from rank 0");
      if (words[0] == kDrain) {
        scheduler.Drain();
      } else if (words[0] == kCancel) {
        GEMMAPOD_CHECK(words.size() == 3, "serve: a malformed cancellation from rank 0");
        const auto it = jobs.find(ReadId(words.data() + 1));
        if (it != jobs.end()) it->second->cancelled = true;  // already finished otherwise
        scheduler.Wake();
      } else {
        GEMMAPOD_CHECK(words[0] == kJob, "serve: a message of unknown kind ", words[0],
                       " from rank 0");
        auto [id, request] = DecodeJob(words);
        auto job = std::make_shared<ServeJob>();
        job->request = std::move(request);
        // Runs on this (the main) thread, inside the scheduler's steps.
        job->on_event = [&world, &pending, &jobs, id = id](const JobEvent& e) {
          SendWords(world, 0, kEventTag, EncodeEvent(id, e), pending);
          if (IsFinal(e)) jobs.erase(id);
        };
        jobs[id] = job;
        if (scheduler.Enqueue({job}) != Admission::kAccepted) {
          JobEvent e;
          e.kind = JobEvent::Kind::kFailed;
          e.error = "the replica's queue is full";
          job->on_event(e);
        }
      }
    }
    ReapSends(pending);
    return false;
  };
  scheduler.Run(pump);
  for (auto& p : pending) p->Wait();
}

}  // namespace gemmapod
