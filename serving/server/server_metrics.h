// The server's counters and latency histograms, rendered in Prometheus' text format for
// GET /metrics. Thread-safe: HTTP threads and the engine thread record into it.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "serving/engine/batch_scheduler.h"

namespace gemmapod {

// A cumulative histogram with fixed upper bounds (seconds), as Prometheus expects.
class LatencyHistogram {
 public:
  explicit LatencyHistogram(std::vector<double> bounds);
  void Observe(double seconds);
  // "# TYPE name histogram" and its _bucket/_sum/_count lines.
  std::string Render(const std::string& name, const std::string& help) const;
  uint64_t count() const;

 private:
  mutable std::mutex mutex_;
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bound, not cumulative; one more for +Inf
  double sum_ = 0;
};

class ServerMetrics {
 public:
  ServerMetrics();

  // A request answered: HTTP status class ("2xx", "4xx", "5xx") counted by status code.
  void CountRequest(int status);
  void CountTokens(int64_t prompt, int64_t generated);
  void ObserveFirstToken(double seconds) { first_token_.Observe(seconds); }
  void ObserveInterToken(double seconds) { inter_token_.Observe(seconds); }
  void ObserveRequest(double seconds) { request_.Observe(seconds); }
  void CountCancelled();

  // The whole text; `load` is the scheduler's state now, `context` tokens per sequence slot.
  std::string Render(const SchedulerLoad& load, int64_t context) const;

 private:
  mutable std::mutex mutex_;
  std::vector<std::pair<int, uint64_t>> requests_;  // (status, count)
  uint64_t prompt_tokens_ = 0;
  uint64_t generated_tokens_ = 0;
  uint64_t cancelled_ = 0;
  LatencyHistogram first_token_;
  LatencyHistogram inter_token_;
  LatencyHistogram request_;
};

}  // namespace gemmapod
