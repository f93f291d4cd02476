// For tests of error paths: the message of the gemmapod::Error a call throws.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

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

// Runs f, expects gemmapod::Error whose message contains every string in `parts`.
template <typename F>
void ExpectErrorNaming(F f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "expected gemmapod::Error";
  } catch (const Error& e) {
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

}  // namespace gemmapod
