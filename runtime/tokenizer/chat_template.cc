#include "runtime/tokenizer/chat_template.h"

#include "runtime/error.h"

namespace gemmapod {
namespace {

constexpr const char* kStartOfTurn = "<start_of_turn>";
constexpr const char* kEndOfTurn = "<end_of_turn>";

std::string Trim(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

struct Turn {
  std::string role;  // user or model
  std::string text;  // what goes between "role\n" and <end_of_turn>
};

// Checks roles and alternation, folds the system message, trims contents.
std::vector<Turn> Turns(const std::vector<ChatMessage>& messages) {
  std::vector<Turn> turns;
  std::string system_prefix;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "system") {
      GEMMAPOD_CHECK(i == 0, "chat: message ", i, ": a system message may only come first");
      system_prefix = m.content + "\n\n";
      continue;
    }
    GEMMAPOD_CHECK(m.role == "user" || m.role == "model" || m.role == "assistant", "chat: message ",
                   i, ": unknown role '", m.role, "' (system, user, model or assistant)");
    const std::string role = m.role == "assistant" ? "model" : m.role;
    const std::string expected = turns.size() % 2 == 0 ? "user" : "model";
    GEMMAPOD_CHECK(role == expected, "chat: message ", i, " is a ", role, " turn where a ",
                   expected, " turn must come (turns alternate, user first)");
    std::string text = Trim(m.content);
    if (turns.empty()) text = system_prefix + text;
    turns.push_back({role, text});
  }
  GEMMAPOD_CHECK(!turns.empty(), "chat: no user message");
  return turns;
}

int32_t RequirePiece(const Tokenizer& tokenizer, const char* piece) {
  const std::optional<int32_t> id = tokenizer.PieceId(piece);
  GEMMAPOD_CHECK(id.has_value(), tokenizer.origin(), ": the tokenizer has no ", piece,
                 " piece; the chat template needs a Gemma instruction-tuned tokenizer");
  return *id;
}

void Append(std::vector<int32_t>& ids, const std::vector<int32_t>& more) {
  ids.insert(ids.end(), more.begin(), more.end());
}

}  // namespace

std::string RenderGemmaChat(const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  std::string out = "<bos>";
  for (const Turn& t : Turns(messages)) {
    out += StrCat(kStartOfTurn, t.role, "\n", t.text, kEndOfTurn, "\n");
  }
  if (add_generation_prompt) out += StrCat(kStartOfTurn, "model\n");
  return out;
}

std::vector<int32_t> EncodeGemmaChat(const Tokenizer& tokenizer,
                                     const std::vector<ChatMessage>& messages,
                                     bool add_generation_prompt) {
  const int32_t start = RequirePiece(tokenizer, kStartOfTurn);
  const int32_t end = RequirePiece(tokenizer, kEndOfTurn);
  GEMMAPOD_CHECK(tokenizer.bos_id() >= 0, tokenizer.origin(),
                 ": the tokenizer has no <bos> piece; the chat template begins with one");
  const std::vector<std::string> markers = {kStartOfTurn, kEndOfTurn};
  std::vector<int32_t> ids = {tokenizer.bos_id()};
  for (const Turn& t : Turns(messages)) {
    ids.push_back(start);
    // The content is whatever the user typed: a marker spelled there stays text, or a message
    // could open turns of its own.
    Append(ids, tokenizer.EncodeLiteral(t.role + "\n" + t.text, markers));
    ids.push_back(end);
    Append(ids, tokenizer.Encode("\n", false));
  }
  if (add_generation_prompt) {
    ids.push_back(start);
    Append(ids, tokenizer.Encode("model\n", false));
  }
  return ids;
}

std::vector<int32_t> GemmaStopTokens(const Tokenizer& tokenizer) {
  std::vector<int32_t> stop;
  if (tokenizer.eos_id() >= 0) stop.push_back(tokenizer.eos_id());
  if (auto id = tokenizer.PieceId(kEndOfTurn)) stop.push_back(*id);
  return stop;
}

}  // namespace gemmapod
