#include "runtime/tokenizer/tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "runtime/error.h"
#include "runtime/tokenizer/model_proto_edit.h"

namespace gemmapod {

using Processor = sentencepiece::SentencePieceProcessor;

struct Tokenizer::Impl {
  Processor processor;
  std::string serialized;
  std::string origin;

  // Processors for EncodeLiteral, keyed by the pieces they take literally, built on first need
  // (a second copy of the model costs memory, and most text spells no marker at all).
  mutable std::mutex literal_mutex;
  mutable std::map<std::vector<std::string>, std::shared_ptr<const Processor>> literal;
};

namespace {

std::unique_ptr<Processor> Load(std::string_view serialized, const std::string& origin) {
  auto processor = std::make_unique<Processor>();
  const auto status = processor->LoadFromSerializedProto(serialized);
  GEMMAPOD_CHECK(status.ok(), origin, ": not a SentencePiece model: ", status.ToString());
  return processor;
}

std::vector<int32_t> EncodeWith(const Processor& processor, std::string_view text,
                                const std::string& origin) {
  std::vector<int> ids;
  const auto status = processor.Encode(text, &ids);
  GEMMAPOD_CHECK(status.ok(), origin, ": cannot encode text: ", status.ToString());
  return std::vector<int32_t>(ids.begin(), ids.end());
}

}  // namespace

Tokenizer Tokenizer::FromFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  GEMMAPOD_CHECK(in.good(), path, ": cannot open the tokenizer model");
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return FromBytes(bytes.str(), path);
}

Tokenizer Tokenizer::FromBytes(std::string serialized, std::string origin) {
  auto impl = std::make_shared<Impl>();
  const auto status = impl->processor.LoadFromSerializedProto(serialized);
  GEMMAPOD_CHECK(status.ok(), origin, ": not a SentencePiece model: ", status.ToString());
  impl->serialized = std::move(serialized);
  impl->origin = std::move(origin);
  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> ids;
  if (add_bos) {
    GEMMAPOD_CHECK(bos_id() >= 0, impl_->origin, ": the tokenizer has no BOS piece to prepend");
    ids.push_back(bos_id());
  }
  const std::vector<int32_t> text_ids = EncodeWith(impl_->processor, text, impl_->origin);
  ids.insert(ids.end(), text_ids.begin(), text_ids.end());
  return ids;
}

std::vector<int32_t> Tokenizer::EncodeLiteral(
    std::string_view text, const std::vector<std::string>& literal_pieces) const {
  // The usual encoding is the answer unless it produced one of the pieces. Checking the ids, not
  // the text, also catches spellings that only match after the model's normalisation (NFKC
  // turns a full-width <start_of_turn> into the ASCII one).
  std::vector<int32_t> plain = Encode(text, false);
  std::vector<int32_t> piece_ids;
  for (const std::string& p : literal_pieces) {
    if (auto id = PieceId(p)) piece_ids.push_back(*id);
  }
  const bool produced = std::any_of(plain.begin(), plain.end(), [&](int32_t id) {
    return std::find(piece_ids.begin(), piece_ids.end(), id) != piece_ids.end();
  });
  if (!produced) return plain;

  std::vector<std::string> key = literal_pieces;
  std::sort(key.begin(), key.end());
  key.erase(std::unique(key.begin(), key.end()), key.end());
  std::shared_ptr<const Processor> processor;
  {
    const std::lock_guard<std::mutex> lock(impl_->literal_mutex);
    std::shared_ptr<const Processor>& cached = impl_->literal[key];
    if (!cached) {
      cached = Load(MarkUserPiecesAsControl(impl_->serialized, key, impl_->origin), impl_->origin);
    }
    processor = cached;
  }
  return EncodeWith(*processor, text, impl_->origin);
}

std::string Tokenizer::Decode(std::span<const int32_t> ids) const {
  const int n = vocab_size();
  std::vector<int> v;
  v.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    GEMMAPOD_CHECK(ids[i] >= 0 && ids[i] < n, impl_->origin, ": token id ", ids[i], " (position ",
                   i, ") is outside the vocabulary of ", n);
    v.push_back(ids[i]);
  }
  std::string text;
  const auto status = impl_->processor.Decode(v, &text);
  GEMMAPOD_CHECK(status.ok(), impl_->origin, ": cannot decode: ", status.ToString());
  return text;
}

int32_t Tokenizer::bos_id() const { return impl_->processor.bos_id(); }
int32_t Tokenizer::eos_id() const { return impl_->processor.eos_id(); }
int32_t Tokenizer::pad_id() const { return impl_->processor.pad_id(); }
int Tokenizer::vocab_size() const { return impl_->processor.GetPieceSize(); }
const std::string& Tokenizer::origin() const { return impl_->origin; }
const std::string& Tokenizer::serialized() const { return impl_->serialized; }

std::optional<int32_t> Tokenizer::PieceId(std::string_view piece) const {
  const int id = impl_->processor.PieceToId(piece);
  // PieceToId answers unk for anything it does not know; only "<unk>" itself may map there.
  if (id < 0 || (impl_->processor.IsUnknown(id) && impl_->processor.IdToPiece(id) != piece)) {
    return std::nullopt;
  }
  return id;
}

std::string Tokenizer::TokenText(int32_t id) const {
  const auto& p = impl_->processor;
  GEMMAPOD_CHECK(id >= 0 && id < vocab_size(), "tokenizer ", origin(), ": id ", id,
                 " is outside the vocabulary of ", vocab_size());
  const std::string piece = p.IdToPiece(id);
  if (p.IsControl(id)) return piece;
  if (p.IsByte(id)) {
    // "<0xNN>"
    return std::string(1, static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
  }
  std::string text;
  static constexpr std::string_view kSpace = "\xe2\x96\x81";  // U+2581, SentencePiece's space
  for (size_t i = 0; i < piece.size();) {
    if (piece.compare(i, kSpace.size(), kSpace) == 0) {
      text += ' ';
      i += kSpace.size();
    } else {
      text += piece[i++];
    }
  }
  return text;
}

bool Tokenizer::DecodesOnItsOwn(int32_t id) const {
  const Processor& p = impl_->processor;
  return id >= 0 && id < vocab_size() && !p.IsByte(id) && !p.IsControl(id);
}

}  // namespace gemmapod
