// Fine-tuning data: each JSONL form becomes the ids generation would see with the right tokens
// learned, bad lines are named by file and line (or skipped and counted when asked), the held-out
// split and the per-epoch order are seeded and platform-independent, packing fills rows with
// whole examples, and a stream resumed from its cursor reads what the uninterrupted one reads.
#include "training/data.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "runtime/error.h"
#include "runtime/tokenizer/chat_template.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tests/error_of.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class Data : public ::testing::Test {
 protected:
  Data() : tok_(Tokenizer::FromFile("tests/fixtures/tokenizer/tiny_gemma.model")) {
    dir_ = fs::temp_directory_path() / ("data-test-" + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  ~Data() override { fs::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }
  TrainingData Read(const std::string& text, DataReadOptions options = {}) {
    return ReadJsonlExamples(Write("d.jsonl", text), tok_, options);
  }
  // The ids whose mask is set.
  static std::vector<int32_t> Learned(const TrainingExample& e) {
    std::vector<int32_t> out;
    for (size_t i = 0; i < e.tokens.size(); ++i) {
      if (e.learn[i]) out.push_back(e.tokens[i]);
    }
    return out;
  }
  static std::vector<int32_t> Cat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  }

  Tokenizer tok_;
  fs::path dir_;
};

TEST_F(Data, TextLearnsEveryTokenAfterBos) {
  const TrainingData d = Read(R"({"text": "the cat sat"})"
                              "\n");
  ASSERT_EQ(d.examples.size(), 1u);
  const TrainingExample& e = d.examples[0];
  const std::vector<int32_t> body = tok_.Encode("the cat sat", false);
  EXPECT_EQ(e.tokens, Cat(Cat({tok_.bos_id()}, body), {tok_.eos_id()}));
  EXPECT_EQ(Learned(e), Cat(body, {tok_.eos_id()}));
  EXPECT_EQ(e.line, 1);
}

TEST_F(Data, PromptCompletionLearnsOnlyTheCompletionAndEos) {
  const TrainingData d = Read(
      "\n"
      R"({"prompt": "2+3=", "completion": "5"})"
      "\n");
  ASSERT_EQ(d.examples.size(), 1u);
  const TrainingExample& e = d.examples[0];
  // The prompt's ids are exactly what generate feeds the model for the prompt.
  const std::vector<int32_t> prompt = tok_.Encode("2+3=", true);
  ASSERT_GE(e.tokens.size(), prompt.size());
  EXPECT_TRUE(std::equal(prompt.begin(), prompt.end(), e.tokens.begin()));
  EXPECT_EQ(Learned(e), Cat(tok_.Encode("5", false), {tok_.eos_id()}));
  EXPECT_EQ(e.line, 2);  // blank lines are skipped but counted
}

TEST_F(Data, ChatLearnsTheModelTurnsThroughEndOfTurn) {
  const TrainingData d =
      Read(R"({"messages": [{"role": "system", "content": "Be brief."},)"
           R"( {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},)"
           R"( {"role": "user", "content": "bye"}, {"role": "model", "content": "ciao"}]})"
           "\n");
  ASSERT_EQ(d.examples.size(), 1u);
  const TrainingExample& e = d.examples[0];
  const std::vector<ChatMessage> chat = {{"system", "Be brief."},
                                         {"user", "hi"},
                                         {"assistant", "hello"},
                                         {"user", "bye"},
                                         {"model", "ciao"}};
  EXPECT_EQ(e.tokens, EncodeGemmaChat(tok_, chat, false));
  const int32_t eot = *tok_.PieceId("<end_of_turn>");
  EXPECT_EQ(Learned(e),
            Cat(Cat(Cat(tok_.Encode("hello", false), {eot}), tok_.Encode("ciao", false)), {eot}));
  // Each learned turn starts right where generation's prompt for it ends.
  const std::vector<int32_t> prompt = EncodeGemmaChat(tok_, {chat.begin(), chat.begin() + 2}, true);
  EXPECT_EQ(e.learn[prompt.size() - 1], 0);
  EXPECT_EQ(e.learn[prompt.size()], 1);
}

