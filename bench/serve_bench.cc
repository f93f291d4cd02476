// A load generator for `gemmapod serve` (or any OpenAI-compatible server): at each concurrency
// level, that many clients send streaming completions back to back, each a prompt of exactly
// --prompt-tokens ids and --output-tokens generated (ignore_eos), and the run reports requests/s,
// output tokens/s, time to first token and inter-token latency (p50, p99), measured on the
// client from the Server-Sent Events as they arrive. --shared-prefix-tokens N makes every prompt
// start with the same N tokens (a system prompt: prefix caching's case).
//
//   build/bench/serve_bench --port 8080 --clients 1,4,16,64 --prompt-tokens 128 --output-tokens 128
//
// bench/serve_bench.sh starts the server on the real Gemma 3 270M and runs this.
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "bench/bench_util.h"

namespace gemmapod::bench {
namespace {

struct RequestTiming {
  bool ok = false;
  double start = 0, first = 0, end = 0;
  std::vector<double> gaps;  // between successive streamed events with text
  int64_t tokens = 0;        // from the stream's usage
  int64_t text_events = 0;   // servers that send no usage in a stream: one token per event
  std::string error;
};

RequestTiming StreamOne(const std::string& host, int port, const std::string& body) {
  RequestTiming t;
  httplib::Client client(host, port);
  client.set_read_timeout(600, 0);
  t.start = Now();
  double last = 0;
  std::string pending;
  auto on_data = [&](const char* data, size_t n) {
    pending.append(data, n);
    for (size_t at; (at = pending.find("\n\n")) != std::string::npos;) {
      const std::string event = pending.substr(0, at);
      pending.erase(0, at + 2);
      if (event.rfind("data: {", 0) != 0) continue;
      const nlohmann::json j = nlohmann::json::parse(event.substr(6));
      if (j.contains("usage") && !j["usage"].is_null()) {
        t.tokens = j["usage"]["completion_tokens"].get<int64_t>();
      }
      if (j.contains("error")) t.error = j["error"]["message"];
      for (const auto& c : j["choices"]) {
        if (!c.contains("text") || c["text"].get<std::string>().empty()) continue;
        ++t.text_events;
        const double now = Now();
        if (t.first == 0) {
          t.first = now;
        } else {
          t.gaps.push_back(now - last);
        }
        last = now;
      }
    }
    return true;
  };
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = body;
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    return on_data(data, n);
  };
  auto res = client.send(req);
  t.end = Now();
  t.ok = res && res->status == 200 && t.error.empty() && t.first > 0;
  if (!res) {
    t.error = httplib::to_string(res.error());
  } else if (res->status != 200) {
    t.error = StrCat("HTTP ", res->status, ": ", pending);
  }
  return t;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  return v[i];
}

std::vector<int> ParseList(const std::string& text) {
  std::vector<int> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoi(item));
  return out;
}

int Main(int argc, char** argv) {
  const Flags flags(argc, argv,
                    {{"--host", "127.0.0.1"},
                     {"--port", "8080"},
                     {"--clients", "1,4,16,64"},
                     {"--prompt-tokens", "128"},
                     {"--output-tokens", "128"},
                     {"--requests-per-client", "2"},
                     {"--vocab", "32000"},
                     {"--temperature", "0"},
                     {"--shared-prefix-tokens", "0"}});
  const std::string host = flags.Get("--host");
  const int port = static_cast<int>(flags.Int("--port"));
  const int64_t prompt_tokens = flags.Int("--prompt-tokens");
  const int64_t output_tokens = flags.Int("--output-tokens");
  const int64_t per_client = flags.Int("--requests-per-client");
  const int64_t shared_prefix = flags.Int("--shared-prefix-tokens");
  if (shared_prefix < 0 || shared_prefix > prompt_tokens || prompt_tokens < 1) {
    std::fprintf(stderr, "serve_bench: --shared-prefix-tokens must be in [0, --prompt-tokens]\n");
    return 2;
  }
  std::printf(
      "prompt %lld tokens (the first %lld shared), output %lld tokens, %lld requests per client, "
      "temperature %s\n",
      static_cast<long long>(prompt_tokens), static_cast<long long>(shared_prefix),
      static_cast<long long>(output_tokens), static_cast<long long>(per_client),
      flags.Get("--temperature").c_str());
  std::printf("%7s %9s %10s %12s %10s %10s %10s %10s\n", "clients", "req/s", "out tok/s",
              "tok/s/client", "ttft p50", "ttft p99", "itl p50", "itl p99");
  std::atomic<int64_t> serial{0};
  for (const int clients : ParseList(flags.Get("--clients"))) {
    std::vector<RequestTiming> timings;
    std::mutex mutex;
    const double t0 = Now();
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) {
      threads.emplace_back([&] {
        for (int64_t r = 0; r < per_client; ++r) {
          const int64_t id = serial.fetch_add(1);
          std::vector<int32_t> prompt = PromptTokens(prompt_tokens, id, flags.Int("--vocab"));
          // A system prompt every request shares (prefix caching's case): the same first tokens.
          const std::vector<int32_t> shared =
              PromptTokens(shared_prefix, int64_t{1} << 30, flags.Int("--vocab"));
          std::copy(shared.begin(), shared.end(), prompt.begin());
          prompt[0] = 2;  // <bos>
          const nlohmann::json body = {{"prompt", prompt},
                                       {"max_tokens", output_tokens},
                                       {"temperature", std::stod(flags.Get("--temperature"))},
                                       {"seed", id},
                                       {"ignore_eos", true},
                                       {"stream", true},
                                       {"stream_options", {{"include_usage", true}}}};
          RequestTiming t = StreamOne(host, port, body.dump());
          std::lock_guard<std::mutex> lock(mutex);
          timings.push_back(std::move(t));
        }
      });
    }
    for (auto& t : threads) t.join();
    const double elapsed = Now() - t0;
    std::vector<double> ttft, itl;
    int64_t tokens = 0, failed = 0;
    for (const RequestTiming& t : timings) {
      if (!t.ok) {
        ++failed;
        if (failed == 1) std::fprintf(stderr, "request failed: %s\n", t.error.c_str());
        continue;
      }
      ttft.push_back(t.first - t.start);
      itl.insert(itl.end(), t.gaps.begin(), t.gaps.end());
      tokens += t.tokens > 0 ? t.tokens : t.text_events;
    }
    const double rate = static_cast<double>(tokens) / elapsed;
    std::printf("%7d %9.2f %10.1f %12.1f %9.3fs %9.3fs %8.1fms %8.1fms%s\n", clients,
                static_cast<double>(timings.size() - static_cast<size_t>(failed)) / elapsed, rate,
                rate / clients, Percentile(ttft, 0.5), Percentile(ttft, 0.99),
                1e3 * Percentile(itl, 0.5), 1e3 * Percentile(itl, 0.99),
                failed > 0 ? StrCat("  (", failed, " failed)").c_str() : "");
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace
}  // namespace gemmapod::bench

int main(int argc, char** argv) {
  try {
    return gemmapod::bench::Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "serve_bench: %s\n", e.what());
    return 1;
  }
}
