// The OpenAI wire format: request bodies read into ApiRequest with every field, each kind of bad
// value answered by an ApiError naming the field, and 20000 randomly corrupted bodies that never
// escape as anything but ApiError (no crash, no other exception, no hang); response bodies and
// stream events in OpenAI's shapes.
#include "serving/server/openai_api.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

namespace gemmapod {
namespace {

using nlohmann::json;

// The field a body's error names, or "ok" when it parses.
std::string ParamOf(const std::string& body, bool chat) {
  try {
    ParseApiRequest(body, chat);
    return "ok";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_FALSE(std::string(e.what()).empty());
    return e.param.empty() ? "-" : e.param;
  }
}

TEST(OpenAiApi, ReadsEveryField) {
  const ApiRequest r = ParseApiRequest(R"({"model":"m","prompt":"hi","max_tokens":7,"n":3,
      "stream":true,"stream_options":{"include_usage":true},"temperature":0.5,"top_p":0.9,
      "top_k":40,"min_p":0.05,"seed":12345678901,"stop":["a","b"],"presence_penalty":1.5,
      "frequency_penalty":-0.5,"repetition_penalty":1.1,"ignore_eos":true,"logprobs":3,
      "user":"u"})",
                                       false);
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(r.prompt, "hi");
  EXPECT_EQ(r.max_tokens, 7);
  EXPECT_EQ(r.n, 3);
  EXPECT_TRUE(r.stream && r.include_usage && r.ignore_eos && r.seeded);
  EXPECT_FLOAT_EQ(r.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.sampling.top_p, 0.9f);
  EXPECT_EQ(r.sampling.top_k, 40);
  EXPECT_FLOAT_EQ(r.sampling.min_p, 0.05f);
  EXPECT_EQ(r.sampling.seed, 12345678901u);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"a", "b"}));
  EXPECT_FLOAT_EQ(r.sampling.presence_penalty, 1.5f);
  EXPECT_FLOAT_EQ(r.sampling.frequency_penalty, -0.5f);
  EXPECT_FLOAT_EQ(r.sampling.repetition_penalty, 1.1f);
  EXPECT_EQ(r.top_logprobs, 3);

  const ApiRequest c = ParseApiRequest(R"({"messages":[{"role":"developer","content":"sys"},
      {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
      "logprobs":true,"top_logprobs":2,"max_completion_tokens":5})",
                                       true);
  ASSERT_EQ(c.messages.size(), 2u);
  EXPECT_EQ(c.messages[0].role, "system");
  EXPECT_EQ(c.messages[1].content, "ab");
  EXPECT_EQ(c.top_logprobs, 2);
  EXPECT_EQ(c.max_tokens, 5);
  // Defaults: OpenAI's temperature of 1, one choice, no log-probabilities.
  const ApiRequest d = ParseApiRequest(R"({"prompt":[2,3,4]})", false);
  EXPECT_TRUE(d.prompt_is_tokens);
  EXPECT_EQ(d.prompt_tokens, (std::vector<int32_t>{2, 3, 4}));
  EXPECT_FLOAT_EQ(d.sampling.temperature, 1.0f);
  EXPECT_EQ(d.n, 1);
  EXPECT_EQ(d.top_logprobs, -1);
}

TEST(OpenAiApi, BadValuesNameTheirField) {
  EXPECT_EQ(ParamOf("{", false), "-");
  EXPECT_EQ(ParamOf("null", false), "-");
  EXPECT_EQ(ParamOf(R"({"prompt":"x","n":0})", false), "n");
  EXPECT_EQ(ParamOf(R"({"prompt":"x","n":1.5})", false), "n");
  EXPECT_EQ(ParamOf(R"({"prompt":"x","max_tokens":-1})", false), "max_tokens");
  EXPECT_EQ(ParamOf(R"({"prompt":"x","max_tokens":18446744073709551615})", false), "max_tokens");
  EXPECT_EQ(ParamOf(R"({"prompt":"x","temperature":"hot"})", false), "temperature");
  EXPECT_EQ(ParamOf(R"({"prompt":"x","temperature":2.5})", false), "temperature");
  EXPECT_EQ(ParamOf(R"({"prompt":"x","top_p":1.5})", false), "top_p");
  EXPECT_EQ(ParamOf(R"({"prompt":"x","top_k":-2})", false), "top_k");
  EXPECT_EQ(ParamOf(R"({"prompt":"x","min_p":1})", false), "min_p");
  EXPECT_EQ(ParamOf(R"({"prompt":"x","seed":1.5})", false), "seed");
  EXPECT_EQ(ParamOf(R"({"prompt":"x","stop":""})", false), "stop");
  EXPECT_EQ(ParamOf(R"({"prompt":"x","stop":["a","b","c","d","e","f","g","h","i"]})", false),
            "stop");
  EXPECT_EQ(ParamOf(R"({"prompt":"x","stream_options":{"x":1}})", false), "stream_options.x");
  EXPECT_EQ(ParamOf(R"({"prompt":"x","logit_bias":{"1":2}})", false), "logit_bias");
  EXPECT_EQ(ParamOf(R"({"prompt":"x","logit_bias":{}})", false), "ok");
  EXPECT_EQ(ParamOf(R"({"prompt":"x","tools":[{"type":"function"}]})", false), "tools");
  EXPECT_EQ(ParamOf(R"({"prompt":"x","top_logprobs":2})", false), "top_logprobs");
  EXPECT_EQ(ParamOf(R"({"prompt":[1,-1]})", false), "prompt[1]");
  EXPECT_EQ(ParamOf(R"({"prompt":["a","b"]})", false), "prompt");
  EXPECT_EQ(ParamOf(R"({"prompt":"x","messages":[]})", false), "messages");
  EXPECT_EQ(ParamOf(R"({"messages":[{"role":"user","content":"x"}],"top_logprobs":3})", true),
            "top_logprobs");
  EXPECT_EQ(ParamOf(R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})", true),
            "messages[0].content[0]");
  EXPECT_EQ(ParamOf(R"({"messages":[{"role":"user","content":"x","extra":1}]})", true),
            "messages[0].extra");
  EXPECT_EQ(ParamOf("{\"prompt\":\"\xc3\x28\"}", false), "-");  // invalid UTF-8
}

