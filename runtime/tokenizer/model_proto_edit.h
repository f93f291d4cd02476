// Edits of a serialized SentencePiece ModelProto, done on the protobuf wire format because
// Debian's libsentencepiece-dev ships no sentencepiece_model.pb.h. Internal to the tokenizer.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace gemmapod {

// A copy of `model` in which every USER_DEFINED piece spelled as one of `pieces` is a CONTROL
// piece instead. Ids and scores are unchanged; what changes is that SentencePiece no longer
// matches those pieces inside the text it encodes (it matches user-defined pieces wherever they
// are spelled, but control pieces never). Pieces that are absent or not user-defined are left as
// they are. `origin` names the model in errors.
std::string MarkUserPiecesAsControl(std::string_view model, const std::vector<std::string>& pieces,
                                    std::string_view origin);

}  // namespace gemmapod
