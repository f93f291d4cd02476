#include "runtime/tokenizer/model_proto_edit.h"

#include <algorithm>
#include <cstdint>

#include "runtime/error.h"

namespace gemmapod {
namespace {

// Field numbers and enum values of sentencepiece_model.proto.
constexpr uint64_t kModelPiecesField = 1;  // ModelProto.pieces (repeated SentencePiece)
constexpr uint64_t kPieceTextField = 1;    // SentencePiece.piece
constexpr uint64_t kPieceTypeField = 3;    // SentencePiece.type
constexpr uint8_t kControlType = 3;
constexpr uint8_t kUserDefinedType = 4;

enum WireType : uint64_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

// A cursor over one protobuf message; every read is bounds-checked because the bytes may come
// from any file.
class WireReader {
 public:
  WireReader(std::string_view bytes, std::string_view origin) : bytes_(bytes), origin_(origin) {}

  bool done() const { return pos_ >= bytes_.size(); }
  size_t pos() const { return pos_; }

  uint64_t Varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      Require(1);
      const auto byte = static_cast<uint8_t>(bytes_[pos_++]);
      value |= uint64_t{byte & 0x7Fu} << shift;
      if (byte < 0x80) return value;
    }
    throw Error(StrCat(origin_, ": malformed SentencePiece model (varint too long)"));
  }

  std::string_view Bytes(uint64_t length) {
    Require(length);
    const std::string_view out = bytes_.substr(pos_, length);
    pos_ += length;
    return out;
  }

  // Skips a field's value of the given wire type (after its tag was read).
  void Skip(uint64_t wire_type) {
    switch (wire_type) {
      case kVarint:
        Varint();
        return;
      case kFixed64:
        Bytes(8);
        return;
      case kLengthDelimited:
        Bytes(Varint());
        return;
      case kFixed32:
        Bytes(4);
        return;
      default:
        throw Error(StrCat(origin_, ": malformed SentencePiece model (wire type ", wire_type, ")"));
    }
  }

 private:
  void Require(uint64_t n) const {
    GEMMAPOD_CHECK(n <= bytes_.size() - pos_, origin_,
                   ": malformed SentencePiece model (truncated)");
  }

  std::string_view bytes_;
  std::string_view origin_;
  size_t pos_ = 0;
};

// The offset (within `piece`) of the type's one-byte varint when the piece is user-defined and
// spelled as one of `wanted`; npos otherwise.
size_t UserDefinedTypeOffset(std::string_view piece, const std::vector<std::string>& wanted,
                             std::string_view origin) {
  WireReader in(piece, origin);
  std::string_view text;
  size_t type_offset = std::string_view::npos;
  uint64_t type = 0;
  while (!in.done()) {
    const uint64_t tag = in.Varint();
    if (tag == (kPieceTextField << 3 | kLengthDelimited)) {
      text = in.Bytes(in.Varint());
    } else if (tag == (kPieceTypeField << 3 | kVarint)) {
      type_offset = in.pos();
      type = in.Varint();
    } else {
      in.Skip(tag & 7);
    }
  }
  const bool listed = std::find(wanted.begin(), wanted.end(), text) != wanted.end();
  return listed && type == kUserDefinedType ? type_offset : std::string_view::npos;
}

}  // namespace

std::string MarkUserPiecesAsControl(std::string_view model, const std::vector<std::string>& pieces,
                                    std::string_view origin) {
  std::string out(model);
  WireReader in(model, origin);
  while (!in.done()) {
    const uint64_t tag = in.Varint();
    if (tag != (kModelPiecesField << 3 | kLengthDelimited)) {
      in.Skip(tag & 7);
      continue;
    }
    const uint64_t length = in.Varint();
    const size_t start = in.pos();
    const size_t offset = UserDefinedTypeOffset(in.Bytes(length), pieces, origin);
    // Both enum values are one-byte varints, so the edit keeps every length prefix valid.
    if (offset != std::string_view::npos) out[start + offset] = static_cast<char>(kControlType);
  }
  return out;
}

}  // namespace gemmapod
