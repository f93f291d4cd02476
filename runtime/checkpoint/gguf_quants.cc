#include "runtime/checkpoint/gguf_quants.h"

#include <cstring>

#include "runtime/dtype.h"
#include "runtime/error.h"

namespace gemmapod {
namespace {

struct TypeTraits {
  std::string_view name;  // empty: not a ggml type
  int64_t block_size = 0;
  int64_t block_bytes = 0;
};

// K-quants pack 256 elements per "super-block"; the legacy quants 32 per block.
constexpr int64_t kQK = 32;
constexpr int64_t kQKK = 256;

// Indexed by id. Block bytes are the sizes of ggml's block_* structs (ggml-common.h).
constexpr TypeTraits kTraits[] = {
    {"F32", 1, 4},          // 0
    {"F16", 1, 2},          // 1
    {"Q4_0", kQK, 18},      // 2: f16 d, 16 bytes of nibbles
    {"Q4_1", kQK, 20},      // 3: f16 d, f16 m, 16 bytes of nibbles
    {},                     // 4: Q4_2, removed
    {},                     // 5: Q4_3, removed
    {"Q5_0", kQK, 22},      // 6: f16 d, 4 bytes of fifth bits, 16 bytes of nibbles
    {"Q5_1", kQK, 24},      // 7: f16 d, f16 m, 4 bytes of fifth bits, 16 bytes of nibbles
    {"Q8_0", kQK, 34},      // 8: f16 d, 32 int8
    {"Q8_1", kQK, 36},      // 9: f16 d, f16 s (d * sum), 32 int8; gguf-py 0.19 says 40,
                            //    the size of ggml's older layout with f32 d and s
    {"Q2_K", kQKK, 84},     // 10
    {"Q3_K", kQKK, 110},    // 11
    {"Q4_K", kQKK, 144},    // 12
    {"Q5_K", kQKK, 176},    // 13
    {"Q6_K", kQKK, 210},    // 14
    {"Q8_K", kQKK, 292},    // 15: f32 d, 256 int8, 16 int16 sums
    {"IQ2_XXS", kQKK, 66},  // 16
    {"IQ2_XS", kQKK, 74},   // 17
    {"IQ3_XXS", kQKK, 98},  // 18
    {"IQ1_S", kQKK, 50},    // 19
    {"IQ4_NL", kQK, 18},    // 20
    {"IQ3_S", kQKK, 110},   // 21
    {"IQ2_S", kQKK, 82},    // 22
    {"IQ4_XS", kQKK, 136},  // 23
    {"I8", 1, 1},           // 24
    {"I16", 1, 2},          // 25
    {"I32", 1, 4},          // 26
    {"I64", 1, 8},          // 27
    {"F64", 1, 8},          // 28
    {"IQ1_M", kQKK, 56},    // 29
    {"BF16", 1, 2},         // 30
    {},                     // 31: Q4_0_4_4, removed
    {},                     // 32: Q4_0_4_8, removed
    {},                     // 33: Q4_0_8_8, removed
    {"TQ1_0", kQKK, 54},    // 34
    {"TQ2_0", kQKK, 66},    // 35
    {},                     // 36: IQ4_NL_4_4, removed
    {},                     // 37: IQ4_NL_4_8, removed
    {},                     // 38: IQ4_NL_8_8, removed
    {"MXFP4", kQK, 17},     // 39: e8m0 shared exponent, 16 bytes of e2m1 nibbles
    {"NVFP4", 64, 36},      // 40: four ue4m3 scales, 32 bytes of e2m1 nibbles
    {"Q1_0", 128, 18},      // 41: f16 d, 16 bytes of sign bits
};
constexpr uint32_t kNumIds = sizeof(kTraits) / sizeof(kTraits[0]);

const TypeTraits& Traits(GgmlType type) {
  const auto id = static_cast<uint32_t>(type);
  GEMMAPOD_CHECK(IsKnownGgmlType(id), "unknown ggml tensor type ", id);
  return kTraits[id];
}

// IEEE binary16 -> binary32, exact for every input (subnormals, infinities and NaN included).
float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {
    // Subnormal: shift the leading one up to the implicit bit, lowering the exponent to match.
    uint32_t e = 127 - 15 + 1;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Blocks are packed back to back with no padding, so multi-byte fields are read unaligned.
float LoadHalf(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof h);
  return HalfToFloat(h);
}

uint32_t LoadU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

void DequantizeF32(const uint8_t* src, float* dst, int64_t n) {
  std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}

void DequantizeF16(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = LoadHalf(src + 2 * i);
}

void DequantizeBF16(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    BF16 v;
    std::memcpy(&v.bits, src + 2 * i, sizeof v.bits);
    dst[i] = BF16ToFloat(v);
  }
}

// The legacy quants put element j of a block in the low nibble of byte j and element j + 16 in
// the high nibble (j < 16). Q4_0: x = (q - 8) * d.
void DequantizeQ4_0(const uint8_t* block, float* y) {
  const float d = LoadHalf(block);
  const uint8_t* qs = block + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>((qs[j] & 0x0f) - 8) * d;
    y[j + 16] = static_cast<float>((qs[j] >> 4) - 8) * d;
  }
}

