#include "serving/server/openai_server.h"

#include <httplib.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "runtime/error.h"
#include "runtime/tokenizer/chat_template.h"
#include "serving/engine/batch_scheduler.h"
#include "serving/server/chat_page.h"
#include "serving/server/openai_api.h"
#include "serving/server/server_metrics.h"

namespace gemmapod {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// How often a waiting response writes something (a space before a JSON body, a comment in a
// stream): the write fails once the client has gone, which cancels its request.
constexpr auto kProbeInterval = std::chrono::seconds(1);

// Where a request's jobs report, read by the HTTP thread that answers it.
struct Channel {
  struct Event {
    int choice = 0;
    JobEvent::Kind kind = JobEvent::Kind::kToken;
    std::string text;
    int32_t token = -1;
    float logprob = 0;
    std::vector<std::pair<int32_t, float>> top;
    FinishReason finish = FinishReason::kLength;
    std::string error;
  };

  std::mutex mutex;
  std::condition_variable ready;
  std::deque<Event> events;
  std::vector<std::shared_ptr<ServeJob>> jobs;
  Clock::time_point arrival;
  bool saw_token = false;
  std::vector<std::optional<Clock::time_point>> last_token;  // per choice

  void Cancel(JobQueue& scheduler) {
    for (auto& job : jobs) job->cancelled = true;
    scheduler.Wake();
  }
};

// The engine thread's side: record the event (and its latencies) and wake the answering thread.
void Report(Channel& channel, ServerMetrics& metrics, int choice, const JobEvent& e) {
  Channel::Event event;
  event.choice = choice;
  event.kind = e.kind;
  {
    std::lock_guard<std::mutex> lock(channel.mutex);
    if (e.kind == JobEvent::Kind::kToken) {
      event.text = std::string(e.text);
      event.token = e.token;
      event.logprob = e.logprob;
      event.top.assign(e.top.begin(), e.top.end());
      if (e.token >= 0) {
        const Clock::time_point now = Clock::now();
        if (!channel.saw_token) metrics.ObserveFirstToken(Seconds(now - channel.arrival));
        channel.saw_token = true;
        auto& last = channel.last_token[static_cast<size_t>(choice)];
        if (last) metrics.ObserveInterToken(Seconds(now - *last));
        last = now;
      }
    } else if (e.kind == JobEvent::Kind::kFinished) {
      event.finish = e.result->finish;
    } else {
      event.error = std::string(e.error);
    }
    channel.events.push_back(std::move(event));
  }
  channel.ready.notify_one();
}

}  // namespace

struct OpenAiServer::Impl {
  ServerOptions options;
  ServerMetrics& metrics;
  httplib::Server http;
  int listen_socket = -1;
  std::thread listener;
  int port = 0;

  std::mutex setup;  // guards the three below until ready is set
  JobQueue* scheduler = nullptr;
  std::optional<Tokenizer> tokenizer;
  ServedModel model;
  std::atomic<bool> ready{false};
  std::atomic<bool> admitting{true};
  std::atomic<bool> aborted{false};
  std::string abort_reason;  // set before aborted
  std::atomic<uint64_t> next_id{1};

  Impl(const ServerOptions& o, ServerMetrics& m) : options(o), metrics(m) {}

  void Log(const std::string& line) { std::fprintf(stderr, "serve: %s\n", line.c_str()); }

  void Refuse(const httplib::Request& req, httplib::Response& res, const ApiError& e) {
    res.status = e.status;
    res.set_content(ErrorBody(e), "application/json");
    metrics.CountRequest(e.status);
    Log(StrCat(req.method, " ", req.path, " ", e.status, ": ", e.what()));
  }

  void Routes();
  void Completion(const httplib::Request& req, httplib::Response& res, bool chat);
};

