// SerializeSentencePieceModel: a hand-made BPE vocabulary, loaded by the SentencePiece library
// through Tokenizer, must tokenize as its pieces, scores and types say (the real Gemma 3 vocabulary
// read from GGUF is checked against known ids in tests/models/gemma3_270m_test.cc).
#include "runtime/tokenizer/sentencepiece_builder.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>

#include "runtime/tokenizer/tokenizer.h"
#include "tests/error_of.h"

namespace gemmapod {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::string kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's spelling of a space

// <pad>=0 <eos>=1 <bos>=2 <unk>=3 <tag>=4 (user-defined), <0x00>..<0xFF> = 5..260, then
// a=261 b=262 ▁=263 ab=264 ▁ab=265 ▁a=266 c=267.
SentencePieceVocabulary Vocabulary(bool byte_fallback = true) {
  SentencePieceVocabulary v;
  auto add = [&](std::string piece, float score, PieceType type) {
    v.pieces.push_back(std::move(piece));
    v.scores.push_back(score);
    v.types.push_back(type);
  };
  add("<pad>", 0, PieceType::kControl);
  add("<eos>", 0, PieceType::kControl);
  add("<bos>", 0, PieceType::kControl);
  add("<unk>", 0, PieceType::kUnknown);
  add("<tag>", 0, PieceType::kUserDefined);
  for (int byte = 0; byte < 256; ++byte) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", byte);
    // Without byte fallback the ids stay where they are, as unused pieces.
    add(byte_fallback ? name : std::string("unused") + name, 0,
        byte_fallback ? PieceType::kByte : PieceType::kUnused);
  }
  add("a", -1, PieceType::kNormal);
  add("b", -2, PieceType::kNormal);
  add(kSpace, -3, PieceType::kNormal);
  add("ab", -4, PieceType::kNormal);  // merged before ▁a: higher score
  add(kSpace + "ab", -5, PieceType::kNormal);
  add(kSpace + "a", -6, PieceType::kNormal);
  add("c", -7, PieceType::kNormal);
  v.unk_id = 3;
  v.bos_id = 2;
  v.eos_id = 1;
  v.pad_id = 0;
  v.byte_fallback = byte_fallback;
  return v;
}

Tokenizer Load(const SentencePieceVocabulary& v) {
  return Tokenizer::FromBytes(SerializeSentencePieceModel(v, "test"), "test");
}

TEST(SentencePieceBuilder, TokenizesByScoresTypesAndByteFallback) {
  const Tokenizer t = Load(Vocabulary());
  EXPECT_EQ(t.vocab_size(), 268);
  EXPECT_EQ(t.bos_id(), 2);
  EXPECT_EQ(t.eos_id(), 1);
  EXPECT_EQ(t.pad_id(), 0);
  // No dummy prefix: the first word has no leading ▁. "ab" merges before "▁a" can form.
  EXPECT_THAT(t.Encode("ab ab", true), ElementsAre(2, 264, 265));
  EXPECT_THAT(t.Encode("a ac", false), ElementsAre(261, 266, 267));
  // The user-defined piece is matched where the text spells it.
  EXPECT_THAT(t.Encode("a<tag>b", false), ElementsAre(261, 4, 262));
  // A character outside the vocabulary falls back to its UTF-8 bytes (é = C3 A9).
  EXPECT_THAT(t.Encode("\xC3\xA9", false), ElementsAre(5 + 0xC3, 5 + 0xA9));
  // Runs of spaces are kept (no whitespace clean-up).
  EXPECT_THAT(t.Encode("a  b", false), ElementsAre(261, 263, 263, 262));
  EXPECT_EQ(t.Decode(t.Encode("ab  \xC3\xA9<tag>", false)), "ab  \xC3\xA9<tag>");
}

TEST(SentencePieceBuilder, WithoutByteFallbackUnknownCharactersAreUnk) {
  EXPECT_THAT(Load(Vocabulary(false)).Encode("a\xC3\xA9", false), ElementsAre(261, 3));
  SentencePieceVocabulary v = Vocabulary();
  v.byte_fallback = false;
  EXPECT_THAT(ErrorOf([&] { SerializeSentencePieceModel(v, "m.gguf"); }),
              HasSubstr("token 5 '<0x00>' is a byte piece, but byte fallback is off"));
}

TEST(SentencePieceBuilder, DummyPrefixWhenAsked) {
  SentencePieceVocabulary v = Vocabulary();
  v.add_dummy_prefix = true;
  EXPECT_THAT(Load(v).Encode("ab", false), ElementsAre(265));
}

TEST(SentencePieceBuilder, RefusesWhatSentencePieceWouldGetWrong) {
  SentencePieceVocabulary v = Vocabulary();
  v.scores.pop_back();
  EXPECT_THAT(ErrorOf([&] { SerializeSentencePieceModel(v, "m.gguf"); }),
              HasSubstr("m.gguf: the tokenizer has 268 pieces but 267 scores"));
  v = Vocabulary();
  v.pieces[267] = "a";
  EXPECT_THAT(ErrorOf([&] { SerializeSentencePieceModel(v, "m.gguf"); }),
              HasSubstr("token 267 'a' repeats token 261"));
  v = Vocabulary();
  v.types[3] = PieceType::kControl;
  EXPECT_THAT(ErrorOf([&] { SerializeSentencePieceModel(v, "m.gguf"); }),
              HasSubstr("the unknown id 3 ('<unk>') is not of the unknown type"));
  v = Vocabulary();
  v.types[5 + 0x41] = PieceType::kNormal;
  EXPECT_THAT(ErrorOf([&] { SerializeSentencePieceModel(v, "m.gguf"); }),
              HasSubstr("byte fallback needs the byte piece <0x41>"));
  v = Vocabulary();
  v.bos_id = 268;
  EXPECT_THAT(ErrorOf([&] { SerializeSentencePieceModel(v, "m.gguf"); }),
              HasSubstr("the BOS id 268 is outside the vocabulary of 268"));
  v = Vocabulary();
  v.types[10] = static_cast<PieceType>(7);
  EXPECT_THAT(ErrorOf([&] { SerializeSentencePieceModel(v, "m.gguf"); }),
              HasSubstr("token 10 has type 7"));
  v = Vocabulary();
  v.pieces[261].clear();
  EXPECT_THAT(ErrorOf([&] { SerializeSentencePieceModel(v, "m.gguf"); }),
              HasSubstr("token 261 is empty"));
}

}  // namespace
}  // namespace gemmapod