// Q4_1: x = q * d + m, q unsigned.
void DequantizeQ4_1(const uint8_t* block, float* y) {
  const float d = LoadHalf(block);
  const float m = LoadHalf(block + 2);
  const uint8_t* qs = block + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(qs[j] & 0x0f) * d + m;
    y[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
  }
}

// Q5_0/Q5_1: as Q4_0/Q4_1 with a fifth (high) bit per element; bit i of the little-endian
// 32-bit qh belongs to element i. Q5_0: x = (q - 16) * d.
void DequantizeQ5_0(const uint8_t* block, float* y) {
  const float d = LoadHalf(block);
  const uint32_t qh = LoadU32(block + 2);
  const uint8_t* qs = block + 6;
  for (int j = 0; j < 16; ++j) {
    const int lo = (qs[j] & 0x0f) | static_cast<int>(((qh >> j) & 1u) << 4);
    const int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
    y[j] = static_cast<float>(lo - 16) * d;
    y[j + 16] = static_cast<float>(hi - 16) * d;
  }
}

// Q5_1: x = q * d + m, q unsigned 5-bit.
void DequantizeQ5_1(const uint8_t* block, float* y) {
  const float d = LoadHalf(block);
  const float m = LoadHalf(block + 2);
  const uint32_t qh = LoadU32(block + 4);
  const uint8_t* qs = block + 8;
  for (int j = 0; j < 16; ++j) {
    const int lo = (qs[j] & 0x0f) | static_cast<int>(((qh >> j) & 1u) << 4);
    const int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
    y[j] = static_cast<float>(lo) * d + m;
    y[j + 16] = static_cast<float>(hi) * d + m;
  }
}

// Q8_0: x = q * d, q int8.
void DequantizeQ8_0(const uint8_t* block, float* y) {
  const float d = LoadHalf(block);
  const auto* qs = reinterpret_cast<const int8_t*>(block + 2);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(qs[j]) * d;
}

// K-quants: a super-block of 256 elements in sub-blocks of 16 or 32, each with its own integer
// scale (and for the "min" types an integer min) that the super-block's f16 d (and dmin)
// multiply. The products (d * scale) * q - dmin * min are formed in that order, as ggml does,
// so the results agree bit for bit.

// Q2_K (84 bytes): scales[16] (low nibble scale, high nibble min, per 16 elements), qs[64]
// (2-bit), f16 d, f16 dmin. The 2-bit fields of 32 bytes hold 128 elements: shift 2 * k holds
// elements [32k, 32k + 32), the first 16 bytes the first 16 of them.
void DequantizeQ2_K(const uint8_t* block, float* y) {
  const uint8_t* scales = block;
  const uint8_t* q = block + 16;
  const float d = LoadHalf(block + 80);
  const float dmin = LoadHalf(block + 82);
  int sub = 0;
  for (int half = 0; half < 2; ++half, q += 32) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (int part = 0; part < 2; ++part, ++sub) {
        const float dl = d * static_cast<float>(scales[sub] & 0x0f);
        const float ml = dmin * static_cast<float>(scales[sub] >> 4);
        const uint8_t* qp = q + 16 * part;
        for (int l = 0; l < 16; ++l) *y++ = dl * static_cast<float>((qp[l] >> shift) & 3) - ml;
      }
    }
  }
}