TEST_F(Data, InputTargetPairsFeedTheEncoderAndLearnTheTarget) {
  DataReadOptions seq2seq;
  seq2seq.seq2seq = true;
  const TrainingData d = Read(R"({"input": "2+3=", "target": "5"})"
                              "\n",
                              seq2seq);
  ASSERT_EQ(d.examples.size(), 1u);
  const TrainingExample& e = d.examples[0];
  EXPECT_EQ(e.encoder_tokens, tok_.Encode("2+3=", true));  // as generate feeds the encoder
  EXPECT_EQ(e.tokens, Cat(Cat({tok_.bos_id()}, tok_.Encode("5", false)), {tok_.eos_id()}));
  EXPECT_EQ(Learned(e), Cat(tok_.Encode("5", false), {tok_.eos_id()}));
  EXPECT_THAT(ErrorOf([&] {
                Read(R"({"text": "a"})"
                     "\n",
                     seq2seq);
              }),
              HasSubstr(":1: an encoder-decoder model (T5Gemma) trains on {\"input\", "
                        "\"target\"} pairs"));
  EXPECT_THAT(ErrorOf([&] {
                Read(R"({"input": "a"})"
                     "\n",
                     seq2seq);
              }),
              HasSubstr(":1: missing \"target\""));
}

// A preference pair is two examples of one prompt: each side encoded as prompt/completion (or as
// a conversation), only its answer learned; the longer side decides whether the pair fits.
TEST_F(Data, PreferencePairsKeepTheRejectedAnswerBesideTheChosen) {
  DataReadOptions pairs;
  pairs.preference = true;
  const TrainingData d = Read(
      R"({"prompt": "2+3=", "chosen": "5", "rejected": "six"})"
      "\n"
      R"({"chosen": [{"role": "user", "content": "hi"}, {"role": "model", "content": "hello"}],)"
      R"( "rejected": [{"role": "user", "content": "hi"}, {"role": "model", "content": "no"}]})"
      "\n",
      pairs);
  ASSERT_EQ(d.examples.size(), 2u);
  const TrainingExample& text = d.examples[0];
  ASSERT_NE(text.rejected, nullptr);
  const std::vector<int32_t> prompt = tok_.Encode("2+3=", true);
  EXPECT_EQ(text.tokens, Cat(Cat(prompt, tok_.Encode("5", false)), {tok_.eos_id()}));
  EXPECT_EQ(text.rejected->tokens, Cat(Cat(prompt, tok_.Encode("six", false)), {tok_.eos_id()}));
  EXPECT_EQ(Learned(*text.rejected), Cat(tok_.Encode("six", false), {tok_.eos_id()}));
  EXPECT_EQ(LearnedTargets(*text.rejected),
            static_cast<int64_t>(tok_.Encode("six", false).size()) + 1);
  const TrainingExample& chat = d.examples[1];
  ASSERT_NE(chat.rejected, nullptr);
  const int32_t eot = *tok_.PieceId("<end_of_turn>");
  EXPECT_EQ(Learned(chat), Cat(tok_.Encode("hello", false), {eot}));
  EXPECT_EQ(Learned(*chat.rejected), Cat(tok_.Encode("no", false), {eot}));
  EXPECT_EQ(chat.line, 2);
  // The rejected side alone too long: the pair is.
  DataReadOptions short_pairs = pairs;
  short_pairs.max_length = static_cast<int64_t>(text.tokens.size());
  short_pairs.skip_too_long = true;
  const TrainingData cut =
      Read(R"({"prompt": "2+3=", "chosen": "5", "rejected": "six six six six six"})"
           "\n"
           R"({"prompt": "2+3=", "chosen": "5", "rejected": "5"})"
           "\n",
           short_pairs);
  EXPECT_EQ(cut.examples.size(), 1u);
  EXPECT_EQ(cut.skipped_too_long, 1);
  EXPECT_THAT(ErrorOf([&] {
                Read(R"({"prompt": "2+3=", "chosen": 5, "rejected": "6"})"
                     "\n",
                     pairs);
              }),
              HasSubstr(":1: \"chosen\": expected a string (with \"prompt\") or a list of "
                        "messages, got number"));
}

