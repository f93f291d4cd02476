#include "serving/server/openai_api.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "runtime/error.h"
#include "serving/shard_sampler.h"

namespace gemmapod {
namespace {

using nlohmann::json;

// Values may hold the client's bytes: invalid UTF-8 is replaced, never a reason to fail.
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

ApiError Bad(const std::string& param, const std::string& message) {
  return ApiError(400, message, param);
}

std::string TypeName(const json& v) { return v.type_name(); }

double Number(const json& v, const std::string& field, double lo, double hi, bool lo_open) {
  if (!v.is_number()) throw Bad(field, field + " must be a number, got " + TypeName(v));
  const double x = v.get<double>();
  const bool above = lo_open ? x > lo : x >= lo;
  if (!(above && x <= hi)) {
    throw Bad(field,
              StrCat(field, " must be in ", lo_open ? "(" : "[", lo, ", ", hi, "], got ", Dump(v)));
  }
  return x;
}

int64_t Integer(const json& v, const std::string& field, int64_t lo, int64_t hi) {
  if (!v.is_number_integer()) throw Bad(field, field + " must be an integer, got " + Dump(v));
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi)) {
    throw Bad(field, StrCat(field, " must be in [", lo, ", ", hi, "], got ", Dump(v)));
  }
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi) {
    throw Bad(field, StrCat(field, " must be in [", lo, ", ", hi, "], got ", x));
  }
  return x;
}

bool Boolean(const json& v, const std::string& field) {
  if (!v.is_boolean()) throw Bad(field, field + " must be true or false, got " + Dump(v));
  return v.get<bool>();
}

const std::string& String(const json& v, const std::string& field) {
  if (!v.is_string()) throw Bad(field, field + " must be a string, got " + TypeName(v));
  return v.get_ref<const std::string&>();
}

// Message content: a string, or OpenAI's array of parts of which only text parts are accepted.
std::string Content(const json& v, const std::string& field) {
  if (v.is_string()) return v.get<std::string>();
  if (!v.is_array()) throw Bad(field, field + " must be a string or an array of text parts");
  std::string text;
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string part = StrCat(field, "[", i, "]");
    const json& p = v[i];
    if (!p.is_object() || !p.contains("type") || !p["type"].is_string()) {
      throw Bad(part, part + " must be an object with a type");
    }
    if (p["type"] != "text") {
      throw Bad(part, part + ": only text parts are supported, got type " + Dump(p["type"]));
    }
    if (!p.contains("text")) throw Bad(part, part + " has no text");
    text += String(p["text"], part + ".text");
  }
  return text;
}

// Fields a client may send: those this server reads, and those it refuses unless they ask for
// nothing (below). Which of prompt/messages belongs to which endpoint is checked apart.
const std::set<std::string> kKnownFields = {"model",
                                            "prompt",
                                            "messages",
                                            "max_tokens",
                                            "max_completion_tokens",
                                            "n",
                                            "stream",
                                            "stream_options",
                                            "temperature",
                                            "top_p",
                                            "top_k",
                                            "min_p",
                                            "seed",
                                            "stop",
                                            "presence_penalty",
                                            "frequency_penalty",
                                            "repetition_penalty",
                                            "ignore_eos",
                                            "user",
                                            "logprobs",
                                            "top_logprobs",
                                            "logit_bias",
                                            "echo",
                                            "best_of",
                                            "suffix",
                                            "tools",
                                            "tool_choice",
                                            "response_format",
                                            "functions",
                                            "function_call",
                                            "parallel_tool_calls"};

// Fields whose meaning this server does not implement: refused unless they ask for nothing.
bool AsksForNothing(const std::string& key, const json& v) {
  if (v.is_null()) return true;
  if (key == "echo" && v.is_boolean()) return !v.get<bool>();
  if (key == "best_of" && v.is_number_integer()) return v.get<int64_t>() == 1;
  if (key == "logit_bias" && v.is_object()) return v.empty();
  if ((key == "tools" || key == "functions") && v.is_array()) return v.empty();
  if (key == "tool_choice" && v.is_string()) return v.get<std::string>() == "none";
  if (key == "response_format" && v.is_object()) return v.value("type", "") == "text";
  if (key == "suffix" && v.is_string()) return v.get<std::string>().empty();
  return false;
}

}  // namespace