// Q3_K (110 bytes): hmask[32] (the third bit, one bit plane per 32 elements), qs[64] (low two
// bits, laid out as in Q2_K), scales[12] (sixteen 6-bit scales, offset by 32), f16 d.
// x = d * (scale - 32) * (q - 4 when the hmask bit is clear, else q).
void DequantizeQ3_K(const uint8_t* block, float* y) {
  const uint8_t* hmask = block;
  const uint8_t* q = block + 32;
  const uint8_t* packed = block + 96;
  const float d = LoadHalf(block + 108);
  // Scale i: low four bits in the nibble i % 8 of bytes 0-7 (low nibbles first), high two bits
  // in bits 2 * (i / 4) of byte 8 + i % 4.
  int scales[16];
  for (int i = 0; i < 16; ++i) {
    const int low = i < 8 ? (packed[i] & 0x0f) : (packed[i - 8] >> 4);
    const int high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
    scales[i] = (low | (high << 4)) - 32;
  }
  int sub = 0;
  uint8_t bit = 1;
  for (int half = 0; half < 2; ++half, q += 32) {
    for (int shift = 0; shift < 8; shift += 2, bit = static_cast<uint8_t>(bit << 1)) {
      for (int part = 0; part < 2; ++part, ++sub) {
        const float dl = d * static_cast<float>(scales[sub]);
        const uint8_t* qp = q + 16 * part;
        const uint8_t* hp = hmask + 16 * part;
        for (int l = 0; l < 16; ++l) {
          const int v = ((qp[l] >> shift) & 3) - ((hp[l] & bit) ? 0 : 4);
          *y++ = dl * static_cast<float>(v);
        }
      }
    }
  }
}

// Q4_K and Q5_K share 12 bytes of eight 6-bit scales and eight 6-bit mins, one pair per 32
// elements: pairs 0-3 in the low six bits of bytes 0-3 (scale) and 4-7 (min); pairs 4-7 keep
// their low four bits in the nibbles of bytes 8-11 (scale low, min high) and their top two bits
// in the top two bits of bytes 0-3 (scale) and 4-7 (min).
void UnpackScalesMins(const uint8_t* packed, int* scale, int* min) {
  for (int j = 0; j < 4; ++j) {
    scale[j] = packed[j] & 63;
    min[j] = packed[j + 4] & 63;
  }
  for (int j = 4; j < 8; ++j) {
    scale[j] = (packed[j + 4] & 0x0f) | ((packed[j - 4] >> 6) << 4);
    min[j] = (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4);
  }
}

// Q4_K (144 bytes): f16 d, f16 dmin, 12 bytes of scales/mins, qs[128]. Each 32 bytes of qs hold
// 64 elements: the low nibbles the first 32, the high nibbles the next 32.
// x = d * scale * q - dmin * min.
void DequantizeQ4_K(const uint8_t* block, float* y) {
  const float d = LoadHalf(block);
  const float dmin = LoadHalf(block + 2);
  int scale[8], min[8];
  UnpackScalesMins(block + 4, scale, min);
  const uint8_t* q = block + 16;
  for (int pair = 0; pair < 4; ++pair, q += 32) {
    const float d1 = d * static_cast<float>(scale[2 * pair]);
    const float m1 = dmin * static_cast<float>(min[2 * pair]);
    const float d2 = d * static_cast<float>(scale[2 * pair + 1]);
    const float m2 = dmin * static_cast<float>(min[2 * pair + 1]);
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0x0f) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
  }
}

// Q5_K (176 bytes): f16 d, f16 dmin, 12 bytes of scales/mins, qh[32], qs[128]. As Q4_K, with the
// fifth bit of element 32k + l in bit k of qh[l].
void DequantizeQ5_K(const uint8_t* block, float* y) {
  const float d = LoadHalf(block);
  const float dmin = LoadHalf(block + 2);
  int scale[8], min[8];
  UnpackScalesMins(block + 4, scale, min);
  const uint8_t* qh = block + 16;
  const uint8_t* q = block + 48;
  for (int pair = 0; pair < 4; ++pair, q += 32) {
    const float d1 = d * static_cast<float>(scale[2 * pair]);
    const float m1 = dmin * static_cast<float>(min[2 * pair]);
    const float d2 = d * static_cast<float>(scale[2 * pair + 1]);
    const float m2 = dmin * static_cast<float>(min[2 * pair + 1]);
    const int bit1 = 2 * pair, bit2 = 2 * pair + 1;
    for (int l = 0; l < 32; ++l) {
      const int v = (q[l] & 0x0f) | (((qh[l] >> bit1) & 1) << 4);
      *y++ = d1 * static_cast<float>(v) - m1;
    }
    for (int l = 0; l < 32; ++l) {
      const int v = (q[l] >> 4) | (((qh[l] >> bit2) & 1) << 4);
      *y++ = d2 * static_cast<float>(v) - m2;
    }
  }
}

