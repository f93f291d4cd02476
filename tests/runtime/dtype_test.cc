#include "runtime/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "runtime/error.h"

namespace gemmapod {
namespace {

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Reference rounding computed in double: pick the nearer of the two bf16 neighbours, the even
// one on a tie.
uint16_t ReferenceRound(float f) {
  const uint32_t u = Bits(f);
  const uint16_t down = static_cast<uint16_t>(u >> 16);
  const uint16_t up = static_cast<uint16_t>(down + 1);
  const double lo = FromBits(static_cast<uint32_t>(down) << 16);
  const double hi = FromBits(static_cast<uint32_t>(up) << 16);
  const double dlo = std::fabs(double{f} - lo), dhi = std::fabs(hi - double{f});
  if (dlo < dhi) return down;
  if (dhi < dlo) return up;
  return (down & 1) ? up : down;
}

TEST(BF16, RoundsToNearestEven) {
  // 1 + 2^-8 is exactly halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
  EXPECT_EQ(FloatToBF16(1.0f + 0x1p-8f).bits, 0x3f80);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): rounds up.
  EXPECT_EQ(FloatToBF16(1.0f + 3 * 0x1p-8f).bits, 0x3f82);
  // Just above the half: rounds up.
  EXPECT_EQ(FloatToBF16(1.0f + 0x1p-8f + 0x1p-20f).bits, 0x3f81);
  EXPECT_EQ(FloatToBF16(-2.5f).bits, 0xc020);
}

TEST(BF16, MatchesReferenceOnManyValues) {
  uint32_t state = 12345;
  for (int i = 0; i < 200000; ++i) {
    state = state * 1664525u + 1013904223u;
    const float f = FromBits(state);
    if (std::isnan(f) || std::isinf(f)) continue;
    if (std::fabs(f) >= 3.3895e38f) continue;  // rounds to infinity, covered below
    ASSERT_EQ(FloatToBF16(f).bits, ReferenceRound(f)) << "value bits " << std::hex << state;
  }
}

TEST(BF16, SpecialValues) {
  EXPECT_TRUE(std::isnan(BF16ToFloat(FloatToBF16(std::numeric_limits<float>::quiet_NaN()))));
  // A NaN whose payload sits only in the low bits must not round into infinity.
  EXPECT_TRUE(std::isnan(BF16ToFloat(FloatToBF16(FromBits(0x7f800001u)))));
  EXPECT_EQ(BF16ToFloat(FloatToBF16(std::numeric_limits<float>::infinity())),
            std::numeric_limits<float>::infinity());
  EXPECT_EQ(BF16ToFloat(FloatToBF16(std::numeric_limits<float>::max())),
            std::numeric_limits<float>::infinity());
  EXPECT_EQ(FloatToBF16(-0.0f).bits, 0x8000);
  // The smallest subnormal f32 rounds to zero; bf16 subnormals survive.
  EXPECT_EQ(FloatToBF16(FromBits(1)).bits, 0);
  EXPECT_EQ(FloatToBF16(FromBits(0x00010000u)).bits, 0x0001);
}

TEST(BF16, BulkConversionRoundTrips) {
  std::vector<float> src(1000);
  for (size_t i = 0; i < src.size(); ++i) src[i] = std::sin(0.37f * i) * 100.0f;
  std::vector<BF16> mid(src.size());
  std::vector<float> back(src.size());
  ConvertF32ToBF16(src.data(), mid.data(), src.size());
  ConvertBF16ToF32(mid.data(), back.data(), src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    EXPECT_EQ(mid[i].bits, FloatToBF16(src[i]).bits);
    EXPECT_NEAR(back[i], src[i], std::fabs(src[i]) * 0x1p-8f);
  }
}

TEST(DType, SizesAndNames) {
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kI32), 4u);
  EXPECT_EQ(DTypeSize(DType::kI8), 1u);
  for (DType t : {DType::kF32, DType::kBF16, DType::kI32, DType::kI8}) {
    EXPECT_EQ(ParseDType(DTypeName(t)), t);
  }
  try {
    ParseDType("fp8");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'fp8'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace gemmapod
