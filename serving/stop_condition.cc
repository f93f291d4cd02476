#include "serving/stop_condition.h"

#include <algorithm>

#include "runtime/error.h"

namespace gemmapod {

StopCondition::StopCondition(std::vector<int32_t> stop_tokens,
                             std::vector<std::string> stop_strings)
    : stop_tokens_(std::move(stop_tokens)), stop_strings_(std::move(stop_strings)) {
  for (size_t i = 0; i < stop_strings_.size(); ++i) {
    // An empty stop string would match before any text, ending every generation at once.
    GEMMAPOD_CHECK(!stop_strings_[i].empty(), "stop_strings[", i, "] is empty");
  }
}

bool StopCondition::IsStopToken(int32_t id) const {
  return std::find(stop_tokens_.begin(), stop_tokens_.end(), id) != stop_tokens_.end();
}

std::string StopCondition::Push(std::string_view text, bool* stopped) {
  *stopped = false;
  pending_.append(text);
  // The earliest stop string wins.
  size_t first = std::string::npos;
  for (const std::string& s : stop_strings_) first = std::min(first, pending_.find(s));
  if (first != std::string::npos) {
    *stopped = true;
    std::string out = pending_.substr(0, first);
    pending_.clear();
    return out;
  }
  // Hold back the longest tail that some stop string begins with.
  size_t hold = 0;
  for (const std::string& s : stop_strings_) {
    for (size_t len = std::min(s.size() - 1, pending_.size()); len > hold; --len) {
      if (pending_.compare(pending_.size() - len, len, s, 0, len) == 0) {
        hold = len;
        break;
      }
    }
  }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StopCondition::Flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace gemmapod
