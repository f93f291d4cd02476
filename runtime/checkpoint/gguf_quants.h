// ggml's tensor types as GGUF files store them: ids, names, block geometry, and dequantization of
// the types Gemma GGUF files use (float, the legacy 32-element quants and the 256-element
// K-quants) to f32. The block layouts follow ggml's reference C code; gguf-py's numpy
// dequantizers (llama.cpp's own Python package) produce the golden values the tests compare with.
#pragma once

#include <cstdint>
#include <string_view>

namespace gemmapod {

// Ids exactly as ggml numbers them (ggml.h `enum ggml_type`); they are what a GGUF tensor info
// stores. Ids 4, 5 (Q4_2, Q4_3), 31-33 and 36-38 (repacked layouts) were removed from ggml and
// never appear in a valid file.
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
  kNVFP4 = 40,
  kQ1_0 = 41,
};

// True for the ids above (types whose block geometry we know, so a tensor of that type can be
// sized and skipped even when we cannot dequantize it).
bool IsKnownGgmlType(uint32_t id);
// "Q4_K", "BF16", ...; "unknown" for an id IsKnownGgmlType rejects.
std::string_view GgmlTypeName(GgmlType type);
// Elements per block (1 for the float and integer types, 32 or 256 for quants) and the bytes one
// block takes. Throw gemmapod::Error naming the id for an unknown type.
int64_t GgmlBlockSize(GgmlType type);
int64_t GgmlBlockBytes(GgmlType type);
// Whether DequantizeRow handles the type: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K,
// Q3_K, Q4_K, Q5_K, Q6_K.
bool CanDequantize(GgmlType type);

// Converts `n` consecutive elements stored as `type` at `src` (n / block size blocks, no alignment
// required) to f32 at `dst`. Throws gemmapod::Error naming the type when it is not one
// CanDequantize accepts or n is not a non-negative multiple of its block size; the caller adds
// the file and tensor.
void DequantizeRow(GgmlType type, const void* src, float* dst, int64_t n);

}  // namespace gemmapod
