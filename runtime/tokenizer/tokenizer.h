// Tokenizer: Gemma's SentencePiece model (the tokenizer.model file of every Gemma checkpoint).
// BOS is prepended when asked, EOS never appended, as the references encode prompts. The
// SentencePiece headers stay inside tokenizer.cc.
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

  std::vector<int32_t> Encode(std::string_view text, bool add_bos) const;
  // Ids outside the vocabulary are an error naming the id.
  std::string Decode(std::span<const int32_t> ids) const;

  int32_t bos_id() const;
  int32_t eos_id() const;
  int32_t pad_id() const;
  int vocab_size() const;
  // The id of a piece spelled exactly so (e.g. "<start_of_turn>"); nullopt when absent.
  std::optional<int32_t> PieceId(std::string_view piece) const;
  const std::string& origin() const;
  // The model's bytes, to embed in a checkpoint.
  const std::string& serialized() const;

 private:
  struct Impl;
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;  // immutable once loaded, so copies share it
};

// Streaming detokenizer: Push returns the text that became final with this token. Text is held
// back while it ends in an incomplete UTF-8 character (byte-fallback pieces spell one character
// over several tokens); what Push and Flush return adds up to Decode(all ids).
class TextStream {
 public:
  explicit TextStream(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  std::string Push(int32_t id);
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  std::vector<int32_t> ids_;
  size_t emitted_ = 0;  // bytes of Decode(ids_) already returned
};

}  // namespace gemmapod
