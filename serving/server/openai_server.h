// The HTTP face of `gemmapod serve`: OpenAI's completions and chat completions (whole or streamed
// as Server-Sent Events), the model list, health and Prometheus metrics, on cpp-httplib. Requests
// are checked and tokenized on the HTTP threads and handed to the scheduler (or the replicas'
// router) as one job per choice; the engine thread reports tokens back through a per-request
// channel. httplib stays inside the .cc.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "runtime/tokenizer/tokenizer.h"

namespace gemmapod {

class JobQueue;
class ServerMetrics;

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                       // 0: any free port (Start returns it)
  std::string api_key;                   // empty: no key asked
  size_t max_body_bytes = 1 << 20;       // larger bodies get 413
  double request_timeout_seconds = 600;  // a request running longer is cancelled
  int http_threads = 128;                // connections served at once (a stream holds one)
};

// What the server serves, once loaded.
struct ServedModel {
  std::string name;           // the id in /v1/models and in the "model" field
  int64_t context = 0;        // tokens per sequence: prompt + max_tokens must fit
  int32_t eos_id = 1;         // ends a completion
  int64_t sampled_vocab = 0;  // ids a prompt given as tokens may hold
  int64_t created = 0;        // Unix seconds, for /v1/models
  // Encoder-decoder models (T5Gemma): the prompt feeds the encoder (at most encoder_context
  // tokens) and the decoder starts from decoder_start; -1 for decoder-only models, whose context
  // holds prompt and completion together.
  int32_t decoder_start = -1;
  int64_t encoder_context = 0;
};

class OpenAiServer {
 public:
  OpenAiServer(const ServerOptions& options, ServerMetrics& metrics);
  ~OpenAiServer();

  // Binds and starts answering on a thread of its own: /health says "loading" and completions
  // get 503 until SetReady. Returns the port; throws gemmapod::Error naming host:port when it
  // cannot bind.
  int Start();
  // The model is loaded: completions go to `queue` (a scheduler, or a router over replicas; it
  // outlives the server's use of it).
  void SetReady(JobQueue* queue, const Tokenizer& tokenizer, const ServedModel& model);
  // From now on completions get 503 (shutting down); requests already admitted go on.
  void StopAdmitting();
  // The engine has stopped for good (an error ends the job): every request still waiting ends
  // now with a 500 naming `reason`, and new ones are refused, so Stop need not wait for them.
  void Abort(const std::string& reason);
  // Stops listening and waits for the HTTP threads (after the scheduler has drained).
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gemmapod
