#include "runtime/dtype.h"

#include "runtime/error.h"

namespace gemmapod {

std::string_view DTypeName(DType t) {
  switch (t) {
    case DType::kF32:
      return "f32";
    case DType::kBF16:
      return "bf16";
    case DType::kI32:
      return "i32";
    case DType::kI8:
      return "i8";
  }
  return "?";
}

DType ParseDType(std::string_view name) {
  for (DType t : {DType::kF32, DType::kBF16, DType::kI32, DType::kI8}) {
    if (DTypeName(t) == name) return t;
  }
  throw Error(StrCat("unknown dtype '", name, "' (expected f32, bf16, i32 or i8)"));
}

// Plain loops: GCC vectorises both at -O2 with -ftree-vectorize (default at -O3), and the
// conversion is never the bottleneck next to the matmuls that consume it.
void ConvertF32ToBF16(const float* src, BF16* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = FloatToBF16(src[i]);
}

void ConvertBF16ToF32(const BF16* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = BF16ToFloat(src[i]);
}

}  // namespace gemmapod
