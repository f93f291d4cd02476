// Tokenizer: Gemma's SentencePiece model (the tokenizer.model file of every Gemma checkpoint).
// BOS is prepended when asked, EOS never appended, as the references encode prompts. Special ids
// differ between Gemma generations (<start_of_turn> is 106 in Gemma 1/2, 105 in Gemma 3), so
// callers look pieces up with PieceId instead of hard-coding them. The SentencePiece headers stay
// inside the .cc files.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace gemmapod {

class Tokenizer {
 public:
  // Errors name the path (or `origin`) when the model cannot be read.
  static Tokenizer FromFile(const std::string& path);
  // A model held in memory, e.g. embedded in a checkpoint; `origin` names it in messages.
  static Tokenizer FromBytes(std::string serialized, std::string origin);

  // As SentencePiece (and Hugging Face) encode: user-defined pieces such as "<start_of_turn>" are
  // matched wherever the text spells them.
  std::vector<int32_t> Encode(std::string_view text, bool add_bos) const;
  // Encodes text that must not produce any of `literal_pieces` (e.g. the chat markers in what a
  // user typed): where the text spells one, it becomes the ordinary pieces of those characters,
  // as if the marker were not in the vocabulary. Without such spellings this equals Encode.
  std::vector<int32_t> EncodeLiteral(std::string_view text,
                                     const std::vector<std::string>& literal_pieces) const;
  // Ids outside the vocabulary are an error naming the id. Control pieces (<bos>, <eos>, <pad>)
  // decode to nothing; user-defined pieces (<start_of_turn>) to their spelling.
  std::string Decode(std::span<const int32_t> ids) const;

  // One token as the text it stands for, for reports such as log-probabilities: "▁" is a space, a
  // byte piece is its byte (one byte of a character spelled over several tokens), a control
  // piece is its spelling ("<eos>"). Ids outside the vocabulary are an error naming the id.
  std::string TokenText(int32_t id) const;

  int32_t bos_id() const;
  int32_t eos_id() const;
  int32_t pad_id() const;  // -1 when the model has none
  int vocab_size() const;
  // The id of the piece spelled exactly so (e.g. "<start_of_turn>"); nullopt when the vocabulary
  // has no such piece (SentencePiece's unk answer is not passed on, except for "<unk>" itself).
  std::optional<int32_t> PieceId(std::string_view piece) const;
  // Where the model came from (a path, or what FromBytes was told), for messages.
  const std::string& origin() const;
  // The model's bytes, to embed in a checkpoint.
  const std::string& serialized() const;

 private:
  friend class TextStream;
  struct Impl;
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  // True when SentencePiece decodes `id` as its own text, independent of its neighbours (not a
  // byte piece, which joins the bytes beside it, nor a control piece, which is invisible).
  bool DecodesOnItsOwn(int32_t id) const;

  std::shared_ptr<const Impl> impl_;  // immutable once loaded, so copies share it
};

// Streaming detokenizer: Push returns the text that became final with this token. Text is held
// back while it ends in an incomplete UTF-8 character (byte-fallback pieces spell one character
// over several tokens); what Push and Flush return adds up to Decode(all ids), never more or less.
// Only a short window of recent ids is decoded per Push, so a long stream costs linear time.
class TextStream {
 public:
  explicit TextStream(Tokenizer tokenizer) : tokenizer_(std::move(tokenizer)) {}
  std::string Push(int32_t id);
  // Ends the stream: returns the rest, an incomplete character as Decode renders it (U+FFFD).
  // Ids pushed afterwards begin a new stream.
  std::string Flush();

 private:
  Tokenizer tokenizer_;  // a shared handle: the model lives as long as the stream
  // The window of ids decoded per Push: the ids whose text is not all out yet, after (once the
  // stream has begun) one context id whose text is. Decoding the context along keeps
  // SentencePiece's first-piece rule (a dummy-prefix model drops the first piece's leading space)
  // away from the tokens that follow it.
  std::vector<int32_t> ids_;
  size_t emitted_ = 0;  // bytes of Decode(ids_) already returned (the context's text included)
};

}  // namespace gemmapod