void OpenAiServer::Impl::Routes() {
  http.new_task_queue = [n = options.http_threads] {
    return new httplib::ThreadPool(static_cast<size_t>(n));
  };
  http.set_payload_max_length(options.max_body_bytes);
  http.set_socket_options([this](socket_t sock) {
    httplib::default_socket_options(sock);
    listen_socket = static_cast<int>(sock);
  });
  http.set_read_timeout(30, 0);
  http.set_write_timeout(30, 0);

  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    // Completions go uncompressed: a compressor emits nothing for the one-space probes of a
    // waiting answer, and with them would go the notice that its client has gone. httplib
    // decides on compression from the request's Accept-Encoding alone and hands handlers a
    // const request; the object itself is httplib's own non-const one, so erasing is defined.
    if (req.path.rfind("/v1/", 0) == 0) {
      const_cast<httplib::Request&>(req).headers.erase("Accept-Encoding");
    }
    // The page and the probe carry no data; the page sends the key with its API calls.
    if (options.api_key.empty() || req.path == "/health" || req.path == "/") {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    const std::string expected = "Bearer " + options.api_key;
    const std::string given = req.get_header_value("Authorization");
    // Compared in time independent of where the strings differ.
    unsigned diff = given.size() == expected.size() ? 0u : 1u;
    for (size_t i = 0; i < given.size() && i < expected.size(); ++i) {
      diff |= static_cast<unsigned char>(given[i] ^ expected[i]);
    }
    if (diff == 0) return httplib::Server::HandlerResponse::Unhandled;
    Refuse(req, res,
           ApiError(401, "missing or wrong API key (send 'Authorization: Bearer <key>')", "",
                    "invalid_request_error", "invalid_api_key"));
    return httplib::Server::HandlerResponse::Handled;
  });
  http.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    const std::string message = res.status == 413
                                    ? StrCat("the body exceeds ", options.max_body_bytes, " bytes")
                                : res.status == 404 ? StrCat("no route ", req.method, " ", req.path)
                                                    : StrCat("HTTP ", res.status);
    res.set_content(ErrorBody(ApiError(res.status, message)), "application/json");
    Log(StrCat(req.method, " ", req.path, " ", res.status, ": ", message));
  });
  http.set_exception_handler(
      [this](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown error";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        Refuse(req, res, ApiError(500, "internal error: " + what, "", "server_error"));
      });

  http.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_header("Content-Security-Policy",
                   "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'");
    res.set_content(std::string(ChatPageHtml()), "text/html; charset=utf-8");
  });
  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const bool up = ready.load() && admitting.load();
    res.status = up ? 200 : 503;
    res.set_content(up              ? R"({"status":"ok"})"
                    : !ready.load() ? R"({"status":"loading"})"
                                    : R"({"status":"shutting down"})",
                    "application/json");
  });
  http.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
    if (!ready.load()) return Refuse(req, res, ApiError(503, "the model is still loading"));
    res.set_content(ModelsBody(model.name, model.created, model.context), "application/json");
  });
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    const SchedulerLoad load = ready.load() ? scheduler->load() : SchedulerLoad{};
    res.set_content(metrics.Render(load, ready.load() ? model.context : 0),
                    "text/plain; version=0.0.4");
  });
  http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    Completion(req, res, /*chat=*/false);
  });
  http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    Completion(req, res, /*chat=*/true);
  });
}

