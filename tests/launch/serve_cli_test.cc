// `gemmapod serve` end to end with a real HTTP client, as users run it: greedy answers equal
// `gemmapod generate`; streaming equals non-streaming; 32 concurrent clients each get what they
// get alone; a barrage of malformed requests between good ones gets 4xx answers naming the field
// while the good ones complete and every cache slot is free at the end; a client that goes away
// is cancelled; SIGTERM finishes the requests in flight and exits 0; the API key; and the server
// sharded over two ranks (tp = 2, pp = 2) answers with one rank's tokens.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "runtime/checkpoint/npy.h"
#include "tests/launch/http_client.h"
#include "tests/launch/run_gemmapod.h"
#include "tests/launch/serve_process.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The concatenated deltas of a stream, its finish reason and its usage (if sent); checks that it
// ends with [DONE].
struct Streamed {
  std::string text;
  std::string finish;
  json usage;
  bool done = false;
};
Streamed ParseStream(const std::string& body) {
  Streamed s;
  std::istringstream in(body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("data: ", 0) != 0) continue;
    const std::string data = line.substr(6);
    if (data == "[DONE]") {
      s.done = true;
      continue;
    }
    const json j = json::parse(data);
    if (j.contains("usage")) s.usage = j["usage"];
    for (const json& c : j.at("choices")) {
      if (c.contains("delta") && c["delta"].contains("content")) {
        s.text += c["delta"]["content"].get<std::string>();
      }
      if (c.contains("text")) s.text += c["text"].get<std::string>();
      if (!c["finish_reason"].is_null()) s.finish = c["finish_reason"];
    }
  }
  return s;
}

std::string Generated(const CliResult& r) {
  // generate prints the text and a newline (statistics go to stderr, not asked for here).
  return r.output.size() > 0 ? r.output.substr(0, r.output.size() - 1) : "";
}

// A greedy completion of `prompt` from the server at `port`, checked against `gemmapod generate`
// on `model` with the same prompt and length; the reply's body (empty when it failed).
std::string ServedAsGenerate(int port, const std::string& model, const std::string& prompt,
                             int max_tokens, const std::string& extra_fields = "") {
  const Reply r =
      Post(port, "/v1/completions",
           json{{"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}}.dump().insert(
               1, extra_fields));
  EXPECT_EQ(r.status, 200) << r.body;
  if (r.status != 200) return "";
  const CliResult g = Gemmapod("generate --model " + model + " --prompt '" + prompt +
                               "' --max-tokens " + std::to_string(max_tokens));
  EXPECT_EQ(g.exit_code, 0) << g.output;
  EXPECT_EQ(TextOf(r.body), Generated(g)) << prompt;
  return r.body;
}

class ServeCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("serve-cli-" + std::to_string(getpid()));
    fs::create_directories(dir_);
    model_ = (dir_ / "gemma3.h5").string();
    const CliResult c = Gemmapod("convert tests/fixtures/models/gemma3 " + model_);
    ASSERT_EQ(c.exit_code, 0) << c.output;
    // A long context, so that a request can run long enough to be interrupted.
    std::ifstream in("configs/models/tiny-gemma3.yaml");
    std::stringstream text;
    text << in.rdbuf();
    std::string config = text.str();
    config.replace(config.find("max_position_embeddings: 256"), 28,
                   "max_position_embeddings: 32768");
    std::ofstream(dir_ / "long.yaml") << config;
    long_model_ = (dir_ / "long.h5").string();
    const CliResult r =
        Gemmapod("random-checkpoint --config " + (dir_ / "long.yaml").string() + " --out " +
                 long_model_ + " --tokenizer tests/fixtures/tokenizer/tiny_gemma.model");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    server_ = new ServeProcess();
    ASSERT_TRUE(server_->Start("--model " + model_ + " --parallel 8 --max-body-kib 64"))
        << server_->log();
  }
  static void TearDownTestSuite() {
    delete server_;
    fs::remove_all(dir_);
  }
  static int port() { return server_->port(); }

  static inline fs::path dir_;
  static inline std::string model_, long_model_;
  static inline ServeProcess* server_ = nullptr;
};

