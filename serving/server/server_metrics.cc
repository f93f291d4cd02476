#include "serving/server/server_metrics.h"

#include <algorithm>
#include <cstdio>

namespace gemmapod {
namespace {

std::string Number(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return buf;
}

std::string Line(const std::string& name, const std::string& labels, double value) {
  return name + (labels.empty() ? "" : "{" + labels + "}") + " " + Number(value) + "\n";
}

std::string Metric(const std::string& name, const char* type, const std::string& help) {
  return "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

}  // namespace

LatencyHistogram::LatencyHistogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void LatencyHistogram::Observe(double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  const size_t i = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), seconds) -
                                       bounds_.begin());
  ++counts_[i];
  sum_ += seconds;
}

uint64_t LatencyHistogram::count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  uint64_t n = 0;
  for (uint64_t c : counts_) n += c;
  return n;
}

std::string LatencyHistogram::Render(const std::string& name, const std::string& help) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out = Metric(name, "histogram", help);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += Line(name + "_bucket", "le=\"" + Number(bounds_[i]) + "\"",
                static_cast<double>(cumulative));
  }
  cumulative += counts_.back();
  out += Line(name + "_bucket", "le=\"+Inf\"", static_cast<double>(cumulative));
  out += Line(name + "_sum", "", sum_);
  out += Line(name + "_count", "", static_cast<double>(cumulative));
  return out;
}

ServerMetrics::ServerMetrics()
    : first_token_({0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}),
      inter_token_({0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5}),
      request_({0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}) {}

void ServerMetrics::CountRequest(int status) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [code, count] : requests_) {
    if (code == status) {
      ++count;
      return;
    }
  }
  requests_.push_back({status, 1});
  std::sort(requests_.begin(), requests_.end());
}

void ServerMetrics::CountTokens(int64_t prompt, int64_t generated) {
  std::lock_guard<std::mutex> lock(mutex_);
  prompt_tokens_ += static_cast<uint64_t>(prompt);
  generated_tokens_ += static_cast<uint64_t>(generated);
}

void ServerMetrics::CountCancelled() {
  std::lock_guard<std::mutex> lock(mutex_);
  ++cancelled_;
}

std::string ServerMetrics::Render(const SchedulerLoad& load, int64_t context) const {
  std::string out;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    out += Metric("gemmapod_requests_total", "counter",
                  "Completion requests answered, by HTTP status.");
    for (const auto& [code, count] : requests_) {
      out += Line("gemmapod_requests_total", "status=\"" + std::to_string(code) + "\"",
                  static_cast<double>(count));
    }
    out += Metric("gemmapod_requests_cancelled_total", "counter",
                  "Requests whose client went away or timed out before they finished.");
    out += Line("gemmapod_requests_cancelled_total", "", static_cast<double>(cancelled_));
    out += Metric("gemmapod_prompt_tokens_total", "counter", "Prompt tokens prefilled.");
    out += Line("gemmapod_prompt_tokens_total", "", static_cast<double>(prompt_tokens_));
    out += Metric("gemmapod_generation_tokens_total", "counter", "Tokens generated.");
    out += Line("gemmapod_generation_tokens_total", "", static_cast<double>(generated_tokens_));
  }
  out += Metric("gemmapod_requests_running", "gauge", "Sequences holding a cache slot.");
  out += Line("gemmapod_requests_running", "", static_cast<double>(load.running));
  out += Metric("gemmapod_requests_waiting", "gauge", "Sequences queued for a cache slot.");
  out += Line("gemmapod_requests_waiting", "", static_cast<double>(load.waiting));
  out += Metric("gemmapod_kv_slots_used", "gauge", "KV cache sequence slots in use.");
  out += Line("gemmapod_kv_slots_used", "", static_cast<double>(load.running));
  out += Metric("gemmapod_kv_slots_free", "gauge", "KV cache sequence slots free.");
  out += Line("gemmapod_kv_slots_free", "", static_cast<double>(load.slots - load.running));
  const bool pool = load.kv.block_tokens > 0;
  out += Metric("gemmapod_kv_capacity_tokens", "gauge",
                "Tokens the KV cache holds in all (its pool's global layers, or slots x context).");
  out += Line("gemmapod_kv_capacity_tokens", "",
              static_cast<double>(pool ? load.kv.capacity_tokens : load.slots * context));
  if (pool) {
    out += Metric("gemmapod_kv_block_tokens", "gauge", "Positions per KV cache block.");
    out += Line("gemmapod_kv_block_tokens", "", static_cast<double>(load.kv.block_tokens));
    out += Metric("gemmapod_kv_blocks_used", "gauge",
                  "KV cache blocks held by running sequences (global and sliding layers).");
    out += Line("gemmapod_kv_blocks_used", "", static_cast<double>(load.kv.used));
    out += Metric("gemmapod_kv_blocks_free", "gauge",
                  "KV cache blocks free, including those keeping a cached prefix.");
    out += Line("gemmapod_kv_blocks_free", "", static_cast<double>(load.kv.blocks - load.kv.used));
    out += Metric("gemmapod_kv_blocks_cached", "gauge",
                  "Free KV cache blocks that still hold a prompt prefix for reuse.");
    out += Line("gemmapod_kv_blocks_cached", "", static_cast<double>(load.kv.cached));
    out += Metric("gemmapod_prefix_cache_hit_tokens_total", "counter",
                  "Prompt tokens found in the prefix cache instead of computed.");
    out += Line("gemmapod_prefix_cache_hit_tokens_total", "",
                static_cast<double>(load.kv.prefix_hits));
    out += Metric("gemmapod_prefix_cache_query_tokens_total", "counter",
                  "Prompt tokens of the sequences admitted.");
    out += Line("gemmapod_prefix_cache_query_tokens_total", "",
                static_cast<double>(load.kv.prompt_tokens));
  }
  out += first_token_.Render("gemmapod_time_to_first_token_seconds",
                             "Time from a request's arrival to its first generated token.");
  out += inter_token_.Render("gemmapod_inter_token_latency_seconds",
                             "Time between consecutive generated tokens of a sequence.");
  out += request_.Render("gemmapod_request_duration_seconds",
                         "Time from a request's arrival to its last token.");
  return out;
}

}  // namespace gemmapod
