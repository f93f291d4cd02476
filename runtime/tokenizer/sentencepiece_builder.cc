#include "runtime/tokenizer/sentencepiece_builder.h"

#include <cstdio>
#include <cstring>
#include <unordered_map>

#include "runtime/error.h"

namespace gemmapod {
namespace {

// Field numbers of sentencepiece_model.proto.
namespace field {
constexpr uint32_t kModelPieces = 1;
constexpr uint32_t kModelTrainerSpec = 2;
constexpr uint32_t kModelNormalizerSpec = 3;
constexpr uint32_t kPiecePiece = 1;
constexpr uint32_t kPieceScore = 2;
constexpr uint32_t kPieceType = 3;
constexpr uint32_t kTrainerModelType = 3;
constexpr uint32_t kTrainerVocabSize = 4;
constexpr uint32_t kTrainerSplitDigits = 25;
constexpr uint32_t kTrainerAllowWhitespaceOnlyPieces = 26;
constexpr uint32_t kTrainerByteFallback = 35;
constexpr uint32_t kTrainerUnkId = 40;
constexpr uint32_t kTrainerBosId = 41;
constexpr uint32_t kTrainerEosId = 42;
constexpr uint32_t kTrainerPadId = 43;
constexpr uint32_t kTrainerUnkPiece = 45;
constexpr uint32_t kTrainerBosPiece = 46;
constexpr uint32_t kTrainerEosPiece = 47;
constexpr uint32_t kTrainerPadPiece = 48;
constexpr uint32_t kNormalizerName = 1;
constexpr uint32_t kNormalizerAddDummyPrefix = 3;
constexpr uint32_t kNormalizerRemoveExtraWhitespaces = 4;
constexpr uint32_t kNormalizerEscapeWhitespaces = 5;
}  // namespace field

enum WireType : uint32_t { kVarint = 0, kLengthDelimited = 2, kFixed32 = 5 };

// Appends protobuf fields to a byte string.
class WireWriter {
 public:
  void Varint(uint32_t field_number, uint64_t value) {
    Tag(field_number, kVarint);
    Raw(value);
  }
  // int32 fields encode negative values as ten-byte varints (sign-extended), as protobuf does.
  void Int32(uint32_t field_number, int32_t value) {
    Varint(field_number, static_cast<uint64_t>(static_cast<int64_t>(value)));
  }
  void Bool(uint32_t field_number, bool value) { Varint(field_number, value ? 1 : 0); }
  void Float(uint32_t field_number, float value) {
    Tag(field_number, kFixed32);
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    for (int i = 0; i < 4; ++i) out_.push_back(static_cast<char>((bits >> (8 * i)) & 0xFF));
  }
  void Bytes(uint32_t field_number, const std::string& bytes) {
    Tag(field_number, kLengthDelimited);
    Raw(bytes.size());
    out_ += bytes;
  }
  std::string& str() { return out_; }

