// Tokenizer, streaming detokenizer and model edits on a tiny Gemma-style SentencePiece model
// (tests/fixtures/tokenizer/tiny_gemma.model; how it was made:
// tools/golden/make_tiny_tokenizer.sh): <pad>=0 <eos>=1 <bos>=2 <unk>=3, user-defined <mask>=4
// <start_of_turn>=5 <end_of_turn>=6, the byte pieces <0x00>..<0xFF> at 7..262, then BPE merges; no
// dummy prefix.
#include "runtime/tokenizer/tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>

#include "runtime/error.h"
#include "runtime/tokenizer/model_proto_edit.h"
#include "tests/error_of.h"

namespace gemmapod {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

const char* kModel = "tests/fixtures/tokenizer/tiny_gemma.model";
const char* kReplacement = "\xEF\xBF\xBD";  // U+FFFD, what Decode writes for incomplete bytes

std::vector<int32_t> Ids(std::initializer_list<int32_t> ids) { return ids; }

TEST(Tokenizer, SpecialIdsComeFromTheModel) {
  const Tokenizer t = Tokenizer::FromFile(kModel);
  EXPECT_EQ(t.vocab_size(), 512);
  EXPECT_EQ(t.bos_id(), 2);
  EXPECT_EQ(t.eos_id(), 1);
  EXPECT_EQ(t.pad_id(), 0);
}

// Every expected id list below was obtained once with Debian's
// `spm_encode --model=tests/fixtures/tokenizer/tiny_gemma.model --output_format=id`.
TEST(Tokenizer, EncodesAsSpmEncodeDoes) {
  const Tokenizer t = Tokenizer::FromFile(kModel);
  EXPECT_EQ(t.Encode("Hello, world!", false),
            Ids({480, 432, 408, 433, 452, 284, 266, 443, 442, 511}));
  // Byte fallback for ü, ß, ö and the emoji (<0xF0> <0x9F> <0x98> <0x80> = ids 247 166 159 135).
  EXPECT_EQ(t.Encode("Grüße aus Köln 😀", false),
            Ids({477, 436, 202, 195, 202, 166, 432, 265, 444, 439, 431,
                 503, 202, 189, 443, 437, 431, 247, 166, 159, 135}));
  EXPECT_EQ(t.Encode("12345", false), Ids({479, 483, 487, 496, 495}));  // digits split
  EXPECT_EQ(t.Encode("int x = 42;  // ok", false),
            Ids({270, 434, 431, 472, 431, 488, 431, 496, 483, 490, 263, 486, 486, 275, 458}));
  EXPECT_EQ(t.Encode("  two  spaces", false), Ids({263, 378, 433, 263, 439, 447, 438, 302, 439}));
  // SentencePiece matches user-defined pieces wherever the text spells them.
  EXPECT_EQ(t.Encode("a<start_of_turn>b", false), Ids({438, 5, 450}));
}

TEST(Tokenizer, BosIsPrependedOnlyWhenAskedAndEosNever) {
  const Tokenizer t = Tokenizer::FromFile(kModel);
  const std::vector<int32_t> plain = t.Encode("Hello", false);
  std::vector<int32_t> with_bos = {2};
  with_bos.insert(with_bos.end(), plain.begin(), plain.end());
  EXPECT_EQ(t.Encode("Hello", true), with_bos);
  EXPECT_THAT(plain, Not(Contains(2)));
  EXPECT_THAT(t.Encode("Hello", true), Not(Contains(1)));
  EXPECT_EQ(t.Encode("", true), Ids({2}));
  EXPECT_EQ(t.Encode("", false), Ids({}));
  // Control pieces decode to nothing.
  EXPECT_EQ(t.Decode(with_bos), "Hello");
  EXPECT_EQ(t.Decode(Ids({2, 1, 0})), "");
}

TEST(Tokenizer, DecodeInvertsEncode) {
  const Tokenizer t = Tokenizer::FromFile(kModel);
  for (const char* text :
       {"Hello, world!", "Grüße aus Köln 😀", "👍🏽 🇩🇪 emoji sequences",
        "int main() {\n  return 0;\n}\n", "  three   spaces   ", "tabs\tand\nnewlines\n\n\n",
        "3.14159 and 2024-01-01: 1,000,000", "", "日本語のテキスト", "\x01 control \x7f bytes"}) {
    EXPECT_EQ(t.Decode(t.Encode(text, false)), text);
    EXPECT_EQ(t.Decode(t.Encode(text, true)), text);
  }
}

TEST(Tokenizer, DecodeNamesAnIdOutsideTheVocabulary) {
  const Tokenizer t = Tokenizer::FromFile(kModel);
  EXPECT_THAT(ErrorOf([&] {
                t.Decode(Ids({5, 512}));
              }),
              HasSubstr("token id 512 (position 1) is outside the vocabulary of 512"));
  EXPECT_THAT(ErrorOf([&] { t.Decode(Ids({-1})); }), HasSubstr("token id -1"));
}

TEST(Tokenizer, PieceLookup) {
  const Tokenizer t = Tokenizer::FromFile(kModel);
  EXPECT_EQ(t.PieceId("<start_of_turn>"), 5);
  EXPECT_EQ(t.PieceId("<end_of_turn>"), 6);
  EXPECT_EQ(t.PieceId("<bos>"), 2);
  EXPECT_EQ(t.PieceId("<0x41>"), 7 + 0x41);
  EXPECT_EQ(t.PieceId("<unk>"), 3);
  EXPECT_EQ(t.PieceId("<no such piece>"), std::nullopt);
  EXPECT_EQ(t.PieceId(""), std::nullopt);
}

TEST(Tokenizer, BadModelsAreNamed) {
  EXPECT_THAT(ErrorOf([] { Tokenizer::FromFile("tests/fixtures/tokenizer/absent.model"); }),
              HasSubstr("absent.model: cannot open"));
  EXPECT_THAT(
      ErrorOf([] { Tokenizer::FromBytes("not a protobuf", "m.h5:/files/tokenizer.model"); }),
      HasSubstr("m.h5:/files/tokenizer.model: not a SentencePiece model"));
}

TEST(Tokenizer, FromBytesAndCopiesShareTheModel) {
  const Tokenizer from_file = Tokenizer::FromFile(kModel);
  const Tokenizer from_bytes = Tokenizer::FromBytes(from_file.serialized(), "embedded");
  EXPECT_EQ(from_bytes.origin(), "embedded");
  EXPECT_EQ(from_bytes.Encode("Köln", true), from_file.Encode("Köln", true));
  Tokenizer copy = from_bytes;
  EXPECT_EQ(copy.serialized(), from_file.serialized());
  EXPECT_EQ(copy.Encode("Hello", false), from_file.Encode("Hello", false));
}

TEST(Tokenizer, EncodeLiteralSpellsMarkersAsText) {
  const Tokenizer t = Tokenizer::FromFile(kModel);
  const std::vector<std::string> markers = {"<start_of_turn>", "<end_of_turn>"};
  const std::string text = "a<start_of_turn>b <end_of_turn> <mask>";
  const std::vector<int32_t> ids = t.EncodeLiteral(text, markers);
  EXPECT_THAT(ids, Not(Contains(5)));
  EXPECT_THAT(ids, Not(Contains(6)));
  EXPECT_THAT(ids, Contains(4));  // <mask> was not listed, so it is still matched
  EXPECT_EQ(t.Decode(ids), text);
  // Text that spells no marker is encoded exactly as Encode does.
  EXPECT_EQ(t.EncodeLiteral("Grüße <start_of", markers), t.Encode("Grüße <start_of", false));
  // The cached literal model is reused and leaves the ordinary one alone.
  EXPECT_EQ(t.EncodeLiteral(text, markers), ids);
  EXPECT_EQ(t.Encode("<start_of_turn>", false), Ids({5}));
}

TEST(ModelProtoEdit, ListedUserPiecesBecomeControlPieces) {
  const Tokenizer t = Tokenizer::FromFile(kModel);
  const std::string edited =
      MarkUserPiecesAsControl(t.serialized(), {"<start_of_turn>", "<bos>", "absent"}, "test");
  ASSERT_EQ(edited.size(), t.serialized().size());
  EXPECT_NE(edited, t.serialized());
  const Tokenizer e = Tokenizer::FromBytes(edited, "edited");
  EXPECT_EQ(e.vocab_size(), 512);
  EXPECT_EQ(e.PieceId("<start_of_turn>"), 5);                          // ids unchanged
  EXPECT_THAT(e.Encode("x<start_of_turn>", false), Not(Contains(5)));  // no longer matched
  EXPECT_EQ(e.Encode("x<end_of_turn>", false), t.Encode("x<end_of_turn>", false));
  EXPECT_EQ(e.Decode(Ids({5})), "");  // a control piece now: invisible
  // Nothing listed that is user-defined: the bytes stay as they were.
  EXPECT_EQ(MarkUserPiecesAsControl(t.serialized(), {"<eos>", "hello"}, "test"), t.serialized());
}

TEST(ModelProtoEdit, MalformedModelsAreNamed) {
  EXPECT_THAT(ErrorOf([] { MarkUserPiecesAsControl("\x0a\x7f", {"x"}, "broken.model"); }),
              HasSubstr("broken.model: malformed SentencePiece model"));
  EXPECT_THAT(ErrorOf([] { MarkUserPiecesAsControl("\x0b", {"x"}, "odd.model"); }),
              HasSubstr("odd.model: malformed SentencePiece model (wire type 3)"));
}

// What a stream returns, piece by piece, for `ids` (with Flush's rest as the last piece).
std::vector<std::string> Stream(const Tokenizer& t, std::span<const int32_t> ids) {
  TextStream stream(t);
  std::vector<std::string> pieces;
  for (int32_t id : ids) pieces.push_back(stream.Push(id));
  pieces.push_back(stream.Flush());
  return pieces;
}

std::string Join(const std::vector<std::string>& pieces) {
  std::string out;
  for (const std::string& p : pieces) out += p;
  return out;
}

TEST(TextStream, ABadIdIsRefusedWithoutSpoilingTheStream) {
  const Tokenizer t = Tokenizer::FromFile(kModel);
  const std::vector<int32_t> ids = t.Encode("Hi there", false);
  TextStream stream(t);
  std::string text = stream.Push(ids.front());
  EXPECT_THROW(stream.Push(100000), Error);
  for (size_t i = 1; i < ids.size(); ++i) text += stream.Push(ids[i]);
  text += stream.Flush();
  EXPECT_EQ(text, "Hi there");
}

TEST(TextStream, EveryPrefixAddsUpToDecode) {
  const Tokenizer t = Tokenizer::FromFile(kModel);
  const std::string text = "Köln 😀😀 ok 日本 👍🏽 end";
  const std::vector<int32_t> ids = t.Encode(text, true);
  for (size_t k = 0; k <= ids.size(); ++k) {
    const std::span<const int32_t> prefix(ids.data(), k);
    const std::vector<std::string> pieces = Stream(t, prefix);
    // Neither lost nor repeated text: the pieces, Flush's rest included, are Decode(prefix)...
    EXPECT_EQ(Join(pieces), t.Decode(prefix)) << "prefix of " << k << " ids";
    // ... and what Push returned never holds half a character, so it is a prefix of the text.
    const std::string pushed = Join({pieces.begin(), pieces.end() - 1});
    EXPECT_EQ(pushed.find(kReplacement), std::string::npos) << "prefix of " << k << " ids";
    EXPECT_EQ(text.compare(0, pushed.size(), pushed), 0) << pushed;
  }
}

TEST(TextStream, TextIsReleasedAsSoonAsACharacterIsComplete) {
  const Tokenizer t = Tokenizer::FromFile(kModel);
  const std::vector<int32_t> ids = t.Encode("a😀", false);
  ASSERT_EQ(ids, Ids({438, 247, 166, 159, 135}));  // "a", then the emoji's four bytes
  EXPECT_EQ(Stream(t, ids), (std::vector<std::string>{"a", "", "", "", "😀", ""}));
}

TEST(TextStream, LongStreamsAndFlushRestart) {
  const Tokenizer t = Tokenizer::FromFile(kModel);
  std::string text;
  for (int i = 0; i < 200; ++i) text += "Line " + std::to_string(i) + ": grüße 😀\n";
  const std::vector<int32_t> ids = t.Encode(text, false);
  TextStream stream(t);
  std::string streamed;
  for (int32_t id : ids) streamed += stream.Push(id);
  streamed += stream.Flush();
  EXPECT_EQ(streamed, text);
  // After Flush the stream begins again.
  EXPECT_EQ(stream.Push(438), "a");
  // A character cut short is flushed as Decode renders it.
  EXPECT_EQ(stream.Push(247), "");
  EXPECT_EQ(stream.Flush(), kReplacement);
}

}  // namespace
}  // namespace gemmapod