TEST_F(Data, BadLinesAreNamedByFileAndLine) {
  const std::string path = Write("bad.jsonl", R"({"text": "ok"})"
                                              "\n"
                                              R"({"text": oops})"
                                              "\n");
  EXPECT_THAT(ErrorOf([&] { ReadJsonlExamples(path, tok_, {}); }),
              HasSubstr(path + ":2: not valid JSON"));
  EXPECT_THAT(ErrorOf([&] {
                Read(R"({"prompt": "a"})"
                     "\n");
              }),
              HasSubstr(":1: missing \"completion\""));
  EXPECT_THAT(ErrorOf([&] {
                Read(R"({"text": 5})"
                     "\n");
              }),
              HasSubstr(":1: \"text\" must be a string, got number"));
  EXPECT_THAT(ErrorOf([&] {
                Read(R"({"messages": [{"role": "user", "content": "hi"}]})"
                     "\n");
              }),
              HasSubstr(":1: no model (assistant) turn to learn"));
  EXPECT_THAT(ErrorOf([&] {
                Read(R"({"messages": [{"role": "model", "content": "hi"}]})"
                     "\n");
              }),
              HasSubstr(":1: chat: message 0 is a model turn where a user turn must come"));
  EXPECT_THAT(ErrorOf([&] {
                Read(R"({"messages": [{"role": "user"}]})"
                     "\n");
              }),
              HasSubstr(":1: messages[0]: missing \"content\""));
  EXPECT_THAT(ErrorOf([&] {
                Read(R"({"input": "a", "target": "b"})"
                     "\n");
              }),
              HasSubstr("T5Gemma"));
  EXPECT_THAT(ErrorOf([&] {
                Read(R"({"title": "a"})"
                     "\n");
              }),
              HasSubstr("expected {\"text\"}, {\"prompt\", \"completion\"} or {\"messages\"}"));
  EXPECT_THAT(ErrorOf([&] { Read("[1, 2]\n"); }),
              HasSubstr(":1: expected a JSON object, got array"));
  EXPECT_THAT(ErrorOf([&] { Read("\n\n"); }), HasSubstr(": no examples (2 lines"));
  EXPECT_THAT(ErrorOf([&] { ReadJsonlExamples((dir_ / "absent.jsonl").string(), tok_, {}); }),
              HasSubstr("absent.jsonl: cannot open the data file"));
}

TEST_F(Data, LongOrInvalidExamplesFailOrAreSkippedAndCounted) {
  const std::string text = R"({"text": "one two three four five six seven eight nine ten"})"
                           "\n"
                           R"({"text": "hi"})"
                           "\n"
                           "not json\n";
  DataReadOptions strict;
  strict.max_length = 6;
  strict.skip_invalid = true;
  const size_t n = tok_.Encode("one two three four five six seven eight nine ten", true).size() + 1;
  EXPECT_THAT(ErrorOf([&] { Read(text, strict); }),
              HasSubstr(StrCat(":1: ", n, " tokens, more than data.max_length (6)")));
  DataReadOptions lenient = strict;
  lenient.skip_too_long = true;
  const TrainingData d = Read(text, lenient);
  EXPECT_EQ(d.examples.size(), 1u);
  EXPECT_EQ(d.examples[0].line, 2);
  EXPECT_EQ(d.skipped_too_long, 1);
  EXPECT_EQ(d.skipped_invalid, 1);
  lenient.skip_invalid = false;
  EXPECT_THAT(ErrorOf([&] { Read(text, lenient); }), HasSubstr(":3: not valid JSON"));
}

TEST(SeededOrder, IsAPermutationFixedAcrossPlatforms) {
  const std::vector<int64_t> p = SeededPermutation(10, 1);
  std::vector<int64_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> identity(10);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_EQ(sorted, identity);
  EXPECT_NE(p, identity);
  EXPECT_NE(p, SeededPermutation(10, 2));
  // Pinned: a run resumed on another machine must read the same order (SplitMix64 and
  // Fisher-Yates are written out, not taken from the standard library).
  EXPECT_EQ(p, SeededPermutation(10, 1));
  const std::vector<int64_t> pinned = {9, 0, 1, 4, 8, 2, 3, 7, 6, 5};  // a Python transcription
  EXPECT_EQ(p, pinned) << "the seeded order changed: resumed runs would read other data";
}

