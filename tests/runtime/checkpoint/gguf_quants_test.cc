// ggml dequantization on blocks built by hand: each test picks the integers (quants, scales,
// mins) and f16 scales, packs them the way ggml lays the block out, and computes the expected
// values itself. The scales are powers of two, so every expected value is exact and the
// comparison is equality. (The golden fixtures in gguf_test.cc check the same code against
// gguf-py on quantized and real data.)
#include "runtime/checkpoint/gguf_quants.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "tests/error_of.h"

namespace gemmapod {
namespace {

using ::testing::HasSubstr;

// f16 bit patterns of the scales used below.
constexpr uint16_t kHalfOne = 0x3C00;
constexpr uint16_t kHalfTwo = 0x4000;
constexpr uint16_t kHalfThree = 0x4200;
constexpr uint16_t kHalfHalf = 0x3800;
constexpr uint16_t kHalfQuarter = 0x3400;
constexpr uint16_t kHalfEighth = 0x3000;
constexpr uint16_t kHalfMinusOne = 0xBC00;
constexpr uint16_t kHalfMinusHalf = 0xB800;

void PutHalf(std::vector<uint8_t>& block, size_t at, uint16_t bits) {
  block[at] = static_cast<uint8_t>(bits & 0xff);
  block[at + 1] = static_cast<uint8_t>(bits >> 8);
}

std::vector<float> Dequantize(GgmlType type, const std::vector<uint8_t>& bytes) {
  const int64_t n = static_cast<int64_t>(bytes.size()) / GgmlBlockBytes(type) * GgmlBlockSize(type);
  std::vector<float> out(static_cast<size_t>(n), std::nanf(""));
  DequantizeRow(type, bytes.data(), out.data(), n);
  return out;
}

// Two blocks back to back: catches a stride error that one block would hide.
std::vector<uint8_t> Concat(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  std::vector<uint8_t> out = a;
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

std::vector<float> Concat(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> out = a;
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

TEST(GgmlTypes, IdsNamesAndBlockGeometryMatchGgml) {
  struct Row {
    GgmlType type;
    uint32_t id;
    const char* name;
    int64_t block_size, block_bytes;
  };
  const Row rows[] = {
      {GgmlType::kF32, 0, "F32", 1, 4},          {GgmlType::kF16, 1, "F16", 1, 2},
      {GgmlType::kQ4_0, 2, "Q4_0", 32, 18},      {GgmlType::kQ4_1, 3, "Q4_1", 32, 20},
      {GgmlType::kQ5_0, 6, "Q5_0", 32, 22},      {GgmlType::kQ5_1, 7, "Q5_1", 32, 24},
      {GgmlType::kQ8_0, 8, "Q8_0", 32, 34},      {GgmlType::kQ8_1, 9, "Q8_1", 32, 36},
      {GgmlType::kQ2_K, 10, "Q2_K", 256, 84},    {GgmlType::kQ3_K, 11, "Q3_K", 256, 110},
      {GgmlType::kQ4_K, 12, "Q4_K", 256, 144},   {GgmlType::kQ5_K, 13, "Q5_K", 256, 176},
      {GgmlType::kQ6_K, 14, "Q6_K", 256, 210},   {GgmlType::kQ8_K, 15, "Q8_K", 256, 292},
      {GgmlType::kIQ4_NL, 20, "IQ4_NL", 32, 18}, {GgmlType::kBF16, 30, "BF16", 1, 2},
      {GgmlType::kMXFP4, 39, "MXFP4", 32, 17},
  };
  for (const Row& r : rows) {
    EXPECT_EQ(static_cast<uint32_t>(r.type), r.id) << r.name;
    EXPECT_TRUE(IsKnownGgmlType(r.id)) << r.name;
    EXPECT_EQ(GgmlTypeName(r.type), r.name);
    EXPECT_EQ(GgmlBlockSize(r.type), r.block_size) << r.name;
    EXPECT_EQ(GgmlBlockBytes(r.type), r.block_bytes) << r.name;
  }
  // Removed from ggml (Q4_2, Q4_3, the repacked Q4_0_x_y and IQ4_NL_x_y) and past the end.
  for (uint32_t id : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 42u, 1000u}) {
    EXPECT_FALSE(IsKnownGgmlType(id)) << id;
  }
  EXPECT_EQ(GgmlTypeName(static_cast<GgmlType>(31)), "unknown");
  EXPECT_THAT(ErrorOf([] { GgmlBlockSize(static_cast<GgmlType>(31)); }),
              HasSubstr("unknown ggml tensor type 31"));
}

TEST(GgmlDequantize, RefusesOtherTypesNamingThem) {
  std::vector<uint8_t> block(292);
  std::vector<float> out(256);
  EXPECT_THAT(ErrorOf([&] { DequantizeRow(GgmlType::kQ8_K, block.data(), out.data(), 256); }),
              HasSubstr("Q8_K"));
  EXPECT_THAT(ErrorOf([&] { DequantizeRow(GgmlType::kIQ2_XXS, block.data(), out.data(), 256); }),
              HasSubstr("IQ2_XXS"));
  EXPECT_THAT(ErrorOf([&] { DequantizeRow(GgmlType::kI32, block.data(), out.data(), 1); }),
              HasSubstr("I32"));
  EXPECT_THAT(
      ErrorOf([&] { DequantizeRow(static_cast<GgmlType>(33), block.data(), out.data(), 1); }),
      HasSubstr("unknown (id 33)"));
  EXPECT_FALSE(CanDequantize(GgmlType::kQ8_1));
  EXPECT_TRUE(CanDequantize(GgmlType::kQ6_K));
}

TEST(GgmlDequantize, RefusesPartialBlocks) {
  std::vector<uint8_t> block(144);
  std::vector<float> out(256);
  EXPECT_THAT(ErrorOf([&] { DequantizeRow(GgmlType::kQ4_K, block.data(), out.data(), 100); }),
              HasSubstr("100 elements are not a whole number of 256-element blocks"));
  EXPECT_THAT(ErrorOf([&] { DequantizeRow(GgmlType::kQ8_0, block.data(), out.data(), -32); }),
              HasSubstr("Q8_0"));
}

TEST(GgmlDequantize, FloatTypes) {
  const float f32[] = {1.5f, -0.0f, std::numeric_limits<float>::infinity(), 3e-42f};
  std::vector<float> out(4);
  DequantizeRow(GgmlType::kF32, f32, out.data(), 4);
  EXPECT_EQ(std::memcmp(out.data(), f32, sizeof f32), 0);

  // f16: one, minus two, the smallest subnormal (2^-24), the largest subnormal, the smallest
  // normal (2^-14), the largest finite, 1/3 rounded, infinity, minus zero.
  const uint16_t f16[] = {0x3C00, 0xC000, 0x0001, 0x03FF, 0x0400, 0x7BFF, 0x3555, 0x7C00, 0x8000};
  const float want16[] = {1.0f,
                          -2.0f,
                          std::ldexp(1.0f, -24),
                          std::ldexp(1023.0f, -24),
                          std::ldexp(1.0f, -14),
                          65504.0f,
                          0.333251953125f,
                          std::numeric_limits<float>::infinity(),
                          -0.0f};
  out.resize(9);
  DequantizeRow(GgmlType::kF16, f16, out.data(), 9);
  for (int i = 0; i < 9; ++i) EXPECT_EQ(out[i], want16[i]) << i;
  EXPECT_TRUE(std::signbit(out[8]));
  const uint16_t nan16 = 0x7E00;
  DequantizeRow(GgmlType::kF16, &nan16, out.data(), 1);
  EXPECT_TRUE(std::isnan(out[0]));

  const uint16_t bf16[] = {0x3F80, 0xC0A0, 0x4049, 0x0001};
  const float want_bf16[] = {1.0f, -5.0f, 3.140625f, std::ldexp(1.0f, -133)};
  out.resize(4);
  DequantizeRow(GgmlType::kBF16, bf16, out.data(), 4);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(out[i], want_bf16[i]) << i;
}

// Q4_0 and Q4_1: element j in the low nibble of byte j, element j + 16 in its high nibble.
std::vector<uint8_t> Nibbles(const int q[32]) {
  std::vector<uint8_t> qs(16);
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
  return qs;
}

TEST(GgmlDequantize, Q4_0) {
  auto make = [](uint16_t d, int shift, std::vector<float>* want) {
    std::vector<uint8_t> block(18);
    PutHalf(block, 0, d);
    int q[32];
    for (int i = 0; i < 32; ++i) q[i] = (i * 7 + shift) % 16;
    const std::vector<uint8_t> qs = Nibbles(q);
    std::copy(qs.begin(), qs.end(), block.begin() + 2);
    const float scale = d == kHalfHalf ? 0.5f : -1.0f;
    for (int i = 0; i < 32; ++i) want->push_back(static_cast<float>(q[i] - 8) * scale);
    return block;
  };
  std::vector<float> want;
  const auto a = make(kHalfHalf, 3, &want);
  const auto b = make(kHalfMinusOne, 11, &want);
  EXPECT_EQ(Dequantize(GgmlType::kQ4_0, Concat(a, b)), want);
}

TEST(GgmlDequantize, Q4_1) {
  std::vector<uint8_t> block(20);
  PutHalf(block, 0, kHalfQuarter);   // d
  PutHalf(block, 2, kHalfMinusOne);  // m
  int q[32];
  for (int i = 0; i < 32; ++i) q[i] = (i * 5 + 2) % 16;
  const std::vector<uint8_t> qs = Nibbles(q);
  std::copy(qs.begin(), qs.end(), block.begin() + 4);
  std::vector<float> want;
  for (int i = 0; i < 32; ++i) want.push_back(0.25f * static_cast<float>(q[i]) - 1.0f);
  EXPECT_EQ(Dequantize(GgmlType::kQ4_1, block), want);
}

// Q5_0 and Q5_1: the low four bits as in Q4_x, the fifth bit of element i in bit i of the
// little-endian u32 qh.
void PackFiveBits(const int q[32], std::vector<uint8_t>& block, size_t qh_at, size_t qs_at) {
  uint32_t qh = 0;
  int low[32];
  for (int i = 0; i < 32; ++i) {
    qh |= static_cast<uint32_t>(q[i] >> 4) << i;
    low[i] = q[i] & 15;
  }
  for (int b = 0; b < 4; ++b) block[qh_at + b] = static_cast<uint8_t>(qh >> (8 * b));
  const std::vector<uint8_t> qs = Nibbles(low);
  std::copy(qs.begin(), qs.end(), block.begin() + static_cast<long>(qs_at));
}

TEST(GgmlDequantize, Q5_0) {
  std::vector<uint8_t> block(22);
  PutHalf(block, 0, kHalfTwo);
  int q[32];
  for (int i = 0; i < 32; ++i) q[i] = (i * 7 + 3) % 32;
  PackFiveBits(q, block, 2, 6);
  std::vector<float> want;
  for (int i = 0; i < 32; ++i) want.push_back(2.0f * static_cast<float>(q[i] - 16));
  EXPECT_EQ(Dequantize(GgmlType::kQ5_0, Concat(block, block)), Concat(want, want));
}

TEST(GgmlDequantize, Q5_1) {
  std::vector<uint8_t> block(24);
  PutHalf(block, 0, kHalfHalf);   // d
  PutHalf(block, 2, kHalfThree);  // m
  int q[32];
  for (int i = 0; i < 32; ++i) q[i] = (i * 5 + 1) % 32;
  PackFiveBits(q, block, 4, 8);
  std::vector<float> want;
  for (int i = 0; i < 32; ++i) want.push_back(0.5f * static_cast<float>(q[i]) + 3.0f);
  EXPECT_EQ(Dequantize(GgmlType::kQ5_1, block), want);
}

TEST(GgmlDequantize, Q8_0) {
  auto make = [](uint16_t d, float scale, std::vector<float>* want) {
    std::vector<uint8_t> block(34);
    PutHalf(block, 0, d);
    for (int i = 0; i < 32; ++i) {
      const int q = i == 31 ? 127 : -128 + 8 * i;  // the whole int8 range
      block[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(q));
      want->push_back(static_cast<float>(q) * scale);
    }
    return block;
  };
  std::vector<float> want;
  const auto a = make(kHalfHalf, 0.5f, &want);
  const auto b = make(kHalfMinusHalf, -0.5f, &want);
  EXPECT_EQ(Dequantize(GgmlType::kQ8_0, Concat(a, b)), want);
}

// Q2_K and Q3_K store two bits per element in 64 bytes: element i of a half of 128 (h = i / 128,
// r = i % 128) is in byte 32h + r % 32 at bit 2 * (r / 32).
void PackTwoBits(int i, int value, uint8_t* qs) {
  const int h = i / 128, r = i % 128;
  qs[32 * h + r % 32] |= static_cast<uint8_t>(value << (2 * (r / 32)));
}

TEST(GgmlDequantize, Q2_K) {
  // scales[16] (scale low nibble, min high nibble, per 16 elements), qs[64], f16 d, f16 dmin.
  std::vector<uint8_t> block(84);
  int scale[16], min[16];
  for (int s = 0; s < 16; ++s) {
    scale[s] = (s * 7 + 1) % 16;
    min[s] = 15 - s;
    block[s] = static_cast<uint8_t>(scale[s] | (min[s] << 4));
  }
  std::vector<float> want;
  for (int i = 0; i < 256; ++i) {
    const int q = (i * 3 + i / 7) % 4;
    PackTwoBits(i, q, &block[16]);
    want.push_back(0.5f * static_cast<float>(scale[i / 16] * q) -
                   0.25f * static_cast<float>(min[i / 16]));
  }
  PutHalf(block, 80, kHalfHalf);
  PutHalf(block, 82, kHalfQuarter);
  EXPECT_EQ(Dequantize(GgmlType::kQ2_K, block), want);
}

TEST(GgmlDequantize, Q3_K) {
  // hmask[32], qs[64], scales[12], f16 d. Element i is q - 4 when bit i / 32 of hmask[i % 32] is
  // clear, q when set (q: its two low bits); scale s is 6 bits, offset by 32: the low four bits
  // in the low (s < 8) or high (s >= 8) nibble of scales[s % 8], the top two in bits
  // 2 * (s / 4) of scales[8 + s % 4].
  std::vector<uint8_t> block(110);
  int scale[16];
  for (int s = 0; s < 16; ++s) {
    const int stored = (s * 13 + 5) % 64;
    scale[s] = stored - 32;
    block[96 + s % 8] |= static_cast<uint8_t>((stored & 15) << (s < 8 ? 0 : 4));
    block[96 + 8 + s % 4] |= static_cast<uint8_t>((stored >> 4) << (2 * (s / 4)));
  }
  std::vector<float> want;
  for (int i = 0; i < 256; ++i) {
    const int value = (i * 5 + i / 9) % 8 - 4;  // -4..3
    const bool high = value >= 0;
    PackTwoBits(i, high ? value : value + 4, &block[32]);
    if (high) block[i % 32] |= static_cast<uint8_t>(1 << (i / 32));
    want.push_back(0.25f * static_cast<float>(scale[i / 16] * value));
  }
  PutHalf(block, 108, kHalfQuarter);
  EXPECT_EQ(Dequantize(GgmlType::kQ3_K, block), want);
}

// Q4_K and Q5_K: eight 6-bit scales and mins, one pair per 32 elements, in 12 bytes. Pairs 0-3:
// the low six bits of bytes j (scale) and j + 4 (min). Pairs 4-7: low four bits in the low
// (scale) and high (min) nibble of byte j + 4, top two bits in the top two bits of bytes j - 4
// (scale) and j (min).
void PackScalesMins(const int scale[8], const int min[8], uint8_t* packed) {
  for (int j = 0; j < 4; ++j) {
    packed[j] = static_cast<uint8_t>(scale[j] | ((scale[j + 4] >> 4) << 6));
    packed[j + 4] = static_cast<uint8_t>(min[j] | ((min[j + 4] >> 4) << 6));
    packed[j + 8] = static_cast<uint8_t>((scale[j + 4] & 15) | ((min[j + 4] & 15) << 4));
  }
}

// Four bits of element i: in byte 32 * (i / 64) + i % 32, low nibble when i % 64 < 32.
void PackNibble(int i, int value, uint8_t* qs) {
  qs[32 * (i / 64) + i % 32] |= static_cast<uint8_t>(value << (i % 64 < 32 ? 0 : 4));
}

TEST(GgmlDequantize, Q4_K) {
  // f16 d, f16 dmin, 12 bytes of scales and mins, qs[128].
  const int scale[8] = {1, 63, 17, 32, 45, 8, 60, 33};
  const int min[8] = {0, 5, 63, 31, 40, 16, 2, 50};
  auto make = [&](uint16_t d, float dv, std::vector<float>* want) {
    std::vector<uint8_t> block(144);
    PutHalf(block, 0, d);
    PutHalf(block, 2, kHalfEighth);
    PackScalesMins(scale, min, &block[4]);
    for (int i = 0; i < 256; ++i) {
      const int q = (i * 11 + 7) % 16;
      PackNibble(i, q, &block[16]);
      want->push_back(dv * static_cast<float>(scale[i / 32] * q) -
                      0.125f * static_cast<float>(min[i / 32]));
    }
    return block;
  };
  std::vector<float> want;
  const auto a = make(kHalfHalf, 0.5f, &want);
  const auto b = make(kHalfOne, 1.0f, &want);
  EXPECT_EQ(Dequantize(GgmlType::kQ4_K, Concat(a, b)), want);
}

TEST(GgmlDequantize, Q5_K) {
  // f16 d, f16 dmin, 12 bytes of scales and mins, qh[32] (the fifth bit of element i in bit
  // i / 32 of qh[i % 32]), qs[128].
  const int scale[8] = {63, 1, 32, 17, 8, 45, 33, 60};
  const int min[8] = {5, 0, 31, 63, 16, 40, 50, 2};
  std::vector<uint8_t> block(176);
  PutHalf(block, 0, kHalfQuarter);
  PutHalf(block, 2, kHalfHalf);
  PackScalesMins(scale, min, &block[4]);
  std::vector<float> want;
  for (int i = 0; i < 256; ++i) {
    const int q = (i * 7 + 3) % 32;
    PackNibble(i, q & 15, &block[48]);
    block[16 + i % 32] |= static_cast<uint8_t>((q >> 4) << (i / 32));
    want.push_back(0.25f * static_cast<float>(scale[i / 32] * q) -
                   0.5f * static_cast<float>(min[i / 32]));
  }
  EXPECT_EQ(Dequantize(GgmlType::kQ5_K, block), want);
}

TEST(GgmlDequantize, Q6_K) {
  // ql[128], qh[64], int8 scales[16] (per 16 elements), f16 d. Element i of a half of 128
  // (h = i / 128, r = i % 128, k = r / 32, l = r % 32): low four bits in the low (k < 2) or high
  // nibble of ql[64h + 32 * (k % 2) + l], top two bits at bit 2k of qh[32h + l]; value q - 32.
  std::vector<uint8_t> block(210);
  int scale[16];
  for (int s = 0; s < 16; ++s) {
    scale[s] = s * 9 - 70;
    block[192 + s] = static_cast<uint8_t>(static_cast<int8_t>(scale[s]));
  }
  std::vector<float> want;
  for (int i = 0; i < 256; ++i) {
    const int q = (i * 5 + 1 + i / 64) % 64;
    const int h = i / 128, r = i % 128, k = r / 32, l = r % 32;
    block[64 * h + 32 * (k % 2) + l] |= static_cast<uint8_t>((q & 15) << (k < 2 ? 0 : 4));
    block[128 + 32 * h + l] |= static_cast<uint8_t>((q >> 4) << (2 * k));
    want.push_back(-0.5f * static_cast<float>(scale[i / 16] * (q - 32)));
  }
  PutHalf(block, 208, kHalfMinusHalf);
  EXPECT_EQ(Dequantize(GgmlType::kQ6_K, block), want);
}

}  // namespace
}  // namespace gemmapod