std::string ErrorBody(const ApiError& e) {
  json body = {{"error",
                {{"message", e.what()},
                 {"type", e.type},
                 {"param", e.param.empty() ? json(nullptr) : json(e.param)},
                 {"code", e.code.empty() ? json(nullptr) : json(e.code)}}}};
  return Dump(body);  // a message may quote the client's bytes (a JSON syntax error does)
}

ApiRequest ParseApiRequest(std::string_view body, bool chat) {
  json j;
  try {
    j = json::parse(body.begin(), body.end());
  } catch (const json::exception& e) {
    // nlohmann names the byte; its message also covers invalid UTF-8 inside strings and numbers
    // too large for a double (1e309, an out_of_range error rather than a parse_error).
    throw Bad("", StrCat("the body is not valid JSON: ", e.what()));
  }
  if (!j.is_object()) throw Bad("", "the body must be a JSON object, got " + TypeName(j));
  ApiRequest r;
  r.chat = chat;
  r.sampling.temperature = 1.0f;
  static const std::set<std::string> unsupported = {
      "logit_bias",  "echo",      "best_of",       "suffix",         "tools",
      "tool_choice", "functions", "function_call", "response_format"};
  for (const auto& [key, value] : j.items()) {
    if (!kKnownFields.contains(key) || (chat && key == "prompt") || (!chat && key == "messages")) {
      throw Bad(key, "unknown field '" + key + "' for " +
                         (chat ? "/v1/chat/completions" : "/v1/completions"));
    }
    if (unsupported.contains(key) && !AsksForNothing(key, value)) {
      throw Bad(key, "'" + key + "' is not supported by this server");
    }
  }
  auto has = [&](const char* key) { return j.contains(key) && !j[key].is_null(); };

  if (has("model")) r.model = String(j["model"], "model");
  if (chat) {
    if (!has("messages")) throw Bad("messages", "messages is required");
    const json& m = j["messages"];
    if (!m.is_array() || m.empty()) throw Bad("messages", "messages must be a non-empty array");
    for (size_t i = 0; i < m.size(); ++i) {
      const std::string at = StrCat("messages[", i, "]");
      if (!m[i].is_object()) throw Bad(at, at + " must be an object");
      if (!m[i].contains("role")) throw Bad(at + ".role", at + " has no role");
      std::string role = String(m[i]["role"], at + ".role");
      if (role == "developer") role = "system";
      if (role != "system" && role != "user" && role != "assistant" && role != "model") {
        throw Bad(at + ".role",
                  at + ".role must be system, user, assistant or model, got '" + role + "'");
      }
      if (!m[i].contains("content")) throw Bad(at + ".content", at + " has no content");
      r.messages.push_back({role, Content(m[i]["content"], at + ".content")});
      for (const auto& [key, value] : m[i].items()) {
        if (key != "role" && key != "content" && key != "name") {
          throw Bad(at + "." + key, "unknown field '" + key + "' in " + at);
        }
      }
    }
  } else {
    if (!has("prompt")) throw Bad("prompt", "prompt is required");
    const json& p = j["prompt"];
    if (p.is_string()) {
      r.prompt = p.get<std::string>();
    } else if (p.is_array() && p.size() == 1 && p[0].is_string()) {
      r.prompt = p[0].get<std::string>();
    } else if (p.is_array() && !p.empty() && p[0].is_number()) {
      r.prompt_is_tokens = true;
      for (size_t i = 0; i < p.size(); ++i) {
        r.prompt_tokens.push_back(static_cast<int32_t>(
            Integer(p[i], StrCat("prompt[", i, "]"), 0, std::numeric_limits<int32_t>::max())));
      }
    } else {
      throw Bad("prompt",
                "prompt must be a string or an array of token ids (one prompt per request)");
    }
  }
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (has(key)) r.max_tokens = Integer(j[key], key, 1, std::numeric_limits<int32_t>::max());
  }
  if (has("n")) r.n = static_cast<int>(Integer(j["n"], "n", 1, kMaxChoices));
  if (has("stream")) r.stream = Boolean(j["stream"], "stream");
  if (has("stream_options")) {
    const json& o = j["stream_options"];
    if (!o.is_object()) throw Bad("stream_options", "stream_options must be an object");
    for (const auto& [key, value] : o.items()) {
      if (key != "include_usage") {
        throw Bad("stream_options." + key, "unknown field '" + key + "' in stream_options");
      }
      r.include_usage = Boolean(value, "stream_options.include_usage");
    }
  }
  SamplingParams& s = r.sampling;
  if (has("temperature")) {
    s.temperature = static_cast<float>(Number(j["temperature"], "temperature", 0, 2, false));
  }
  if (has("top_p")) s.top_p = static_cast<float>(Number(j["top_p"], "top_p", 0, 1, true));
  if (has("top_k")) {
    const int64_t k = Integer(j["top_k"], "top_k", -1, std::numeric_limits<int32_t>::max());
    s.top_k = k < 0 ? 0 : static_cast<int>(k);  // -1: off, as vLLM
  }
  if (has("min_p")) {
    s.min_p = static_cast<float>(Number(j["min_p"], "min_p", 0, 1, false));
    if (s.min_p >= 1) throw Bad("min_p", "min_p must be below 1");
  }
  if (has("repetition_penalty")) {
    s.repetition_penalty =
        static_cast<float>(Number(j["repetition_penalty"], "repetition_penalty", 0, 1e6, true));
  }
  if (has("presence_penalty")) {
    s.presence_penalty =
        static_cast<float>(Number(j["presence_penalty"], "presence_penalty", -2, 2, false));
  }
  if (has("frequency_penalty")) {
    s.frequency_penalty =
        static_cast<float>(Number(j["frequency_penalty"], "frequency_penalty", -2, 2, false));
  }
  if (has("seed")) {
    const json& v = j["seed"];
    if (!v.is_number_integer()) throw Bad("seed", "seed must be an integer, got " + Dump(v));
    s.seed = v.is_number_unsigned() ? v.get<uint64_t>() : static_cast<uint64_t>(v.get<int64_t>());
    r.seeded = true;
  }
  if (has("stop")) {
    const json& v = j["stop"];
    if (v.is_string()) {
      r.stop.push_back(v.get<std::string>());
    } else if (v.is_array()) {
      if (v.size() > kMaxStopStrings) {
        throw Bad("stop", StrCat("stop holds ", v.size(), " strings; at most ", kMaxStopStrings));
      }
      for (size_t i = 0; i < v.size(); ++i) {
        r.stop.push_back(String(v[i], StrCat("stop[", i, "]")));
      }
    } else {
      throw Bad("stop", "stop must be a string or an array of strings");
    }
    for (const std::string& t : r.stop) {
      if (t.empty()) throw Bad("stop", "stop strings must not be empty");
    }
  }
  if (has("user")) String(j["user"], "user");
  if (has("ignore_eos")) r.ignore_eos = Boolean(j["ignore_eos"], "ignore_eos");
  if (chat) {
    const bool wanted = has("logprobs") && Boolean(j["logprobs"], "logprobs");
    if (has("top_logprobs")) {
      if (!wanted) throw Bad("top_logprobs", "top_logprobs needs logprobs: true");
      r.top_logprobs =
          static_cast<int>(Integer(j["top_logprobs"], "top_logprobs", 0, kMaxTopLogprobs));
    } else if (wanted) {
      r.top_logprobs = 0;
    }
  } else {
    if (has("top_logprobs")) {
      throw Bad("top_logprobs", "completions take logprobs: <count>; top_logprobs is chat's");
    }
    if (has("logprobs")) {
      r.top_logprobs = static_cast<int>(Integer(j["logprobs"], "logprobs", 0, kMaxTopLogprobs));
    }
  }
  return r;
}

