// Element and block formats the kernels understand. Plain C++; no Abseil (kernels/ is device math).
#pragma once

#include <cstddef>
#include <cstdint>

namespace rsd {

// Weight and state element formats. Block formats follow GGUF/ggml's layouts byte for byte:
//   Q8_0: 32 values, {f16 d; int8 q[32]}               x = d*q
//   Q4_0: 32 values, {f16 d; uint8 qs[16]}             x = d*(nibble-8); low nibbles are values 0..15
//   Q4_1: 32 values, {f16 d; f16 m; uint8 qs[16]}      x = d*nibble + m
enum class DType : uint8_t { kF32 = 0, kF16 = 1, kBF16 = 2, kQ8_0 = 3, kQ4_0 = 4, kQ4_1 = 5 };

constexpr int kQBlock = 32;

// Values per storage block (1 for plain types).
constexpr int DTypeBlockValues(DType t) {
  return (t == DType::kQ8_0 || t == DType::kQ4_0 || t == DType::kQ4_1) ? kQBlock : 1;
}
// Bytes per storage block.
constexpr size_t DTypeBlockBytes(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kF16: return 2;
    case DType::kBF16: return 2;
    case DType::kQ8_0: return 2 + 32;
    case DType::kQ4_0: return 2 + 16;
    case DType::kQ4_1: return 4 + 16;
  }
  return 0;
}
// Bytes for a row of `n` values; `n` must be a multiple of DTypeBlockValues(t).
constexpr size_t DTypeRowBytes(DType t, int64_t n) {
  return static_cast<size_t>(n / DTypeBlockValues(t)) * DTypeBlockBytes(t);
}
const char* DTypeName(DType t);

// IEEE half and bfloat16 conversions (round to nearest even), one implementation for every path.
float F16ToF32(uint16_t h);
uint16_t F32ToF16(float f);
float BF16ToF32(uint16_t h);
uint16_t F32ToBF16(float f);

}  // namespace rsd