TEST_F(ServeCli, GreedyAnswersEqualGenerate) {
  const std::string body =
      ServedAsGenerate(port(), model_, "The license", 12, R"("model":"gemma3",)");
  ASSERT_FALSE(body.empty());
  const json j = json::parse(body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["model"], "gemma3");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 12);
  EXPECT_EQ(j["usage"]["prompt_tokens"], 4);  // <bos> and three pieces

  // Chat: the system text folded into the first user turn, as generate --system does.
  const Reply chat = Post(port(), "/v1/chat/completions", R"({"messages":[
      {"role":"system","content":"Answer briefly."},{"role":"user","content":"Hi there"}],
      "max_tokens":9,"temperature":0})");
  ASSERT_EQ(chat.status, 200) << chat.body;
  const CliResult gc =
      Gemmapod("generate --model " + model_ +
               " --chat --system 'Answer briefly.' --prompt 'Hi there' --max-tokens 9");
  ASSERT_EQ(gc.exit_code, 0) << gc.output;
  EXPECT_EQ(TextOf(chat.body), Generated(gc));
  EXPECT_EQ(json::parse(chat.body)["choices"][0]["message"]["role"], "assistant");
}

TEST_F(ServeCli, StreamingEqualsNonStreaming) {
  for (const bool chat : {false, true}) {
    SCOPED_TRACE(chat ? "chat" : "completion");
    const std::string path = chat ? "/v1/chat/completions" : "/v1/completions";
    const std::string input =
        chat ? R"("messages":[{"role":"user","content":"Tell me"}])" : R"("prompt":"Once upon")";
    const std::string common = input + R"(,"max_tokens":30,"temperature":0.8,"seed":7,"n":2)";
    const Reply whole = Post(port(), path, "{" + common + "}");
    ASSERT_EQ(whole.status, 200) << whole.body;
    const Reply stream = Post(
        port(), path, "{" + common + R"(,"stream":true,"stream_options":{"include_usage":true}})");
    ASSERT_EQ(stream.status, 200) << stream.body;
    // Choice 0's deltas; choice 1 is checked through the usage sum.
    std::string zero;
    std::istringstream in(stream.body);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("data: {", 0) != 0) continue;
      const json e = json::parse(line.substr(6));
      for (const json& c : e["choices"]) {
        if (c["index"] != 0) continue;
        if (c.contains("text")) zero += c["text"].get<std::string>();
        if (c.contains("delta") && c["delta"].contains("content")) zero += c["delta"]["content"];
      }
    }
    EXPECT_EQ(zero, TextOf(whole.body));
    const Streamed s = ParseStream(stream.body);
    EXPECT_TRUE(s.done);
    EXPECT_EQ(s.usage, json::parse(whole.body)["usage"]);
    // n = 2: two choices (seeded seed and seed + 1).
    ASSERT_EQ(json::parse(whole.body)["choices"].size(), 2u);
  }
}

TEST_F(ServeCli, ThirtyTwoConcurrentClientsEachGetWhatTheyGetAlone) {
  auto body = [](int i) {
    return json{{"prompt", "Story number " + std::to_string(i) + " begins"},
                {"max_tokens", 10 + i % 7},
                {"temperature", i % 2 == 0 ? 0.0 : 0.7},
                {"seed", i}}
        .dump();
  };
  std::vector<std::string> alone(32), together(32);
  for (int i = 0; i < 32; ++i) {
    const Reply r = Post(port(), "/v1/completions", body(i));
    ASSERT_EQ(r.status, 200) << r.body;
    alone[static_cast<size_t>(i)] = TextOf(r.body);
  }
  std::vector<std::thread> clients;
  std::vector<int> status(32);
  for (int i = 0; i < 32; ++i) {
    clients.emplace_back([&, i] {
      const Reply r = Post(port(), "/v1/completions", body(i));
      status[static_cast<size_t>(i)] = r.status;
      if (r.status == 200) together[static_cast<size_t>(i)] = TextOf(r.body);
    });
  }
  for (auto& c : clients) c.join();
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(status[static_cast<size_t>(i)], 200) << "client " << i;
    EXPECT_EQ(together[static_cast<size_t>(i)], alone[static_cast<size_t>(i)]) << "client " << i;
  }
}

// Metric `name`'s value in a /metrics text.
double MetricValue(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  }
  return -1;
}

