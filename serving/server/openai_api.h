// The OpenAI wire format of /v1/completions and /v1/chat/completions: request bodies read into
// plain structs with errors that name the field (ApiError, OpenAI's error shape), and response
// bodies and stream chunks written from plain structs. nlohmann's JSON stays inside the .cc.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/tokenizer/chat_template.h"
#include "serving/generator.h"
#include "serving/sampler.h"

namespace gemmapod {

// An error answered to the client: HTTP status and OpenAI's {"error": {...}} fields.
struct ApiError : std::runtime_error {
  ApiError(int status, std::string message, std::string param = "",
           std::string type = "invalid_request_error", std::string code = "")
      : std::runtime_error(message),
        status(status),
        param(std::move(param)),
        type(std::move(type)),
        code(std::move(code)) {}
  int status;
  std::string param;
  std::string type;
  std::string code;
};
// {"error": {"message", "type", "param", "code"}} (null param and code when empty).
std::string ErrorBody(const ApiError& error);

inline constexpr int kMaxChoices = 16;     // n
inline constexpr int kMaxStopStrings = 8;  // stop

struct ApiRequest {
  bool chat = false;
  std::string model;                   // empty: not given
  std::string prompt;                  // completions, as text
  std::vector<int32_t> prompt_tokens;  // completions, as token ids
  bool prompt_is_tokens = false;
  std::vector<ChatMessage> messages;  // chat
  std::optional<int64_t> max_tokens;  // max_tokens or max_completion_tokens
  int n = 1;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  SamplingParams sampling;     // temperature defaults to 1, as OpenAI's
  bool seeded = false;
  std::vector<std::string> stop;
  bool ignore_eos = false;  // vLLM's extension: run to max_tokens (benchmarks)
  // Completions' logprobs (k), or chat's logprobs: true with top_logprobs (k): each generated
  // token's log-probability and the k most likely tokens'; -1: none.
  int top_logprobs = -1;
};

// Throws ApiError (400) naming the field: malformed JSON, wrong types, values out of range,
// fields this server does not implement (rather than ignoring them), unknown fields.
ApiRequest ParseApiRequest(std::string_view body, bool chat);

// What the response is about.
struct ResponseMeta {
  std::string id;
  int64_t created = 0;  // Unix seconds
  std::string model;
  bool chat = false;
  bool logprobs = false;  // the choices carry log-probabilities
};
// One generated token's log-probability, and the most likely tokens' (best first), as text.
struct TokenLogprob {
  std::string token;
  float logprob = 0;
  std::vector<std::pair<std::string, float>> top;
};
struct ChoiceOutput {
  std::string text;
  FinishReason finish = FinishReason::kLength;
  std::vector<TokenLogprob> logprobs;
};
struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

// "stop" for a stop token or string, "length" for max_tokens.
const char* OpenAiFinishReason(FinishReason finish);

std::string ResponseBody(const ResponseMeta& meta, const std::vector<ChoiceOutput>& choices,
                         const Usage& usage);
// One Server-Sent Event ("data: {...}\n\n") of a stream: a text delta of choice `index`, or its
// finish (with `finish` set and `text` empty). Chat streams open each choice with a delta that
// carries the role: `role_only`.
std::string StreamEvent(const ResponseMeta& meta, int index, std::string_view text,
                        std::optional<FinishReason> finish, bool role_only = false,
                        std::span<const TokenLogprob> logprobs = {}, size_t text_offset = 0);
// The stream's usage event (stream_options.include_usage): no choices.
std::string StreamUsageEvent(const ResponseMeta& meta, const Usage& usage);
// An error inside a stream that had already started.
std::string StreamErrorEvent(const ApiError& error);
inline constexpr std::string_view kStreamDone = "data: [DONE]\n\n";

// GET /v1/models.
std::string ModelsBody(const std::string& model, int64_t created, int64_t context);

}  // namespace gemmapod
