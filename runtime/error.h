// Errors are messages: every failure the user can cause is thrown as gemmapod::Error with text
// that names the file, key, tensor or rank involved. Internal invariants use the same macro.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace gemmapod {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Concatenates anything streamable; used to build messages only on the failure path.
template <typename... Parts>
std::string StrCat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}

}  // namespace gemmapod

// GEMMAPOD_CHECK(cond, parts...): throws gemmapod::Error("parts...") when cond is false.
#define GEMMAPOD_CHECK(cond, ...)                                          \
  do {                                                                     \
    if (!(cond)) throw ::gemmapod::Error(::gemmapod::StrCat(__VA_ARGS__)); \
  } while (0)