// Metric `name` of the server at `port` once it equals `want`, or its value after 2 s (a finished
// request's answer can reach its client just before the engine's thread frees its blocks).
double SettledMetric(int port, const std::string& name, double want) {
  double v = -1;
  for (int i = 0; i < 200; ++i) {
    v = MetricValue(Get(port, "/metrics").body, name);
    if (v == want) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return v;
}

TEST_F(ServeCli, MalformedRequestsGetFourHundredsNamingTheFieldWhileGoodOnesComplete) {
  struct Bad {
    std::string path, body;
    int status;
    std::string param;  // "" where the error names none
  };
  const std::string huge(80 * 1024, 'a');
  const std::vector<Bad> bad = {
      {"/v1/completions", "{not json", 400, ""},
      {"/v1/completions", "[1,2]", 400, ""},
      {"/v1/completions", R"({"prompt":"x","temperature":1e999})", 400, ""},
      {"/v1/completions", R"({"prompt":"x","max_tokens":"ten"})", 400, "max_tokens"},
      {"/v1/completions", R"({"prompt":"x","max_tokens":0})", 400, "max_tokens"},
      {"/v1/completions", R"({"prompt":"x","max_tokens":100000})", 400, "max_tokens"},
      {"/v1/completions", R"({"prompt":"x","n":0})", 400, "n"},
      {"/v1/completions", R"({"prompt":"x","n":17})", 400, "n"},
      {"/v1/completions", R"({"prompt":"x","temperature":-1})", 400, "temperature"},
      {"/v1/completions", R"({"prompt":"x","top_p":0})", 400, "top_p"},
      {"/v1/completions", R"({"prompt":"x","stop":[1]})", 400, "stop[0]"},
      {"/v1/completions", R"({"prompt":"x","logprobs":50})", 400, "logprobs"},
      {"/v1/completions", R"({"prompt":"x","echo":true})", 400, "echo"},
      {"/v1/completions", R"({"prompt":"x","bogus":1})", 400, "bogus"},
      {"/v1/completions", R"({"prompt":"x","model":"gpt-4"})", 404, "model"},
      {"/v1/completions", R"({"prompt":[2,99999]})", 400, "prompt"},
      {"/v1/completions", R"({"max_tokens":3})", 400, "prompt"},
      {"/v1/completions", "{\"prompt\":\"\xff\xfe\"}", 400, ""},
      {"/v1/completions",
       "{\"prompt\":\"" + std::string(300, 'z') + " " + std::string(300, 'y') + "\"}", 400,
       "prompt"},
      {"/v1/completions", "{\"prompt\":\"" + huge + "\"}", 413, ""},
      {"/v1/chat/completions", R"({"messages":[]})", 400, "messages"},
      {"/v1/chat/completions", R"({"messages":[{"role":"robot","content":"x"}]})", 400,
       "messages[0].role"},
      {"/v1/chat/completions",
       R"({"messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]})", 400,
       "messages"},
      {"/v1/chat/completions", R"({"messages":[{"role":"user"}]})", 400, "messages[0].content"},
      {"/v1/chat/completions", R"({"prompt":"x"})", 400, "prompt"},
      {"/v1/nothing", "{}", 404, ""},
  };
  const std::string good = R"({"prompt":"The license","max_tokens":12,"temperature":0})";
  const std::string want = TextOf(Post(port(), "/v1/completions", good).body);
  std::vector<std::thread> threads;
  std::vector<Reply> bad_replies(bad.size());
  std::vector<Reply> good_replies(bad.size());
  for (size_t i = 0; i < bad.size(); ++i) {
    threads.emplace_back([&, i] { bad_replies[i] = Post(port(), bad[i].path, bad[i].body); });
    threads.emplace_back([&, i] { good_replies[i] = Post(port(), "/v1/completions", good); });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < bad.size(); ++i) {
    SCOPED_TRACE(testing::Message() << "bad request " << i << ": " << bad[i].body.substr(0, 80));
    EXPECT_EQ(bad_replies[i].status, bad[i].status) << bad_replies[i].body;
    const json e = json::parse(bad_replies[i].body, nullptr, false);
    ASSERT_TRUE(e.is_object() && e.contains("error")) << bad_replies[i].body;
    EXPECT_FALSE(e["error"]["message"].get<std::string>().empty());
    if (!bad[i].param.empty()) {
      EXPECT_EQ(e["error"]["param"], bad[i].param);
    }
    EXPECT_EQ(good_replies[i].status, 200) << good_replies[i].body;
    EXPECT_EQ(TextOf(good_replies[i].body), want);
  }
  // Nothing leaked: every slot and KV block free, nothing queued, and the server still healthy.
  EXPECT_EQ(SettledMetric(port(), "gemmapod_kv_slots_used", 0), 0);
  EXPECT_EQ(SettledMetric(port(), "gemmapod_kv_blocks_used", 0), 0);
  const Reply metrics = Get(port(), "/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_EQ(MetricValue(metrics.body, "gemmapod_kv_slots_free"), 8) << metrics.body;
  EXPECT_EQ(MetricValue(metrics.body, "gemmapod_requests_waiting"), 0);
  EXPECT_GT(MetricValue(metrics.body, "gemmapod_time_to_first_token_seconds_count"), 0);
  EXPECT_EQ(Get(port(), "/health").status, 200);
}

