// For tests of error paths: the message of the gemmapod::Error a call throws.
#pragma once

#include <functional>
#include <string>

#include "runtime/error.h"

namespace gemmapod {

// The message, or "(no error)" when `fn` returns normally (so a matcher on the message fails).
inline std::string ErrorOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace gemmapod
