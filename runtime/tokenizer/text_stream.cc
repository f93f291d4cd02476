// TextStream: incremental detokenization over a short window of ids.
#include <string>

#include "runtime/error.h"
#include "runtime/tokenizer/tokenizer.h"

namespace gemmapod {
namespace {

// Bytes at the end of `s` that may still change when more tokens arrive: U+FFFD characters, which
// SentencePiece writes for the bytes of a character whose byte-fallback tokens have not all come
// yet, or a lead byte whose continuation bytes are missing.
size_t IncompleteTail(const std::string& s) {
  static const std::string kReplacement = "\xEF\xBF\xBD";
  size_t cut = 0;
  while (s.size() - cut >= 3 && s.compare(s.size() - cut - 3, 3, kReplacement) == 0) cut += 3;
  if (cut > 0) return cut;
  for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
    const auto c = static_cast<unsigned char>(s[s.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: its lead byte is further back
    const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return need > back ? back : 0;
  }
  return 0;
}

}  // namespace

std::string TextStream::Push(int32_t id) {
  // Checked before it joins the window: a bad id must not poison every later call.
  GEMMAPOD_CHECK(id >= 0 && id < tokenizer_.vocab_size(), tokenizer_.origin(), ": token id ", id,
                 " is outside the vocabulary of ", tokenizer_.vocab_size());
  ids_.push_back(id);
  const std::string text = tokenizer_.Decode(ids_);
  const size_t stable = text.size() - IncompleteTail(text);
  std::string out;
  if (stable > emitted_) {
    out = text.substr(emitted_, stable - emitted_);
    emitted_ = stable;
  }
  // All decoded text is out and ends with a token that decodes on its own (no byte piece that
  // later bytes would join): this token becomes the context and the window restarts after it.
  if (emitted_ == text.size() && ids_.size() > 1 && tokenizer_.DecodesOnItsOwn(id)) {
    const int32_t context[] = {id};
    const size_t context_bytes = tokenizer_.Decode(context).size();
    if (context_bytes > 0) {  // an empty context would leave the next piece first again
      ids_.assign(1, id);
      emitted_ = context_bytes;
    }
  }
  return out;
}

std::string TextStream::Flush() {
  const std::string text = tokenizer_.Decode(ids_);
  std::string out = text.size() > emitted_ ? text.substr(emitted_) : "";
  ids_.clear();
  emitted_ = 0;
  return out;
}

}  // namespace gemmapod