// Log-probabilities: those of the first generated token and its rivals equal the log-softmax of
// `gemmapod logits` at the prompt's last position; chat streams carry them per token.
TEST_F(ServeCli, LogprobsAreTheModelsLogSoftmax) {
  const Reply r = Post(port(), "/v1/completions",
                       R"({"prompt":[2,151,300,77],"max_tokens":4,"temperature":0,"logprobs":3})");
  ASSERT_EQ(r.status, 200) << r.body;
  const json lp = json::parse(r.body)["choices"][0]["logprobs"];
  ASSERT_EQ(lp["token_logprobs"].size(), 4u) << r.body;
  const std::string out = (dir_ / "lp.npy").string();
  const CliResult l = Gemmapod("logits --model " + model_ + " --tokens 2,151,300,77 --out " + out);
  ASSERT_EQ(l.exit_code, 0) << l.output;
  const Tensor logits = ReadNpy(out);
  const int64_t V = logits.dim(1);
  const float* last = logits.data<float>() + 3 * V;
  double top = -1e30, sum = 0;
  for (int64_t i = 0; i < V; ++i) top = std::max(top, double{last[i]});
  for (int64_t i = 0; i < V; ++i) sum += std::exp(last[i] - top);
  std::vector<double> want(static_cast<size_t>(V));
  for (int64_t i = 0; i < V; ++i) want[static_cast<size_t>(i)] = last[i] - top - std::log(sum);
  std::sort(want.begin(), want.end(), std::greater<>());
  // Greedy: the token is the likeliest, and the three best are the row's three largest.
  EXPECT_NEAR(lp["token_logprobs"][0].get<double>(), want[0], 1e-4);
  std::vector<double> tops;
  for (const auto& [text, value] : lp["top_logprobs"][0].items()) tops.push_back(value);
  std::sort(tops.begin(), tops.end(), std::greater<>());
  ASSERT_GE(tops.size(), 2u);  // texts may coincide (byte pieces), so 2 or 3 entries
  EXPECT_NEAR(tops[0], want[0], 1e-4);
  EXPECT_NEAR(tops[1], want[1], 1e-4);

  const Reply chat = Post(port(), "/v1/chat/completions", R"({"messages":[
      {"role":"user","content":"Hi"}],"max_tokens":3,"temperature":0,"logprobs":true,
      "top_logprobs":2,"stream":true})");
  ASSERT_EQ(chat.status, 200) << chat.body;
  int entries = 0;
  std::istringstream in(chat.body);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("data: {", 0) != 0) continue;
    const json e = json::parse(line.substr(6));
    if (e["choices"].empty() || e["choices"][0]["logprobs"].is_null()) continue;
    for (const json& t : e["choices"][0]["logprobs"]["content"]) {
      ++entries;
      EXPECT_EQ(t["top_logprobs"].size(), 2u);
      EXPECT_LE(t["logprob"].get<double>(), 0.0);
    }
  }
  EXPECT_EQ(entries, 3) << chat.body;
  EXPECT_EQ(Post(port(), "/v1/chat/completions",
                 R"({"messages":[{"role":"user","content":"Hi"}],"top_logprobs":2})")
                .status,
            400);
  EXPECT_EQ(Post(port(), "/v1/completions", R"({"prompt":"x","logprobs":21})").status, 400);
}

TEST_F(ServeCli, ModelsAndHealth) {
  const Reply models = Get(port(), "/v1/models");
  ASSERT_EQ(models.status, 200);
  const json j = json::parse(models.body);
  EXPECT_EQ(j["data"][0]["id"], "gemma3");
  EXPECT_EQ(j["data"][0]["max_model_len"], 256);
  const Reply health = Get(port(), "/health");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(json::parse(health.body)["status"], "ok");
}

