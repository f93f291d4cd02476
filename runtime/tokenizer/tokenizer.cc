#include "runtime/tokenizer/tokenizer.h"

#include <sentencepiece_processor.h>

#include <fstream>
#include <sstream>

#include "runtime/error.h"

namespace gemmapod {

struct Tokenizer::Impl {
  sentencepiece::SentencePieceProcessor processor;
  std::string serialized;
  std::string origin;
};

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
  std::vector<int> ids;
  const auto status = impl_->processor.Encode(text, &ids);
  GEMMAPOD_CHECK(status.ok(), impl_->origin, ": cannot encode text: ", status.ToString());
  std::vector<int32_t> out;
  out.reserve(ids.size() + 1);
  if (add_bos) out.push_back(bos_id());
  out.insert(out.end(), ids.begin(), ids.end());
  return out;
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

namespace {

// Bytes at the end of `s` that start a UTF-8 character whose continuation bytes are missing, or
// that SentencePiece rendered as U+FFFD because the byte sequence is not complete yet.
size_t IncompleteTail(const std::string& s) {
  static const std::string kReplacement = "\xEF\xBF\xBD";
  size_t cut = 0;
  // Trailing replacement characters: byte-fallback tokens of a character still arriving.
  while (s.size() - cut >= 3 && s.compare(s.size() - cut - 3, 3, kReplacement) == 0) cut += 3;
  if (cut > 0) return cut;
  // A lead byte whose sequence is cut short.
  for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
    const unsigned char c = static_cast<unsigned char>(s[s.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: look further back
    const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return need > back ? back : 0;
  }
  return 0;
}

}  // namespace

std::string TextStream::Push(int32_t id) {
  ids_.push_back(id);
  const std::string text = tokenizer_.Decode(ids_);
  const size_t stable = text.size() - IncompleteTail(text);
  if (stable <= emitted_) return "";
  std::string out = text.substr(emitted_, stable - emitted_);
  emitted_ = stable;
  return out;
}

std::string TextStream::Flush() {
  const std::string text = tokenizer_.Decode(ids_);
  std::string out = text.size() > emitted_ ? text.substr(emitted_) : "";
  emitted_ = text.size();
  return out;
}

}  // namespace gemmapod
