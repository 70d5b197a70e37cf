// The GGUF block layout of the quantized weight types, as the CPU kernels read it: an F16 scale
// (and for Q4_1 an F16 minimum) followed by the payload.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/dtype.h"

namespace rsd::cpu {

// A little-endian 16-bit value at any alignment.
inline uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// Offset of the nibble / int8 payload inside a block.
constexpr int QsOffset(DType t) { return t == DType::kQ4_1 ? 4 : 2; }

}  // namespace rsd::cpu