// Sends a request over a raw socket, reads until `bytes` have come, and closes.
void StartStreamAndHangUp(int port, const std::string& body, size_t bytes,
                          const std::string& headers = "") {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  const std::string request =
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + headers +
      "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  std::string got;
  char buf[4096];
  while (got.size() < bytes) {
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  close(fd);
}

class ServeLongCli : public ServeCli {};

TEST_F(ServeLongCli, AClientThatGoesAwayIsCancelledAndSigtermFinishesTheRest) {
  ServeProcess server;
  ASSERT_TRUE(server.Start("--model " + long_model_ + " --context 32768 --parallel 4"))
      << server.log();
  const std::string long_request =
      R"({"prompt":"Once","max_tokens":30000,"temperature":0,"stream":true})";
  StartStreamAndHangUp(server.port(), long_request, 2000);
  // The cancelled request frees its slot: the metrics say so within a few seconds.
  double used = -1;
  for (int i = 0; i < 100 && used != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    used = MetricValue(Get(server.port(), "/metrics").body, "gemmapod_kv_slots_used");
  }
  EXPECT_EQ(used, 0) << server.log();
  EXPECT_TRUE(Contains(server.log(), "the client went away; cancelled")) << server.log();
  // The same for a whole (not streamed) answer that a client asked to be compressed: the probes
  // must still reach the socket.
  StartStreamAndHangUp(server.port(), R"({"prompt":"Once","max_tokens":30000,"temperature":0})", 1,
                       "Accept-Encoding: gzip, br\r\n");
  used = -1;
  for (int i = 0; i < 100 && used != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    used = MetricValue(Get(server.port(), "/metrics").body, "gemmapod_kv_slots_used");
  }
  EXPECT_EQ(used, 0) << server.log();

  // A request in flight when SIGTERM comes still completes; then the server exits 0.
  Reply in_flight;
  std::thread client([&] {
    in_flight = Post(server.port(), "/v1/completions",
                     R"({"prompt":"Once","max_tokens":6000,"temperature":0})");
  });
  for (int i = 0; i < 100; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (MetricValue(Get(server.port(), "/metrics").body, "gemmapod_kv_slots_used") == 1) break;
  }
  EXPECT_EQ(server.Stop(SIGTERM), 0) << server.log();
  client.join();
  ASSERT_EQ(in_flight.status, 200) << in_flight.body << server.log();
  EXPECT_EQ(json::parse(in_flight.body)["usage"]["completion_tokens"], 6000);
  EXPECT_TRUE(Contains(server.log(), "serve: stopping")) << server.log();
}

// A request that could never fit (n beyond the slots and the queue) is a 400 naming n, not a
// 503 that invites retrying forever.
TEST_F(ServeCli, ARequestThatCanNeverFitIsRefusedAsSuch) {
  ServeProcess server;
  ASSERT_TRUE(server.Start("--model " + model_ + " --parallel 2 --max-queue 1")) << server.log();
  const Reply r = Post(server.port(), "/v1/completions", R"({"prompt":"x","n":4})");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "n") << r.body;
  EXPECT_EQ(Post(server.port(), "/v1/completions", R"({"prompt":"x","n":3})").status, 200);
}

TEST_F(ServeCli, AnApiKeyIsRequiredWhenSet) {
  ServeProcess server;
  ASSERT_TRUE(server.Start("--model " + model_, 1, "GEMMAPOD_API_KEY=s3cret")) << server.log();
  const std::string body = R"({"prompt":"x","max_tokens":2})";
  EXPECT_EQ(Post(server.port(), "/v1/completions", body).status, 401);
  EXPECT_EQ(Post(server.port(), "/v1/completions", body, {{"Authorization", "Bearer nope"}}).status,
            401);
  EXPECT_EQ(
      Post(server.port(), "/v1/completions", body, {{"Authorization", "Bearer s3cret"}}).status,
      200);
  EXPECT_EQ(Get(server.port(), "/health").status, 200);  // probes need no key
}

// A prompt long enough for several KV blocks, and requests that share it.
const std::string kLongPrompt =
    "Once upon a time there was a little model that served many requests, and every one of them "
    "was answered with exactly the tokens it would have had alone, because the blocks it shared "
    "held the same keys and values";