const char* OpenAiFinishReason(FinishReason finish) {
  return finish == FinishReason::kLength ? "length" : "stop";
}

namespace {

json Header(const ResponseMeta& meta, bool chunk) {
  return {{"id", meta.id},
          {"object",
           meta.chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion"},
          {"created", meta.created},
          {"model", meta.model}};
}

json UsageJson(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

json Bytes(const std::string& text) {
  json b = json::array();
  for (unsigned char c : text) b.push_back(static_cast<int>(c));
  return b;
}

// A choice's "logprobs" object: OpenAI's legacy form for completions, the content list for chat.
json LogprobsJson(bool chat, std::span<const TokenLogprob> tokens, size_t text_offset) {
  if (chat) {
    json content = json::array();
    for (const TokenLogprob& t : tokens) {
      json top = json::array();
      for (const auto& [token, lp] : t.top) {
        top.push_back({{"token", token}, {"logprob", lp}, {"bytes", Bytes(token)}});
      }
      content.push_back({{"token", t.token},
                         {"logprob", t.logprob},
                         {"bytes", Bytes(t.token)},
                         {"top_logprobs", std::move(top)}});
    }
    return {{"content", std::move(content)}};
  }
  json texts = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
  for (const TokenLogprob& t : tokens) {
    texts.push_back(t.token);
    lps.push_back(t.logprob);
    json top = json::object();
    for (const auto& [token, lp] : t.top) {
      if (!top.contains(token)) top[token] = lp;  // two ids spelling the same text: the likelier
    }
    tops.push_back(std::move(top));
    offsets.push_back(text_offset);
    text_offset += t.token.size();
  }
  return {{"tokens", std::move(texts)},
          {"token_logprobs", std::move(lps)},
          {"top_logprobs", std::move(tops)},
          {"text_offset", std::move(offsets)}};
}

std::string Event(const json& j) { return "data: " + Dump(j) + "\n\n"; }

}  // namespace

std::string ResponseBody(const ResponseMeta& meta, const std::vector<ChoiceOutput>& choices,
                         const Usage& usage) {
  json j = Header(meta, false);
  json list = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    json c = {{"index", i},
              {"logprobs",
               meta.logprobs ? LogprobsJson(meta.chat, choices[i].logprobs, 0) : json(nullptr)},
              {"finish_reason", OpenAiFinishReason(choices[i].finish)}};
    if (meta.chat) {
      c["message"] = {{"role", "assistant"}, {"content", choices[i].text}};
    } else {
      c["text"] = choices[i].text;
    }
    list.push_back(std::move(c));
  }
  j["choices"] = std::move(list);
  j["usage"] = UsageJson(usage);
  return Dump(j);
}

std::string StreamEvent(const ResponseMeta& meta, int index, std::string_view text,
                        std::optional<FinishReason> finish, bool role_only,
                        std::span<const TokenLogprob> logprobs, size_t text_offset) {
  json j = Header(meta, true);
  json c = {{"index", index},
            {"logprobs", meta.logprobs && !logprobs.empty()
                             ? LogprobsJson(meta.chat, logprobs, text_offset)
                             : json(nullptr)},
            {"finish_reason", finish ? json(OpenAiFinishReason(*finish)) : json(nullptr)}};
  if (meta.chat) {
    json delta = json::object();
    if (role_only) {
      delta["role"] = "assistant";
      delta["content"] = "";
    } else if (!finish) {
      delta["content"] = std::string(text);
    }
    c["delta"] = std::move(delta);
  } else {
    c["text"] = std::string(text);
  }
  j["choices"] = json::array({std::move(c)});
  return Event(j);
}

std::string StreamUsageEvent(const ResponseMeta& meta, const Usage& usage) {
  json j = Header(meta, true);
  j["choices"] = json::array();
  j["usage"] = UsageJson(usage);
  return Event(j);
}

std::string StreamErrorEvent(const ApiError& error) { return "data: " + ErrorBody(error) + "\n\n"; }

std::string ModelsBody(const std::string& model, int64_t created, int64_t context) {
  json j = {{"object", "list"},
            {"data", json::array({{{"id", model},
                                   {"object", "model"},
                                   {"created", created},
                                   {"owned_by", "gemmapod"},
                                   {"max_model_len", context}}})}};
  return Dump(j);
}

}  // namespace gemmapod