std::vector<TrainingExample> Examples(const std::vector<int>& lengths) {
  std::vector<TrainingExample> out;
  for (size_t i = 0; i < lengths.size(); ++i) {
    TrainingExample e;
    e.tokens.assign(static_cast<size_t>(lengths[i]), static_cast<int32_t>(i));
    e.learn.assign(e.tokens.size(), 1);
    e.line = static_cast<int64_t>(i + 1);
    out.push_back(e);
  }
  return out;
}

TEST(HeldOut, SplitIsSeededAndKeepsFileOrder) {
  const SplitData a = SplitHeldOut(Examples({2, 2, 2, 2, 2, 2, 2, 2, 2, 2}), 0.2, 7);
  const SplitData b = SplitHeldOut(Examples({2, 2, 2, 2, 2, 2, 2, 2, 2, 2}), 0.2, 7);
  ASSERT_EQ(a.held_out.size(), 2u);
  ASSERT_EQ(a.train.size(), 8u);
  for (size_t i = 0; i < 2; ++i) EXPECT_EQ(a.held_out[i].line, b.held_out[i].line);
  for (size_t i = 1; i < a.train.size(); ++i) EXPECT_LT(a.train[i - 1].line, a.train[i].line);
  EXPECT_EQ(SplitHeldOut(Examples({2, 2, 2}), 0.01, 1).held_out.size(), 1u);  // at least one
  EXPECT_EQ(SplitHeldOut(Examples({2, 2, 2}), 0.0, 1).held_out.size(), 0u);
  EXPECT_THAT(ErrorOf([] { SplitHeldOut(Examples({2}), 0.5, 1); }),
              HasSubstr("holding out 1 of 1 examples leaves none to train on"));
}

TEST(Stream, EpochsShuffleDifferentlyAndCoverEveryExample) {
  const std::vector<TrainingExample> ex = Examples({2, 2, 2, 2, 2, 2});
  BatchStream s(ex, 3, true, false, 16);
  std::vector<int64_t> epoch0, epoch1;
  for (int i = 0; i < 6; ++i) epoch0.push_back(s.NextRow().front()->line);
  for (int i = 0; i < 6; ++i) epoch1.push_back(s.NextRow().front()->line);
  EXPECT_NE(epoch0, epoch1);
  std::sort(epoch0.begin(), epoch0.end());
  EXPECT_EQ(epoch0, (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));
  BatchStream plain(ex, 3, false, false, 16);
  for (int64_t i = 1; i <= 8; ++i) EXPECT_EQ(plain.NextRow().front()->line, (i - 1) % 6 + 1);
}

TEST(Stream, PackingFillsRowsWithWholeExamplesWithinAnEpoch) {
  const std::vector<TrainingExample> ex = Examples({3, 4, 5, 2, 6});
  BatchStream s(ex, 0, false, true, 8);
  std::vector<std::vector<int64_t>> rows;
  for (int i = 0; i < 4; ++i) {
    std::vector<int64_t> row;
    for (const TrainingExample* e : s.NextRow()) row.push_back(e->line);
    rows.push_back(row);
  }
  // 3+4 fit in 8; 5+2 fit; 6 alone (the epoch ends); the next epoch starts a new row.
  EXPECT_EQ(rows, (std::vector<std::vector<int64_t>>{{1, 2}, {3, 4}, {5}, {1, 2}}));
  const PackedBatch b = PackExamples({&ex[0], &ex[1]});
  EXPECT_EQ(b.positions, (std::vector<int32_t>{0, 1, 2, 0, 1, 2, 3}));
  EXPECT_EQ(b.sequence_start, (std::vector<int64_t>{0, 0, 0, 3, 3, 3, 3}));
  EXPECT_EQ(b.targets[2], -1);  // no target across the document boundary
}

TEST(Stream, AResumedCursorContinuesTheSameOrder) {
  const std::vector<TrainingExample> ex = Examples({2, 3, 2, 4, 2, 3, 2});
  BatchStream whole(ex, 11, true, true, 6);
  for (int i = 0; i < 5; ++i) whole.NextRow();
  BatchStream resumed(ex, 11, true, true, 6, whole.cursor());
  for (int i = 0; i < 12; ++i) {
    const auto a = whole.NextRow(), b = resumed.NextRow();
    ASSERT_EQ(a, b) << "row " << i;
  }
}

}  // namespace
}  // namespace gemmapod