void OpenAiServer::Impl::Completion(const httplib::Request& req, httplib::Response& res,
                                    bool chat) {
  const Clock::time_point arrival = Clock::now();
  auto channel = std::make_shared<Channel>();
  channel->arrival = arrival;
  ApiRequest api;
  GenerationRequest base;
  try {
    if (!ready.load()) throw ApiError(503, "the model is still loading", "", "server_error");
    if (!admitting.load()) throw ApiError(503, "the server is shutting down", "", "server_error");
    api = ParseApiRequest(req.body, chat);
    if (!api.model.empty() && api.model != model.name) {
      throw ApiError(
          404,
          "model '" + api.model + "' is not served here; this server serves '" + model.name + "'",
          "model", "invalid_request_error", "model_not_found");
    }
    const char* prompt_field = chat ? "messages" : "prompt";
    if (chat) {
      try {
        base.prompt = EncodeGemmaChat(*tokenizer, api.messages, /*add_generation_prompt=*/true);
      } catch (const Error& e) {
        throw ApiError(400, e.what(), "messages");
      }
      base.stop_tokens = GemmaStopTokens(*tokenizer);
    } else {
      if (api.prompt_is_tokens) {
        for (size_t i = 0; i < api.prompt_tokens.size(); ++i) {
          if (api.prompt_tokens[i] >= model.sampled_vocab) {
            throw ApiError(
                400,
                StrCat("prompt[", i, "] = ", api.prompt_tokens[i],
                       " is not a token id (the vocabulary has ", model.sampled_vocab, ")"),
                "prompt");
          }
        }
        base.prompt = api.prompt_tokens;
      } else {
        base.prompt = tokenizer->Encode(api.prompt, /*add_bos=*/true);
      }
      base.stop_tokens = {model.eos_id};
    }
    if (api.ignore_eos) base.stop_tokens.clear();
    if (model.decoder_start >= 0) {
      // An encoder-decoder model: the prompt is the encoder's; the decoder's context holds its
      // start token and the completion.
      const int64_t encoder = static_cast<int64_t>(base.prompt.size());
      if (encoder > model.encoder_context) {
        throw ApiError(400,
                       StrCat("the prompt has ", encoder,
                              " tokens; this model's encoder takes at "
                              "most ",
                              model.encoder_context),
                       prompt_field, "invalid_request_error", "context_length_exceeded");
      }
      base.encoder_prompt = std::move(base.prompt);
      base.prompt = {model.decoder_start};
    }
    const int64_t prompt = static_cast<int64_t>(base.prompt.size());
    if (prompt >= model.context) {
      throw ApiError(400,
                     StrCat("the prompt has ", prompt, " tokens; this server's context is ",
                            model.context, " tokens per sequence, prompt and completion together"),
                     prompt_field, "invalid_request_error", "context_length_exceeded");
    }
    // Completions default to 16 tokens as OpenAI's; chat answers may fill the context.
    base.max_new_tokens = api.max_tokens.value_or(chat ? model.context - prompt : 16);
    if (base.max_new_tokens > model.context - prompt) {
      throw ApiError(
          400,
          StrCat("max_tokens is ", base.max_new_tokens, " but the prompt's ", prompt,
                 " tokens leave ", model.context - prompt, " of the context's ", model.context),
          "max_tokens", "invalid_request_error", "context_length_exceeded");
    }
    base.sampling = api.sampling;
    if (!api.seeded) base.sampling.seed = std::random_device{}() * 0x100000001ull;
    base.stop_strings = api.stop;
    base.top_logprobs = api.top_logprobs;
    try {
      Validate(base.sampling);
    } catch (const Error& e) {
      throw ApiError(400, e.what());
    }
    channel->last_token.resize(static_cast<size_t>(api.n));
    ServerMetrics& m = metrics;
    for (int i = 0; i < api.n; ++i) {
      auto job = std::make_shared<ServeJob>();
      job->request = base;
      job->request.sampling.seed = base.sampling.seed + static_cast<uint64_t>(i);
      // Weak: the engine may still report a cancelled job after its answer has gone.
      std::weak_ptr<Channel> ch = channel;
      job->on_event = [ch, &m, i](const JobEvent& e) {
        if (auto c = ch.lock()) Report(*c, m, i, e);
      };
      channel->jobs.push_back(std::move(job));
    }
    switch (scheduler->Enqueue(channel->jobs)) {
      case Admission::kAccepted:
        break;
      case Admission::kQueueFull: {
        res.set_header("Retry-After", "1");
        const SchedulerLoad load = scheduler->load();
        throw ApiError(503,
                       StrCat("the server is busy (", load.running, " sequences running, ",
                              load.waiting, " waiting); retry later"),
                       "", "server_error", "overloaded");
      }
      case Admission::kNeverFits: {
        const SchedulerLoad load = scheduler->load();
        throw ApiError(400,
                       StrCat("n = ", api.n, " sequences at once cannot fit this server (",
                              load.slots, " sequence slots and its queue)"),
                       "n");
      }
      case Admission::kTooLong: {
        const SchedulerLoad load = scheduler->load();
        throw ApiError(
            400,
            StrCat("the prompt's ", base.prompt.size(), " tokens and max_tokens ",
                   base.max_new_tokens, api.n > 1 ? StrCat(", for n = ", api.n) : "",
                   " cannot fit this server's KV cache of ", load.kv.capacity_tokens, " tokens"),
            "max_tokens", "invalid_request_error", "context_length_exceeded");
      }
      case Admission::kDraining:
        throw ApiError(503, "the server is shutting down", "", "server_error");
    }
  } catch (const ApiError& e) {
    return Refuse(req, res, e);
  }

  const uint64_t serial = next_id.fetch_add(1);
  ResponseMeta meta{StrCat(chat ? "chatcmpl-" : "cmpl-", serial),
                    std::chrono::duration_cast<std::chrono::seconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count(),
                    model.name, chat, api.top_logprobs >= 0};
  const int64_t prompt_tokens = static_cast<int64_t>(
      base.encoder_prompt.empty() ? base.prompt.size() : base.encoder_prompt.size());
  const bool stream = api.stream, include_usage = api.include_usage;
  const int n = api.n;
  const std::string path = req.path;
  const auto deadline =
      arrival + std::chrono::duration_cast<Clock::duration>(
                    std::chrono::duration<double>(options.request_timeout_seconds));
  JobQueue* sched = scheduler;

  auto respond = [this, channel, meta, prompt_tokens, stream, include_usage, n, path, deadline,
                  arrival, sched](size_t, httplib::DataSink& sink) -> bool {
    std::vector<ChoiceOutput> choices(static_cast<size_t>(n));
    std::vector<size_t> offsets(static_cast<size_t>(n), 0);  // text_offset of the next token
    int64_t generated = 0;
    int finished = 0;
    std::optional<ApiError> failure;
    Clock::time_point last_write = Clock::now();
    auto write = [&](const std::string& data) {
      if (data.empty()) return true;
      last_write = Clock::now();
      return sink.write(data.data(), data.size());
    };
    std::string out;
    if (stream && meta.chat) {
      for (int i = 0; i < n; ++i) out += StreamEvent(meta, i, "", std::nullopt, /*role_only=*/true);
    }
    while (finished < n) {
      std::deque<Channel::Event> events;
      {
        std::unique_lock<std::mutex> lock(channel->mutex);
        channel->ready.wait_until(lock, std::min(Clock::now() + kProbeInterval, deadline),
                                  [&] { return !channel->events.empty(); });
        events.swap(channel->events);
      }
      for (Channel::Event& e : events) {
        ChoiceOutput& c = choices[static_cast<size_t>(e.choice)];
        if (e.kind == JobEvent::Kind::kToken) {
          std::span<const TokenLogprob> token_logprobs;
          if (e.token >= 0) {
            ++generated;
            if (meta.logprobs) {
              TokenLogprob t{tokenizer->TokenText(e.token), e.logprob, {}};
              for (const auto& [id, lp] : e.top) t.top.push_back({tokenizer->TokenText(id), lp});
              c.logprobs.push_back(std::move(t));
              token_logprobs = {&c.logprobs.back(), 1};
            }
          }
          c.text += e.text;
          if (stream && (!e.text.empty() || !token_logprobs.empty())) {
            size_t& offset = offsets[static_cast<size_t>(e.choice)];
            out += StreamEvent(meta, e.choice, e.text, std::nullopt, false, token_logprobs, offset);
            for (const TokenLogprob& t : token_logprobs) offset += t.token.size();
          }
        } else if (e.kind == JobEvent::Kind::kFinished) {
          ++finished;
          c.finish = e.finish;
          if (stream && e.finish != FinishReason::kCancelled) {
            out += StreamEvent(meta, e.choice, "", e.finish);
          }
        } else {
          ++finished;
          failure = ApiError(500, "generation failed: " + e.error, "", "server_error");
        }
      }
      if (!write(out)) {
        channel->Cancel(*sched);
        metrics.CountCancelled();
        Log(StrCat(meta.id, " ", path, ": the client went away; cancelled"));
        return false;
      }
      out.clear();
      if (finished == n) break;
      if (aborted.load()) {
        failure = ApiError(500, "the engine stopped: " + abort_reason, "", "server_error");
        break;
      }
      const Clock::time_point now = Clock::now();
      if (now >= deadline) {
        channel->Cancel(*sched);
        metrics.CountCancelled();
        failure = ApiError(504,
                           StrCat("the request ran past the server's timeout of ",
                                  options.request_timeout_seconds, " s and was cancelled"),
                           "", "server_error", "timeout");
        break;
      }
      // Nothing to say yet: probe the connection (JSON may start with white space; an SSE line
      // starting with ':' is a comment).
      if (now - last_write >= kProbeInterval && !write(stream ? ": waiting\n\n" : " ")) {
        channel->Cancel(*sched);
        metrics.CountCancelled();
        Log(StrCat(meta.id, " ", path, ": the client went away; cancelled"));
        return false;
      }
    }
    const Usage usage{prompt_tokens, generated};
    if (failure) {
      out = stream ? StreamErrorEvent(*failure) : ErrorBody(*failure);
    } else if (stream) {
      if (include_usage) out += StreamUsageEvent(meta, usage);
    } else {
      out = ResponseBody(meta, choices, usage);
    }
    if (stream) out += kStreamDone;
    const bool sent = write(out);
    sink.done();
    const double total = Seconds(Clock::now() - arrival);
    metrics.CountRequest(failure ? failure->status : 200);
    metrics.CountTokens(prompt_tokens * n, generated);
    metrics.ObserveRequest(total);
    Log(StrCat(meta.id, " ", path, " ", failure ? failure->status : 200, ": prompt ", prompt_tokens,
               " tokens, generated ", generated, " in ", total, " s, finish ",
               failure ? failure->what() : OpenAiFinishReason(choices[0].finish)));
    return sent;
  };
  res.set_chunked_content_provider(stream ? "text/event-stream" : "application/json",
                                   std::move(respond), [channel, sched](bool success) {
                                     if (!success) channel->Cancel(*sched);
                                   });
  if (stream) res.set_header("Cache-Control", "no-cache");
}

