// Element types and the bf16 <-> f32 conversions every backend agrees on.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace gemmapod {

enum class DType : uint8_t { kF32, kBF16, kI32, kI8 };

constexpr size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kBF16:
      return 2;
    case DType::kI8:
      return 1;
  }
  return 0;
}

std::string_view DTypeName(DType t);
// Parses "f32", "bf16", "i32", "i8"; throws gemmapod::Error naming the bad value otherwise.
DType ParseDType(std::string_view name);

// bfloat16 as stored: the upper 16 bits of an IEEE f32.
struct BF16 {
  uint16_t bits = 0;
};

inline float BF16ToFloat(BF16 v) {
  uint32_t u = static_cast<uint32_t>(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Round to nearest, ties to even (what PyTorch, JAX and the AVX-512 BF16 instructions do).
// NaN stays NaN (quiet), infinities stay infinite, values past the bf16 range round to infinity.
inline BF16 FloatToBF16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return BF16{static_cast<uint16_t>((u >> 16) | 0x0040u)};
  const uint32_t lsb = (u >> 16) & 1u;
  u += 0x7fffu + lsb;
  return BF16{static_cast<uint16_t>(u >> 16)};
}

// Bulk conversions (vectorised where the CPU allows).
void ConvertF32ToBF16(const float* src, BF16* dst, size_t n);
void ConvertBF16ToF32(const BF16* src, float* dst, size_t n);

template <typename T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::kF32;
};
template <>
struct DTypeOf<BF16> {
  static constexpr DType value = DType::kBF16;
};
template <>
struct DTypeOf<int32_t> {
  static constexpr DType value = DType::kI32;
};
template <>
struct DTypeOf<int8_t> {
  static constexpr DType value = DType::kI8;
};

}  // namespace gemmapod
