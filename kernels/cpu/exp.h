// Our own exp: glibc picks its expf variant by CPU, so results could differ between machines and
// between the scalar and vector paths. This one uses only IEEE mul/add/rint (no FMA), so every
// path and every machine gets the same bits. Max error about 2 ulp on [-87.3, 88]; below, 0.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace rsd::cpu {

inline float Exp(float x) {
  if (!(x >= -87.3f)) return x != x ? x : 0.0f;  // NaN stays NaN; flush below 2^-126 to 0
  if (x > 88.0f) return INFINITY;
  const float n = std::nearbyint(x * 1.44269504088896341f);
  // Cody-Waite: ln2 split so n * kLn2Hi is exact.
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t e = static_cast<int32_t>(n);
  // 2^e for e in [-126, 127]: x >= -87.3 keeps e >= -126.
  const uint32_t bits = static_cast<uint32_t>(e + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

inline float Silu(float x) { return x / (1.0f + Exp(-x)); }

}  // namespace rsd::cpu
