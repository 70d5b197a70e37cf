// IEEE half and bfloat16 conversions, one implementation for the CPU kernels and the CUDA kernels
// (host and device), so both round and decode identically (DESIGN.md section 2). Plain C++.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define RSD_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define RSD_HOST_DEVICE inline
#endif

namespace rsd::half {

RSD_HOST_DEVICE float FromBits(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
#endif
}

RSD_HOST_DEVICE uint32_t ToBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t x;
  std::memcpy(&x, &f, 4);
  return x;
#endif
}

// Exact: every half is a float.
RSD_HOST_DEVICE float F16ToF32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FF;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400) == 0);
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3FF) << 13;
    }
  } else if (exp == 0x1F) {  // Inf; a NaN comes back quiet with its payload, as F16C gives it
    bits = sign | 0x7F800000u | mant << 13 | (mant != 0 ? 0x400000u : 0u);
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  return FromBits(bits);
}

// Round to nearest even; overflow to infinity; a NaN stays NaN, quiet, with the top of its
// payload (bit for bit what x86's F16C conversion gives, so vector paths may use it).
RSD_HOST_DEVICE uint16_t F32ToF16(float f) {
  const uint32_t x = ToBits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  const uint32_t absx = x & 0x7FFFFFFFu;
  if (absx >= 0x7F800000u) {  // Inf or NaN
    if (absx == 0x7F800000u) return sign | 0x7C00;
    return sign | 0x7E00 | static_cast<uint16_t>((absx >> 13) & 0x3FF);
  }
  if (absx >= 0x477FF000u) return sign | 0x7C00;  // rounds to >= 65520: overflow to Inf
  if (absx < 0x38800000u) {                       // below 2^-14: subnormal half (or zero)
    if (absx < 0x33000000u) return sign;          // below half the smallest subnormal
    const uint32_t e = absx >> 23;
    const uint32_t mant = (absx & 0x7FFFFF) | 0x800000;
    const int shift = 126 - static_cast<int>(e);  // 14 + 1 .. 24
    uint32_t v = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (v & 1))) ++v;
    return sign | static_cast<uint16_t>(v);
  }
  uint32_t v = ((absx >> 13) - (112u << 10));
  const uint32_t rem = absx & 0x1FFF;
  if (rem > 0x1000 || (rem == 0x1000 && (v & 1))) ++v;
  return sign | static_cast<uint16_t>(v);
}

RSD_HOST_DEVICE float BF16ToF32(uint16_t h) { return FromBits(static_cast<uint32_t>(h) << 16); }

RSD_HOST_DEVICE uint16_t F32ToBF16(float f) {
  const uint32_t x = ToBits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x40);  // NaN
  const uint32_t rounding = 0x7FFF + ((x >> 16) & 1);
  return static_cast<uint16_t>((x + rounding) >> 16);
}

}  // namespace rsd::half