// Prompts that start alike share their KV blocks (prefix caching): the answers are those of
// `gemmapod generate` and of a server that shares nothing, also between the choices of one
// request (admitted in one step, the later ones reading blocks the first is filling in the same
// micro-batch), and the hits are counted.
TEST_F(ServeCli, PromptsThatShareAPrefixShareItsBlocksAndAnswerAsAlone) {
  const Reply before = Get(port(), "/metrics");
  const double hits0 = MetricValue(before.body, "gemmapod_prefix_cache_hit_tokens_total");
  ASSERT_GE(hits0, 0) << before.body;
  for (const char* tail : {" first", " second", " first"}) {
    EXPECT_FALSE(ServedAsGenerate(port(), model_, kLongPrompt + tail, 10).empty()) << tail;
  }
  const double hits =
      MetricValue(Get(port(), "/metrics").body, "gemmapod_prefix_cache_hit_tokens_total");
  EXPECT_GE(hits - hits0, 2 * 32) << "the second and third prompts reuse the first's blocks";

  const std::string body = json{
      {"prompt", kLongPrompt}, {"max_tokens", 14}, {"temperature", 0.7}, {"seed", 5}, {"n", 3},
      {"logprobs", 2}}.dump();
  ServeProcess plain;
  ASSERT_TRUE(plain.Start("--model " + model_ + " --no-prefix-caching")) << plain.log();
  const Reply want = Post(plain.port(), "/v1/completions", body);
  ASSERT_EQ(want.status, 200) << want.body;
  EXPECT_EQ(
      MetricValue(Get(plain.port(), "/metrics").body, "gemmapod_prefix_cache_hit_tokens_total"), 0);
  const Reply got = Post(port(), "/v1/completions", body);
  ASSERT_EQ(got.status, 200) << got.body;
  // The same tokens; log-probabilities to rounding (a batch's row count changes the low bits of
  // its matrix products, and a choice that shares the prefix brings fewer rows).
  const json a = json::parse(want.body)["choices"], b = json::parse(got.body)["choices"];
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(a[i]["text"], b[i]["text"]) << "choice " << i;
    const json& la = a[i]["logprobs"]["token_logprobs"];
    const json& lb = b[i]["logprobs"]["token_logprobs"];
    ASSERT_EQ(la.size(), lb.size());
    for (size_t t = 0; t < la.size(); ++t) {
      EXPECT_NEAR(la[t].get<double>(), lb[t].get<double>(), 1e-5) << "choice " << i;
    }
  }
}

// A pool smaller than the slots' contexts: requests wait for blocks rather than slots, all
// complete with their answers alone, and a request that could never fit is a 400 naming
// max_tokens.
TEST_F(ServeCli, ASmallKvPoolQueuesRequestsByTheirTokens) {
  ServeProcess server;
  ASSERT_TRUE(
      server.Start("--model " + model_ + " --parallel 8 --context 64 --kv-tokens 96 --kv-block 16"))
      << server.log();
  EXPECT_TRUE(Contains(server.log(), "96 tokens of KV cache in blocks of 16")) << server.log();
  auto body = [](int i) {
    return json{{"prompt", "Queue " + std::to_string(i)}, {"max_tokens", 40}, {"temperature", 0}}
        .dump();
  };
  std::vector<std::string> alone(8);
  for (int i = 0; i < 8; ++i) {
    const Reply r = Post(server.port(), "/v1/completions", body(i));
    ASSERT_EQ(r.status, 200) << r.body;
    alone[static_cast<size_t>(i)] = TextOf(r.body);
  }
  std::vector<Reply> replies(8);
  std::vector<std::thread> clients;
  double most_running = 0;
  for (int i = 0; i < 8; ++i) {
    clients.emplace_back([&, i] {
      replies[static_cast<size_t>(i)] = Post(server.port(), "/v1/completions", body(i));
    });
  }
  for (int k = 0; k < 20; ++k) {  // sampled while they run: never more than two at once
    most_running = std::max(most_running, MetricValue(Get(server.port(), "/metrics").body,
                                                      "gemmapod_requests_running"));
  }
  for (auto& c : clients) c.join();
  for (size_t i = 0; i < 8; ++i) {
    ASSERT_EQ(replies[i].status, 200) << replies[i].body;
    EXPECT_EQ(TextOf(replies[i].body), alone[i]) << "request " << i;
  }
  EXPECT_LE(most_running, 2);  // 45 positions each: three blocks of the pool's six
  EXPECT_EQ(SettledMetric(server.port(), "gemmapod_kv_blocks_used", 0), 0);
  const std::string metrics = Get(server.port(), "/metrics").body;
  EXPECT_EQ(MetricValue(metrics, "gemmapod_kv_capacity_tokens"), 96) << metrics;

  const Reply too_long =
      Post(server.port(), "/v1/completions", R"({"prompt":"x","max_tokens":40,"n":3})");
  EXPECT_EQ(too_long.status, 400) << too_long.body;
  EXPECT_EQ(json::parse(too_long.body)["error"]["param"], "max_tokens") << too_long.body;
  EXPECT_EQ(server.Stop(SIGTERM), 0) << server.log();
}

