// Builds a serialized SentencePiece ModelProto from a vocabulary held elsewhere (a GGUF file's
// tokenizer.ggml.* arrays), so that the SentencePiece library itself tokenizes: no second
// tokenizer implementation to keep in step with the reference. Written on the protobuf wire format
// (Debian ships no sentencepiece_model.pb.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gemmapod {

// sentencepiece_model.proto's SentencePiece.Type values (GGUF's token_type uses the same numbers).
enum class PieceType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct SentencePieceVocabulary {
  enum class Algorithm : int32_t { kUnigram = 1, kBpe = 2 };

  Algorithm algorithm = Algorithm::kBpe;
  std::vector<std::string> pieces;  // id -> piece, spaces spelled U+2581 as SentencePiece stores
  std::vector<float> scores;        // BPE: merge priority (higher merges first)
  std::vector<PieceType> types;
  int32_t unk_id = 0;
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t pad_id = -1;
  bool byte_fallback = false;     // unknown characters become <0xNN> byte pieces
  bool add_dummy_prefix = false;  // prepend a space to the text (Gemma: no)
  bool remove_extra_whitespaces = false;
  bool split_digits = false;  // a training option, kept for a faithful model file
};

// The ModelProto bytes, loadable by Tokenizer::FromBytes. Checks what SentencePiece would reject
// or silently get wrong, naming `origin` and the offending id: mismatched array lengths, empty or
// duplicate pieces, special ids out of range, an unknown id whose piece is not of type kUnknown,
// byte fallback without all 256 <0xNN> pieces, byte pieces without byte fallback.
std::string SerializeSentencePieceModel(const SentencePieceVocabulary& vocabulary,
                                        const std::string& origin);

}  // namespace gemmapod
