// When generation stops: on a stop token, or when the produced text spells a stop string. Text
// that could be the start of a stop string is held back until that is decided, so a stop string
// never reaches the user, even in part.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace gemmapod {

class StopCondition {
 public:
  StopCondition(std::vector<int32_t> stop_tokens, std::vector<std::string> stop_strings);

  bool IsStopToken(int32_t id) const;
  // Feeds newly decoded text; returns what is safe to show now. When a stop string completes,
  // *stopped becomes true and the returned text ends right before it.
  std::string Push(std::string_view text, bool* stopped);
  // What was held back, once generation ends without a stop string.
  std::string Flush();

 private:
  std::vector<int32_t> stop_tokens_;
  std::vector<std::string> stop_strings_;
  std::string pending_;
};

}  // namespace gemmapod