TEST_F(ServeCli, ShardedServersAnswerWithOneRanksTokens) {
  // A short prompt, and a long one whose three choices share its blocks.
  for (const std::string& prompt : {std::string("The license of"), kLongPrompt}) {
    const std::string body = json{{"prompt", prompt}, {"max_tokens", 16}, {"temperature", 0.6},
                                  {"seed", 3},        {"n", 3},           {"logprobs", 2}}
                                 .dump();
    const Reply one = Post(port(), "/v1/completions", body);
    ASSERT_EQ(one.status, 200) << one.body;
    for (const char* pod : {"configs/pods/local.yaml", "tests/launch/pods/pp2.yaml"}) {
      SCOPED_TRACE(pod);
      ServeProcess server;
      ASSERT_TRUE(server.Start("--model " + model_ + " --pod " + pod, 2)) << server.log();
      const Reply sharded = Post(server.port(), "/v1/completions", body);
      ASSERT_EQ(sharded.status, 200) << sharded.body;
      const json a = json::parse(one.body), b = json::parse(sharded.body);
      for (int i = 0; i < 3; ++i) {
        EXPECT_EQ(a["choices"][i]["text"], b["choices"][i]["text"]) << "choice " << i;
        const json& la = a["choices"][i]["logprobs"]["token_logprobs"];
        const json& lb = b["choices"][i]["logprobs"]["token_logprobs"];
        ASSERT_EQ(la.size(), lb.size());
        for (size_t t = 0; t < la.size(); ++t) {
          EXPECT_NEAR(la[t].get<double>(), lb[t].get<double>(), 1e-4) << "choice " << i;
        }
      }
      EXPECT_EQ(server.Stop(SIGTERM), 0) << server.log();
    }
  }
}

// T5Gemma: each request's prompt is encoded when its sequence starts. Greedy answers equal
// `gemmapod generate`'s; split into an encoder stage of two tensor-parallel ranks and two decoder
// stages (the encoder's ranks serve the driver's sequences, the driver is rank 2), the sampled
// choices of one request, several sequences starting in one micro-batch, equal one rank's; a
// burst of requests all complete; a prompt longer than the encoder takes is a 400.
TEST_F(ServeCli, T5GemmaEncodesEachRequestOnOneRankAndSplitOverFour) {
  const std::string t5 = (dir_ / "t5gemma.h5").string();
  const CliResult c = Gemmapod("convert tests/fixtures/models/t5gemma/unbalanced " + t5);
  ASSERT_EQ(c.exit_code, 0) << c.output;
  ServeProcess one;
  ASSERT_TRUE(one.Start("--model " + t5)) << one.log();
  const std::string greedy = ServedAsGenerate(one.port(), t5, "The license", 12);
  ASSERT_FALSE(greedy.empty());
  EXPECT_EQ(json::parse(greedy)["usage"]["prompt_tokens"], 4);  // the encoder's input
  const Reply chat = Post(one.port(), "/v1/chat/completions",
                          R"({"messages":[{"role":"user","content":"Hi there"}],"max_tokens":9,
                              "temperature":0})");
  ASSERT_EQ(chat.status, 200) << chat.body;
  const CliResult gc =
      Gemmapod("generate --model " + t5 + " --chat --prompt 'Hi there' --max-tokens 9");
  ASSERT_EQ(gc.exit_code, 0) << gc.output;
  EXPECT_EQ(TextOf(chat.body), Generated(gc));
  const Reply too_long = Post(one.port(), "/v1/completions",
                              json{{"prompt", std::vector<int>(300, 7)}, {"max_tokens", 2}}.dump());
  EXPECT_EQ(too_long.status, 400) << too_long.body;
  EXPECT_EQ(json::parse(too_long.body)["error"]["param"], "prompt");

  const std::string body =
      R"({"prompt":"Hello world, again","max_tokens":10,"temperature":0.8,"seed":3,"n":3,"logprobs":1})";
  const Reply want = Post(one.port(), "/v1/completions", body);
  ASSERT_EQ(want.status, 200) << want.body;
  ServeProcess split;
  ASSERT_TRUE(split.Start("--model " + t5 + " --pod tests/launch/pods/t5gemma-split.yaml", 4))
      << split.log();
  const Reply got = Post(split.port(), "/v1/completions", body);
  ASSERT_EQ(got.status, 200) << got.body;
  const json a = json::parse(want.body)["choices"], b = json::parse(got.body)["choices"];
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(a[i]["text"], b[i]["text"]) << "choice " << i;
    EXPECT_NEAR(a[i]["logprobs"]["token_logprobs"][9].get<double>(),
                b[i]["logprobs"]["token_logprobs"][9].get<double>(), 1e-4);
  }
  std::vector<int> status(8);
  std::vector<std::thread> clients;
  for (int i = 0; i < 8; ++i) {
    clients.emplace_back([&, i] {
      status[static_cast<size_t>(i)] =
          Post(split.port(), "/v1/completions",
               json{{"prompt", "Burst " + std::to_string(i)}, {"max_tokens", 8}, {"n", 3}}.dump())
              .status;
    });
  }
  for (auto& t : clients) t.join();
  for (int i = 0; i < 8; ++i) EXPECT_EQ(status[static_cast<size_t>(i)], 200) << "client " << i;
  EXPECT_EQ(split.Stop(SIGTERM), 0) << split.log();
}