 private:
  void Tag(uint32_t field_number, WireType type) { Raw((uint64_t{field_number} << 3) | type); }
  void Raw(uint64_t value) {
    while (value >= 0x80) {
      out_.push_back(static_cast<char>((value & 0x7F) | 0x80));
      value >>= 7;
    }
    out_.push_back(static_cast<char>(value));
  }
  std::string out_;
};

std::string BytePiece(int byte) {
  char name[8];
  std::snprintf(name, sizeof name, "<0x%02X>", byte);
  return name;
}

void Check(const SentencePieceVocabulary& v, const std::string& origin) {
  const size_t n = v.pieces.size();
  GEMMAPOD_CHECK(n > 0, origin, ": the tokenizer vocabulary is empty");
  GEMMAPOD_CHECK(v.scores.size() == n && v.types.size() == n, origin, ": the tokenizer has ", n,
                 " pieces but ", v.scores.size(), " scores and ", v.types.size(), " types");
  std::unordered_map<std::string, size_t> seen;
  seen.reserve(n);
  for (size_t id = 0; id < n; ++id) {
    const auto type = static_cast<int32_t>(v.types[id]);
    GEMMAPOD_CHECK(type >= 1 && type <= 6, origin, ": token ", id, " has type ", type,
                   " (SentencePiece types are 1 to 6)");
    GEMMAPOD_CHECK(!v.pieces[id].empty(), origin, ": token ", id, " is empty");
    const auto [it, inserted] = seen.emplace(v.pieces[id], id);
    GEMMAPOD_CHECK(inserted, origin, ": token ", id, " '", v.pieces[id], "' repeats token ",
                   it->second);
  }
  auto check_id = [&](const char* what, int32_t id, bool optional) {
    if (optional && id < 0) return;
    GEMMAPOD_CHECK(id >= 0 && static_cast<size_t>(id) < n, origin, ": the ", what, " id ", id,
                   " is outside the vocabulary of ", n);
  };
  check_id("unknown", v.unk_id, false);
  check_id("BOS", v.bos_id, true);
  check_id("EOS", v.eos_id, true);
  check_id("padding", v.pad_id, true);
  GEMMAPOD_CHECK(v.types[static_cast<size_t>(v.unk_id)] == PieceType::kUnknown, origin,
                 ": the unknown id ", v.unk_id, " ('", v.pieces[static_cast<size_t>(v.unk_id)],
                 "') is not of the unknown type");
  if (!v.byte_fallback) {
    for (size_t id = 0; id < n; ++id) {
      GEMMAPOD_CHECK(v.types[id] != PieceType::kByte, origin, ": token ", id, " '", v.pieces[id],
                     "' is a byte piece, but byte fallback is off");
    }
  } else {
    for (int byte = 0; byte < 256; ++byte) {
      const auto it = seen.find(BytePiece(byte));
      GEMMAPOD_CHECK(it != seen.end() && v.types[it->second] == PieceType::kByte, origin,
                     ": byte fallback needs the byte piece ", BytePiece(byte));
    }
  }
}

}  // namespace

std::string SerializeSentencePieceModel(const SentencePieceVocabulary& v,
                                        const std::string& origin) {
  Check(v, origin);
  WireWriter model;
  for (size_t id = 0; id < v.pieces.size(); ++id) {
    WireWriter piece;
    piece.Bytes(field::kPiecePiece, v.pieces[id]);
    piece.Float(field::kPieceScore, v.scores[id]);
    piece.Varint(field::kPieceType, static_cast<uint64_t>(v.types[id]));
    model.Bytes(field::kModelPieces, piece.str());
  }

  WireWriter trainer;
  trainer.Varint(field::kTrainerModelType, static_cast<uint64_t>(v.algorithm));
  trainer.Int32(field::kTrainerVocabSize, static_cast<int32_t>(v.pieces.size()));
  trainer.Bool(field::kTrainerSplitDigits, v.split_digits);
  // Gemma's vocabulary holds runs of spaces as pieces of their own.
  trainer.Bool(field::kTrainerAllowWhitespaceOnlyPieces, true);
  trainer.Bool(field::kTrainerByteFallback, v.byte_fallback);
  trainer.Int32(field::kTrainerUnkId, v.unk_id);
  trainer.Int32(field::kTrainerBosId, v.bos_id);
  trainer.Int32(field::kTrainerEosId, v.eos_id);
  trainer.Int32(field::kTrainerPadId, v.pad_id);
  // SentencePiece finds its special ids by these spellings, not by the ids above.
  auto piece_of = [&](int32_t id) {
    return id < 0 ? std::string() : v.pieces[static_cast<size_t>(id)];
  };
  trainer.Bytes(field::kTrainerUnkPiece, piece_of(v.unk_id));
  if (v.bos_id >= 0) trainer.Bytes(field::kTrainerBosPiece, piece_of(v.bos_id));
  if (v.eos_id >= 0) trainer.Bytes(field::kTrainerEosPiece, piece_of(v.eos_id));
  if (v.pad_id >= 0) trainer.Bytes(field::kTrainerPadPiece, piece_of(v.pad_id));
  model.Bytes(field::kModelTrainerSpec, trainer.str());

  // No precompiled character map: the text is used as given (the "identity" rule Gemma uses).
  WireWriter normalizer;
  normalizer.Bytes(field::kNormalizerName, "identity");
  normalizer.Bool(field::kNormalizerAddDummyPrefix, v.add_dummy_prefix);
  normalizer.Bool(field::kNormalizerRemoveExtraWhitespaces, v.remove_extra_whitespaces);
  normalizer.Bool(field::kNormalizerEscapeWhitespaces, true);
  model.Bytes(field::kModelNormalizerSpec, normalizer.str());
  return std::move(model.str());
}

}  // namespace gemmapod