// Q6_K (210 bytes): ql[128] (low four bits), qh[64] (high two bits), int8 scales[16] (one per 16
// elements), f16 d. x = d * scale * (q - 32). Per half of 128 elements (64 bytes of ql, 32 of
// qh): element l + 32k (l < 32) takes its low bits from the low (k even) or high (k odd) nibble
// of ql[l + 32 * (k % 2)] and its high bits from bits 2k of qh[l].
void DequantizeQ6_K(const uint8_t* block, float* y) {
  const uint8_t* ql = block;
  const uint8_t* qh = block + 128;
  const auto* scales = reinterpret_cast<const int8_t*>(block + 192);
  const float d = LoadHalf(block + 208);
  for (int half = 0; half < 2; ++half, ql += 64, qh += 32, scales += 8, y += 128) {
    for (int l = 0; l < 32; ++l) {
      const int sub = l / 16;
      const int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * static_cast<float>(scales[sub]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(scales[sub + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(scales[sub + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(scales[sub + 6]) * static_cast<float>(q4);
    }
  }
}

using BlockDequantizer = void (*)(const uint8_t* block, float* y);

// The per-block function of a quantized type; null for element types and unsupported ones.
BlockDequantizer BlockFunction(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0:
      return DequantizeQ4_0;
    case GgmlType::kQ4_1:
      return DequantizeQ4_1;
    case GgmlType::kQ5_0:
      return DequantizeQ5_0;
    case GgmlType::kQ5_1:
      return DequantizeQ5_1;
    case GgmlType::kQ8_0:
      return DequantizeQ8_0;
    case GgmlType::kQ2_K:
      return DequantizeQ2_K;
    case GgmlType::kQ3_K:
      return DequantizeQ3_K;
    case GgmlType::kQ4_K:
      return DequantizeQ4_K;
    case GgmlType::kQ5_K:
      return DequantizeQ5_K;
    case GgmlType::kQ6_K:
      return DequantizeQ6_K;
    default:
      return nullptr;
  }
}

}  // namespace

bool IsKnownGgmlType(uint32_t id) { return id < kNumIds && !kTraits[id].name.empty(); }

std::string_view GgmlTypeName(GgmlType type) {
  const auto id = static_cast<uint32_t>(type);
  return IsKnownGgmlType(id) ? kTraits[id].name : std::string_view("unknown");
}

int64_t GgmlBlockSize(GgmlType type) { return Traits(type).block_size; }
int64_t GgmlBlockBytes(GgmlType type) { return Traits(type).block_bytes; }

bool CanDequantize(GgmlType type) {
  return type == GgmlType::kF32 || type == GgmlType::kF16 || type == GgmlType::kBF16 ||
         BlockFunction(type) != nullptr;
}

void DequantizeRow(GgmlType type, const void* src, float* dst, int64_t n) {
  const auto id = static_cast<uint32_t>(type);
  GEMMAPOD_CHECK(CanDequantize(type), "cannot dequantize ggml type ",
                 IsKnownGgmlType(id) ? GgmlTypeName(type) : "unknown", " (id ", id,
                 "); supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, "
                 "Q5_K, Q6_K");
  const TypeTraits& traits = Traits(type);
  GEMMAPOD_CHECK(n >= 0 && n % traits.block_size == 0, "ggml type ", traits.name, ": ", n,
                 " elements are not a whole number of ", traits.block_size, "-element blocks");
  const auto* bytes = static_cast<const uint8_t*>(src);
  switch (type) {
    case GgmlType::kF32:
      return DequantizeF32(bytes, dst, n);
    case GgmlType::kF16:
      return DequantizeF16(bytes, dst, n);
    case GgmlType::kBF16:
      return DequantizeBF16(bytes, dst, n);
    default:
      break;
  }
  const BlockDequantizer fn = BlockFunction(type);
  const int64_t blocks = n / traits.block_size;
  for (int64_t b = 0; b < blocks; ++b) {
    fn(bytes + b * traits.block_bytes, dst + b * traits.block_size);
  }
}

}  // namespace gemmapod