OpenAiServer::OpenAiServer(const ServerOptions& options, ServerMetrics& metrics)
    : impl_(std::make_unique<Impl>(options, metrics)) {
  impl_->Routes();
}

OpenAiServer::~OpenAiServer() { Stop(); }

int OpenAiServer::Start() {
  const ServerOptions& o = impl_->options;
  if (o.port == 0) {
    impl_->port = impl_->http.bind_to_any_port(o.host);
  } else {
    impl_->port = impl_->http.bind_to_port(o.host, o.port) ? o.port : -1;
  }
  GEMMAPOD_CHECK(impl_->port > 0, "serve: cannot listen on ", o.host, ":", o.port,
                 " (address in use, or not an address of this host)");
  // Debian's cpp-httplib listens with a backlog of 5: a burst of clients connecting at once would
  // see refused or stalled connections. Listening again on the bound socket raises it (Linux).
  if (impl_->listen_socket >= 0) ::listen(impl_->listen_socket, SOMAXCONN);
  impl_->listener = std::thread([this] { impl_->http.listen_after_bind(); });
  return impl_->port;
}

void OpenAiServer::SetReady(JobQueue* queue, const Tokenizer& tokenizer, const ServedModel& model) {
  {
    std::lock_guard<std::mutex> lock(impl_->setup);
    impl_->scheduler = queue;
    impl_->tokenizer = tokenizer;
    impl_->model = model;
  }
  impl_->ready.store(true);
}

void OpenAiServer::StopAdmitting() { impl_->admitting.store(false); }

void OpenAiServer::Abort(const std::string& reason) {
  impl_->admitting.store(false);
  impl_->abort_reason = reason;
  impl_->aborted.store(true);
}

void OpenAiServer::Stop() {
  if (!impl_->listener.joinable()) return;
  impl_->http.stop();
  impl_->listener.join();
}

}  // namespace gemmapod
