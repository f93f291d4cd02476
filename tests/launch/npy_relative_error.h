// For the CLI tests: how far one .npy of f32 logits is from another, as max |got - want| over
// max |want| (1e9 when the shapes differ, which is also reported as a test failure).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "runtime/checkpoint/npy.h"

namespace gemmapod {

inline double NpyRelativeError(const std::string& got_path, const std::string& want_path) {
  const Tensor got = ReadNpy(got_path), want = ReadNpy(want_path);
  EXPECT_EQ(got.shape(), want.shape()) << got_path << " vs " << want_path;
  if (got.shape() != want.shape()) return 1e9;
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    diff = std::max(diff, double{std::fabs(got.data<float>()[i] - want.data<float>()[i])});
    scale = std::max(scale, double{std::fabs(want.data<float>()[i])});
  }
  return diff / scale;
}

}  // namespace gemmapod
