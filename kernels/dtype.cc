#include "kernels/dtype.h"

#include "kernels/half.h"

namespace rsd {

const char* DTypeName(DType t) {
  switch (t) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kQ8_0: return "Q8_0";
    case DType::kQ4_0: return "Q4_0";
    case DType::kQ4_1: return "Q4_1";
  }
  return "?";
}

float F16ToF32(uint16_t h) { return half::F16ToF32(h); }
uint16_t F32ToF16(float f) { return half::F32ToF16(f); }
float BF16ToF32(uint16_t h) { return half::BF16ToF32(h); }
uint16_t F32ToBF16(float f) { return half::F32ToBF16(f); }

}  // namespace rsd