// Random corruptions of valid bodies (bytes flipped, inserted, deleted; values swapped for other
// JSON values) only ever come back as a parse or an ApiError.
TEST(OpenAiApi, CorruptedBodiesOnlyEverGiveApiErrors) {
  const std::vector<std::string> seeds = {
      R"({"model":"m","prompt":"hello","max_tokens":7,"n":2,"stream":true,"temperature":0.5,"stop":["x"],"logprobs":2})",
      R"({"messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"a"}]}],"top_p":0.9,"seed":3,"logprobs":true,"top_logprobs":1})",
      R"({"prompt":[2,3,4],"stream_options":{"include_usage":true},"presence_penalty":1})"};
  const std::vector<std::string> values = {"null", "true", "-1",         "1e309",
                                           "\"\"", "[]",   "{}",         "18446744073709551616",
                                           "0.0",  "[[[[", "\"\\ud800\""};
  std::mt19937 rng(7);
  int parsed = 0, refused = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string body = seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !body.empty(); ++e) {
      const size_t at = rng() % body.size();
      switch (rng() % 4) {
        case 0:
          body[at] = static_cast<char>(rng() % 256);
          break;
        case 1:
          body.insert(at, 1, static_cast<char>(rng() % 256));
          break;
        case 2:
          body.erase(at, 1 + rng() % 8);
          break;
        default: {
          // Replace the value after a colon with another JSON value.
          const size_t colon = body.find(':', at);
          if (colon == std::string::npos) break;
          const size_t end = body.find_first_of(",}", colon);
          body.replace(colon + 1, (end == std::string::npos ? body.size() : end) - colon - 1,
                       values[rng() % values.size()]);
        }
      }
    }
    const bool chat = body.find("messages") != std::string::npos;
    try {
      ParseApiRequest(body, chat);
      ++parsed;
    } catch (const ApiError& e) {
      ++refused;
      ASSERT_GE(e.status, 400) << body;
      // The error body is always valid JSON, whatever bytes the message quotes.
      ASSERT_NO_THROW(json::parse(ErrorBody(e))) << body;
    } catch (const std::exception& e) {
      FAIL() << "not an ApiError: " << e.what() << " for body: " << body;
    }
  }
  EXPECT_GT(parsed, 100);
  EXPECT_GT(refused, 10000);
}

TEST(OpenAiApi, ResponsesHaveOpenAisShape) {
  const ResponseMeta meta{"cmpl-1", 1700000000, "m", false, true};
  const json body = json::parse(ResponseBody(
      meta, {{"hi", FinishReason::kStopToken, {{" hi", -0.5f, {{" hi", -0.5f}, {"x", -2.0f}}}}}},
      {4, 1}));
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["choices"][0]["text"], "hi");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(body["choices"][0]["logprobs"]["tokens"][0], " hi");
  EXPECT_FLOAT_EQ(body["choices"][0]["logprobs"]["top_logprobs"][0]["x"].get<float>(), -2.0f);
  EXPECT_EQ(body["usage"]["total_tokens"], 5);
  const std::string event =
      StreamEvent({"c", 1, "m", true, false}, 0, "yo", std::nullopt, false, {}, 0);
  ASSERT_EQ(event.rfind("data: ", 0), 0u);
  const json chunk = json::parse(event.substr(6));
  EXPECT_EQ(chunk["object"], "chat.completion.chunk");
  EXPECT_EQ(chunk["choices"][0]["delta"]["content"], "yo");
  EXPECT_EQ(OpenAiFinishReason(FinishReason::kLength), std::string("length"));
}

}  // namespace
}  // namespace gemmapod
