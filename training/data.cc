#include "training/data.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "runtime/error.h"
#include "runtime/tokenizer/chat_template.h"
#include "runtime/tokenizer/tokenizer.h"

namespace gemmapod {
namespace {

using nlohmann::json;

// A line that is not a valid example: the message already names file and line.
struct InvalidLine : Error {
  using Error::Error;
};

std::string StringField(const json& j, const char* key, const std::string& at) {
  const auto it = j.find(key);
  if (it == j.end()) throw InvalidLine(StrCat(at, "missing \"", key, "\""));
  if (!it->is_string()) {
    throw InvalidLine(StrCat(at, "\"", key, "\" must be a string, got ", it->type_name()));
  }
  return it->get<std::string>();
}

void Append(std::vector<int32_t>& ids, std::vector<uint8_t>& learn,
            const std::vector<int32_t>& more, bool learned) {
  ids.insert(ids.end(), more.begin(), more.end());
  learn.insert(learn.end(), more.size(), learned ? 1 : 0);
}

TrainingExample FromText(const json& j, const Tokenizer& tok, const std::string& at) {
  TrainingExample e;
  Append(e.tokens, e.learn, {tok.bos_id()}, false);
  Append(e.tokens, e.learn, tok.Encode(StringField(j, "text", at), false), true);
  Append(e.tokens, e.learn, {tok.eos_id()}, true);
  return e;
}

// The prompt and the completion are encoded apart, as generation sees them: the prompt's ids
// are what `generate` feeds the model, the completion's what it should answer.
TrainingExample FromPromptCompletion(const json& j, const Tokenizer& tok, const std::string& at) {
  TrainingExample e;
  Append(e.tokens, e.learn, {tok.bos_id()}, false);
  Append(e.tokens, e.learn, tok.Encode(StringField(j, "prompt", at), false), false);
  const std::string completion = StringField(j, "completion", at);
  if (completion.empty()) throw InvalidLine(StrCat(at, "\"completion\" is empty"));
  e.prompt_length = static_cast<int64_t>(e.tokens.size());
  e.answer = completion;
  Append(e.tokens, e.learn, tok.Encode(completion, false), true);
  Append(e.tokens, e.learn, {tok.eos_id()}, true);
  return e;
}

// The whole conversation in the chat template; each model turn's ids (its text and
// <end_of_turn>) are learned. A model turn's ids are found as what the conversation up to it adds
// to the prompt that generation would see (the turns before it and "<start_of_turn>model\n").
TrainingExample FromMessages(const json& j, const Tokenizer& tok, const std::string& at) {
  const json& list = j.at("messages");
  if (!list.is_array() || list.empty()) {
    throw InvalidLine(StrCat(at, "\"messages\" must be a non-empty list"));
  }
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string where = StrCat(at, "messages[", i, "]: ");
    if (!list[i].is_object()) {
      throw InvalidLine(StrCat(where, "expected an object, got ", list[i].type_name()));
    }
    messages.push_back(
        {StringField(list[i], "role", where), StringField(list[i], "content", where)});
  }
  const int32_t end_of_turn = tok.PieceId("<end_of_turn>").value_or(-1);
  TrainingExample e;
  try {
    e.tokens = EncodeGemmaChat(tok, messages, false);
    e.learn.assign(e.tokens.size(), 0);
    for (size_t k = 0; k < messages.size(); ++k) {
      if (messages[k].role != "model" && messages[k].role != "assistant") continue;
      const std::vector<ChatMessage> before(messages.begin(), messages.begin() + k);
      const std::vector<int32_t> prompt = EncodeGemmaChat(tok, before, true);
      const std::vector<ChatMessage> through(messages.begin(), messages.begin() + k + 1);
      const std::vector<int32_t> turn = EncodeGemmaChat(tok, through, false);
      if (turn.size() < prompt.size() || !std::equal(prompt.begin(), prompt.end(), turn.begin())) {
        throw InvalidLine(StrCat(at, "messages[", k,
                                 "]: the tokenizer joins the start of this reply to the "
                                 "\"model\\n\" marker, so its ids cannot be separated"));
      }
      // The turn ends "<end_of_turn>\n": learn through the marker, not the newline after it.
      size_t end = turn.size();
      while (end > prompt.size() && turn[end - 1] != end_of_turn) --end;
      for (size_t i = prompt.size(); i < end; ++i) e.learn[i] = 1;
      e.prompt_length = static_cast<int64_t>(prompt.size());  // the last model turn's
      e.answer = messages[k].content;
    }
  } catch (const InvalidLine&) {
    throw;
  } catch (const Error& err) {
    throw InvalidLine(StrCat(at, err.what()));
  }
  if (std::find(e.learn.begin(), e.learn.end(), 1) == e.learn.end()) {
    throw InvalidLine(StrCat(at, "no model (assistant) turn to learn"));
  }
  return e;
}

// The encoder reads <bos> and the input, as `generate` feeds a T5Gemma prompt; the decoder
// starts at <bos> and learns the target and <eos>.
TrainingExample FromInputTarget(const json& j, const Tokenizer& tok, const std::string& at) {
  TrainingExample e;
  e.encoder_tokens = tok.Encode(StringField(j, "input", at), true);
  const std::string target = StringField(j, "target", at);
  if (target.empty()) throw InvalidLine(StrCat(at, "\"target\" is empty"));
  Append(e.tokens, e.learn, {tok.bos_id()}, false);
  Append(e.tokens, e.learn, tok.Encode(target, false), true);
  Append(e.tokens, e.learn, {tok.eos_id()}, true);
  e.prompt_length = 1;
  e.answer = target;
  return e;
}

// A preference pair: the chosen answer's example with the rejected one's beside it, encoded as
// prompt/completion examples (a prompt and two strings) or as two conversations; for an
// encoder-decoder model, two targets of one input ({"input", "chosen", "rejected"}).
TrainingExample FromPreferencePair(const json& j, const Tokenizer& tok, bool seq2seq,
                                   const std::string& at) {
  if (!j.contains("chosen") || !j.contains("rejected")) {
    throw InvalidLine(StrCat(at, "a preference pair needs \"chosen\" and \"rejected\" (and a ",
                             "\"prompt\" when they are strings)"));
  }
  const auto side = [&](const char* key) {
    const json& answer = j.at(key);
    const std::string where = StrCat(at, "\"", key, "\": ");
    if (answer.is_array() && !seq2seq) {
      return FromMessages(json{{"messages", answer}}, tok, where);
    }
    if (!answer.is_string()) {
      throw InvalidLine(StrCat(where, "expected a string (with \"prompt\") or a list of ",
                               "messages, got ", answer.type_name()));
    }
    if (seq2seq) {
      if (!j.contains("input")) throw InvalidLine(StrCat(at, "missing \"input\""));
      return FromInputTarget(json{{"input", j.at("input")}, {"target", answer}}, tok, where);
    }
    if (!j.contains("prompt")) throw InvalidLine(StrCat(at, "missing \"prompt\""));
    return FromPromptCompletion(json{{"prompt", j.at("prompt")}, {"completion", answer}}, tok,
                                where);
  };
  TrainingExample chosen = side("chosen");
  chosen.rejected = std::make_shared<const TrainingExample>(side("rejected"));
  return chosen;
}

TrainingExample ParseExample(const std::string& line, const Tokenizer& tok, bool seq2seq,
                             bool preference, const std::string& at) {
  json j;
  try {
    j = json::parse(line);
  } catch (const json::parse_error& err) {
    throw InvalidLine(StrCat(at, "not valid JSON (", err.what(), ")"));
  }
  if (!j.is_object()) throw InvalidLine(StrCat(at, "expected a JSON object, got ", j.type_name()));
  if (preference) return FromPreferencePair(j, tok, seq2seq, at);
  if (j.contains("chosen") || j.contains("rejected")) {
    throw InvalidLine(StrCat(at, "a preference pair (\"chosen\", \"rejected\") needs a ",
                             "preference objective (objective: dpo)"));
  }
  if (seq2seq) {
    if (j.contains("input") || j.contains("target")) return FromInputTarget(j, tok, at);
    throw InvalidLine(StrCat(at, "an encoder-decoder model (T5Gemma) trains on {\"input\", ",
                             "\"target\"} pairs; the object has neither key"));
  }
  if (j.contains("messages")) return FromMessages(j, tok, at);
  if (j.contains("prompt") || j.contains("completion")) return FromPromptCompletion(j, tok, at);
  if (j.contains("text")) return FromText(j, tok, at);
  if (j.contains("input") || j.contains("target")) {
    throw InvalidLine(StrCat(at, "{\"input\", \"target\"} examples are for encoder-decoder ",
                             "models (T5Gemma); this model is decoder-only"));
  }
  throw InvalidLine(StrCat(at, "expected {\"text\"}, {\"prompt\", \"completion\"} or ",
                           "{\"messages\"}; the object has none of these keys"));
}

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

TrainingData ReadJsonlExamples(const std::string& path, const Tokenizer& tokenizer,
                               const DataReadOptions& options) {
  GEMMAPOD_CHECK(options.max_length >= 2, "data: max_length ", options.max_length,
                 " leaves no room for a token to learn");
  GEMMAPOD_CHECK(tokenizer.bos_id() >= 0 && tokenizer.eos_id() >= 0, tokenizer.origin(),
                 ": the tokenizer has no <bos> or <eos> piece; examples need both");
  std::ifstream in(path, std::ios::binary);
  GEMMAPOD_CHECK(in.good(), path, ": cannot open the data file");
  TrainingData data;
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string at = StrCat(path, ":", number, ": ");
    TrainingExample e;
    try {
      e = ParseExample(line, tokenizer, options.seq2seq, options.preference, at);
    } catch (const InvalidLine& err) {
      if (!options.skip_invalid) {
        throw Error(StrCat(err.what(), " (or set data.invalid: skip)"));
      }
      ++data.skipped_invalid;
      continue;
    }
    e.line = number;
    int64_t n = static_cast<int64_t>(std::max(e.tokens.size(), e.encoder_tokens.size()));
    if (e.rejected) n = std::max(n, static_cast<int64_t>(e.rejected->tokens.size()));
    if (n > options.max_length) {
      GEMMAPOD_CHECK(options.skip_too_long, at, n, " tokens, more than data.max_length (",
                     options.max_length, "); shorten it, raise max_length or set ",
                     "data.too_long: skip");
      ++data.skipped_too_long;
      continue;
    }
    data.examples.push_back(std::move(e));
  }
  GEMMAPOD_CHECK(!in.bad(), path, ": read error after line ", number);
  GEMMAPOD_CHECK(!data.examples.empty(), path, ": no examples (", number, " lines, ",
                 data.skipped_too_long, " too long, ", data.skipped_invalid, " invalid)");
  return data;
}

