// Tokenizer and chat template on a tiny Gemma-style SentencePiece model
// (tests/fixtures/tokenizer/tiny_gemma.model; how it was made:
// tools/golden/make_tiny_tokenizer.sh).
#include "runtime/tokenizer/tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "runtime/error.h"
#include "runtime/tokenizer/chat_template.h"

namespace gemmapod {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const char* kModel = "tests/fixtures/tokenizer/tiny_gemma.model";

std::vector<int32_t> Ids(std::initializer_list<int32_t> ids) { return ids; }

TEST(Tokenizer, EncodesAsSentencePieceDoes) {
  const Tokenizer t = Tokenizer::FromFile(kModel);
  EXPECT_EQ(t.vocab_size(), 512);
  EXPECT_EQ(t.bos_id(), 2);
  EXPECT_EQ(t.eos_id(), 1);
  EXPECT_EQ(t.pad_id(), 0);
  // Expected ids obtained once with Debian's `spm_encode --model=... --output_format=id`.
  EXPECT_EQ(t.Encode("Hello, world!", false),
            Ids({480, 432, 408, 433, 452, 284, 266, 443, 442, 511}));
  EXPECT_EQ(t.Encode("Hello, world!", true).front(), 2);
  EXPECT_EQ(t.Encode("Hello, world!", true).size(), 11u);
  EXPECT_EQ(t.Encode("Grüße aus Köln 😀", false),
            Ids({477, 436, 202, 195, 202, 166, 432, 265, 444, 439, 431,
                 503, 202, 189, 443, 437, 431, 247, 166, 159, 135}));  // byte fallback for ü, ß, ö
                                                                       // and the emoji
  EXPECT_EQ(t.Encode("12345", false), Ids({479, 483, 487, 496, 495}));  // digits split
}

TEST(Tokenizer, DecodeInvertsEncode) {
  const Tokenizer t = Tokenizer::FromFile(kModel);
  for (const char* text : {"Hello, world!", "Grüße aus Köln 😀", "int main() {  return 0; }",
                           "  three   spaces", "tabs\tand\nnewlines\n", "", "日本語"}) {
    EXPECT_EQ(t.Decode(t.Encode(text, false)), text);
  }
  EXPECT_THAT([&] { t.Decode(Ids({5, 512})); }, ::testing::Throws<Error>());
}

TEST(Tokenizer, PieceLookup) {
  const Tokenizer t = Tokenizer::FromFile(kModel);
  EXPECT_EQ(t.PieceId("<start_of_turn>"), 5);
  EXPECT_EQ(t.PieceId("<end_of_turn>"), 6);
  EXPECT_EQ(t.PieceId("<unk>"), 3);
  EXPECT_EQ(t.PieceId("<no such piece>"), std::nullopt);
}

TEST(Tokenizer, BadModelsAreNamed) {
  try {
    Tokenizer::FromFile("tests/fixtures/tokenizer/absent.model");
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("absent.model: cannot open"));
  }
  try {
    Tokenizer::FromBytes("not a protobuf", "m.h5:/files/tokenizer.model");
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("m.h5:/files/tokenizer.model: not a SentencePiece model"));
  }
}

TEST(TextStream, NeverSplitsACharacterAndAddsUpToDecode) {
  const Tokenizer t = Tokenizer::FromFile(kModel);
  const std::string text = "Köln 😀 ok 日本";
  const std::vector<int32_t> ids = t.Encode(text, false);
  TextStream stream(t);
  std::string streamed;
  for (int32_t id : ids) {
    const std::string piece = stream.Push(id);
    // Every piece is whole UTF-8: no replacement characters, no dangling lead bytes.
    EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos) << piece;
    streamed += piece;
    EXPECT_EQ(text.compare(0, streamed.size(), streamed), 0) << streamed;
  }
  streamed += stream.Flush();
  EXPECT_EQ(streamed, text);
}

TEST(ChatTemplate, RendersGemmaTurns) {
  const std::vector<ChatMessage> messages = {
      {"system", "Be brief."}, {"user", "  Hi there \n"}, {"assistant", "Hello."}, {"user", "Bye"}};
  EXPECT_EQ(RenderGemmaChat(messages, true),
            "<bos><start_of_turn>user\nBe brief.\n\nHi there<end_of_turn>\n"
            "<start_of_turn>model\nHello.<end_of_turn>\n"
            "<start_of_turn>user\nBye<end_of_turn>\n"
            "<start_of_turn>model\n");
  EXPECT_EQ(RenderGemmaChat({{"user", "x"}}, false), "<bos><start_of_turn>user\nx<end_of_turn>\n");
}

TEST(ChatTemplate, IdsUseTheControlTokensBetweenTextSegments) {
  const Tokenizer t = Tokenizer::FromFile(kModel);
  const std::vector<int32_t> ids = EncodeGemmaChat(t, {{"user", "Hello"}}, true);
  std::vector<int32_t> want = {2, 5};
  for (int32_t id : t.Encode("user\nHello", false)) want.push_back(id);
  want.push_back(6);
  for (int32_t id : t.Encode("\n", false)) want.push_back(id);
  want.push_back(5);
  for (int32_t id : t.Encode("model\n", false)) want.push_back(id);
  EXPECT_EQ(ids, want);
  // The ids decode back to the rendered text (markers are pieces of the vocabulary).
  EXPECT_EQ("<bos>" + t.Decode(std::vector<int32_t>(ids.begin() + 1, ids.end())),
            RenderGemmaChat({{"user", "Hello"}}, true));
  EXPECT_THAT(GemmaStopTokens(t), ElementsAre(1, 6));
}

TEST(ChatTemplate, RolesMustAlternateFromAUserTurn) {
  auto error_of = [](const std::vector<ChatMessage>& m) -> std::string {
    try {
      RenderGemmaChat(m, true);
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_THAT(error_of({{"model", "hi"}}), HasSubstr("message 0 is a model turn where a user"));
  EXPECT_THAT(error_of({{"user", "a"}, {"user", "b"}}), HasSubstr("message 1 is a user turn"));
  EXPECT_THAT(error_of({{"user", "a"}, {"system", "b"}}), HasSubstr("message 1: a system message"));
  EXPECT_THAT(error_of({{"tool", "a"}}), HasSubstr("unknown role 'tool'"));
  EXPECT_THAT(error_of({{"system", "only"}}), HasSubstr("no user message"));
}

}  // namespace
}  // namespace gemmapod