// Two data-parallel replicas: rank 0 deals requests to both, each answer is one rank's, and
// SIGTERM drains both.
TEST_F(ServeCli, DataParallelReplicasShareTheLoad) {
  auto body = [](int i) {
    return json{{"prompt", "Replica test " + std::to_string(i)},
                {"max_tokens", 12},
                {"temperature", i % 2 == 0 ? 0.0 : 0.8},
                {"seed", i},
                {"logprobs", 1}}
        .dump();
  };
  std::vector<json> one(8);
  for (int i = 0; i < 8; ++i) {
    const Reply r = Post(port(), "/v1/completions", body(i));
    ASSERT_EQ(r.status, 200) << r.body;
    one[static_cast<size_t>(i)] = json::parse(r.body)["choices"][0];
  }
  ServeProcess server;
  ASSERT_TRUE(
      server.Start("--model " + model_ + " --pod tests/launch/pods/dp2.yaml --parallel 2", 2))
      << server.log();
  std::vector<Reply> replies(8);
  std::vector<std::thread> clients;
  for (int i = 0; i < 8; ++i) {
    clients.emplace_back([&, i] {
      replies[static_cast<size_t>(i)] = Post(server.port(), "/v1/completions", body(i));
    });
  }
  for (auto& c : clients) c.join();
  for (size_t i = 0; i < 8; ++i) {
    ASSERT_EQ(replies[i].status, 200) << replies[i].body;
    const json got = json::parse(replies[i].body)["choices"][0];
    EXPECT_EQ(got["text"], one[i]["text"]) << "request " << i;
    EXPECT_NEAR(got["logprobs"]["token_logprobs"][0].get<double>(),
                one[i]["logprobs"]["token_logprobs"][0].get<double>(), 1e-4);
  }
  EXPECT_EQ(SettledMetric(server.port(), "gemmapod_kv_slots_free", 4), 4);
  EXPECT_EQ(server.Stop(SIGTERM), 0) << server.log();
  // Both replicas ran some of the 8.
  EXPECT_TRUE(Contains(server.log(), "replica 0 ran [1-7] sequences")) << server.log();
  EXPECT_TRUE(Contains(server.log(), "replica 1 ran [1-7] sequences")) << server.log();
}

TEST(ServeCliFamilies, RecurrentGemmaIsServedAndBadFlagsAreNamed) {
  const fs::path dir = fs::temp_directory_path() / ("serve-families-" + std::to_string(getpid()));
  fs::create_directories(dir);
  const std::string rg = (dir / "rg.h5").string();
  ASSERT_EQ(Gemmapod("convert tests/fixtures/models/recurrentgemma/hf " + rg).exit_code, 0);
  ServeProcess server;
  ASSERT_TRUE(server.Start("--model " + rg)) << server.log();
  EXPECT_FALSE(ServedAsGenerate(server.port(), rg, "The license", 10).empty());
  EXPECT_EQ(server.Stop(SIGTERM), 0);

  // Bad flags are named before anything is loaded or bound.
  for (const auto& [flag, named] : std::vector<std::pair<std::string, std::string>>{
           {"--port 70000", "--port"},
           {"--parallel 0", "--parallel"},
           {"--context 1", "--context"},
           {"--prefill-chunk 0", "--prefill-chunk"},
           {"--kv-block 0", "--kv-block"},
           {"--kv-tokens -1", "--kv-tokens"},
           {"--kv-tokens 4096", "--kv-tokens and --kv-block size the paged KV cache of Gemma"},
           {"--timeout 0", "--timeout"},
           {"--max-body-kib 0", "--max-body-kib"},
           {"--api-key-file /nonexistent/key", "/nonexistent/key"},
           {"--pod /nonexistent/pod.yaml", "/nonexistent/pod.yaml"}}) {
    const CliResult bad = Gemmapod("serve --model " + rg + " " + flag);
    EXPECT_EQ(bad.exit_code, 1) << flag << "\n" << bad.output;
    EXPECT_TRUE(Contains(bad.output, "error: .*" + named)) << flag << "\n" << bad.output;
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace gemmapod