std::vector<int64_t> SeededPermutation(int64_t n, uint64_t seed) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  uint64_t state = seed;
  for (int64_t i = n - 1; i > 0; --i) {
    // Lemire's multiply-shift maps 64 random bits to [0, i] without a modulo's bias worth noting.
    const uint64_t r = SplitMix64(state);
    const auto j = static_cast<int64_t>(
        (static_cast<unsigned __int128>(r) * static_cast<uint64_t>(i + 1)) >> 64);
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

SplitData SplitHeldOut(std::vector<TrainingExample> examples, double fraction, uint64_t seed) {
  GEMMAPOD_CHECK(fraction >= 0 && fraction < 1, "data.held_out_fraction ", fraction,
                 " must be in [0, 1)");
  const auto n = static_cast<int64_t>(examples.size());
  int64_t held = static_cast<int64_t>(std::llround(fraction * static_cast<double>(n)));
  if (fraction > 0) held = std::max<int64_t>(held, 1);
  GEMMAPOD_CHECK(held < n, "data: holding out ", held, " of ", n,
                 " examples leaves none to train on");
  std::vector<uint8_t> is_held(static_cast<size_t>(n), 0);
  const std::vector<int64_t> order = SeededPermutation(n, seed ^ 0x68656C644F7574ull);
  for (int64_t i = 0; i < held; ++i)
    is_held[static_cast<size_t>(order[static_cast<size_t>(i)])] = 1;
  SplitData split;
  for (int64_t i = 0; i < n; ++i) {
    (is_held[static_cast<size_t>(i)] ? split.held_out : split.train)
        .push_back(std::move(examples[static_cast<size_t>(i)]));
  }
  return split;
}

BatchStream::BatchStream(const std::vector<TrainingExample>& examples, uint64_t seed, bool shuffle,
                         bool packing, int64_t max_length, DataCursor start)
    : examples_(examples),
      seed_(seed),
      shuffle_(shuffle),
      packing_(packing),
      max_length_(max_length),
      cursor_(start) {
  GEMMAPOD_CHECK(!examples.empty(), "data: no examples to stream");
  GEMMAPOD_CHECK(start.epoch >= 0 && start.position >= 0 &&
                     start.position <= static_cast<int64_t>(examples.size()),
                 "data: cursor (epoch ", start.epoch, ", position ", start.position,
                 ") is outside a data set of ", examples.size(), " examples");
}

const TrainingExample& BatchStream::Peek() {
  const auto n = static_cast<int64_t>(examples_.size());
  if (cursor_.position == n) {
    ++cursor_.epoch;
    cursor_.position = 0;
  }
  if (order_epoch_ != cursor_.epoch) {
    if (shuffle_) {
      order_ = SeededPermutation(
          n, seed_ + static_cast<uint64_t>(cursor_.epoch) * 0x9E3779B97F4A7C15ull);
    } else {
      order_.resize(static_cast<size_t>(n));
      std::iota(order_.begin(), order_.end(), int64_t{0});
    }
    order_epoch_ = cursor_.epoch;
  }
  return examples_[static_cast<size_t>(order_[static_cast<size_t>(cursor_.position)])];
}

void BatchStream::Advance() { ++cursor_.position; }

std::vector<const TrainingExample*> BatchStream::NextRow() {
  std::vector<const TrainingExample*> row = {&Peek()};
  Advance();
  if (!packing_) return row;
  int64_t used = static_cast<int64_t>(row.front()->tokens.size());
  // Fill the row from the same epoch only, so an epoch boundary is a row boundary.
  while (cursor_.position < static_cast<int64_t>(examples_.size())) {
    const TrainingExample& next = Peek();
    const auto n = static_cast<int64_t>(next.tokens.size());
    if (used + n > max_length_) break;
    row.push_back(&next);
    used += n;
    Advance();
  }
  return row;
}

int64_t LearnedTargets(const TrainingExample& example) {
  int64_t n = 0;
  for (size_t i = 1; i < example.learn.size(); ++i) n += example.learn[i];
  return n;
}

PackedBatch PackExamples(const std::vector<const TrainingExample*>& examples) {
  std::vector<std::vector<int32_t>> sequences;
  std::vector<std::vector<uint8_t>> masks;
  for (const TrainingExample* e : examples) {
    sequences.push_back(e->tokens);
    masks.push_back(e->learn);
  }
  return PackSequences(sequences, masks);
}

}  // namespace gemmapod
