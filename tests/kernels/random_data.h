// Random inputs the kernel tests share: floats, hot K/V as F16 bits, and weight matrices of any
// dtype with realistic, finite scales.
#pragma once

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/dtype.h"
#include "kernels/half.h"

namespace rsd::testing {

inline std::vector<float> RandomFloats(std::mt19937& rng, size_t n, float scale) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// Hot K/V as the pool holds it: F16 bits of uniform values in [-scale, scale].
inline std::vector<uint16_t> RandomHalves(std::mt19937& rng, size_t n, float scale) {
  std::vector<uint16_t> out;
  for (float x : RandomFloats(rng, n, scale)) out.push_back(F32ToF16(x));
  return out;
}

// A weight matrix [rows, k] of `t` as raw bytes: float types uniform in [-0.2, 0.2]; block types
// random payload bytes with F16 scales (and Q4_1 minimums) uniform in [-0.05, 0.05].
inline std::vector<uint8_t> RandomWeights(std::mt19937& rng, DType t, int64_t rows, int64_t k) {
  std::vector<uint8_t> w(DTypeRowBytes(t, k) * rows);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> u(-0.2f, 0.2f);
  switch (t) {
    case DType::kF32: {
      std::vector<float> f = RandomFloats(rng, rows * k, 0.2f);
      std::memcpy(w.data(), f.data(), w.size());
      break;
    }
    case DType::kF16:
    case DType::kBF16:
      for (int64_t i = 0; i < rows * k; ++i) {
        const uint16_t h = t == DType::kF16 ? F32ToF16(u(rng)) : F32ToBF16(u(rng));
        std::memcpy(w.data() + 2 * i, &h, 2);
      }
      break;
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_1: {
      for (auto& x : w) x = static_cast<uint8_t>(byte(rng));
      const size_t bb = DTypeBlockBytes(t);
      std::uniform_real_distribution<float> sc(-0.05f, 0.05f);
      for (int64_t b = 0; b < rows * k / 32; ++b) {
        const uint16_t d = F32ToF16(sc(rng)), m = F32ToF16(sc(rng));
        std::memcpy(w.data() + bb * b, &d, 2);
        if (t == DType::kQ4_1) std::memcpy(w.data() + bb * b + 2, &m, 2);
      }
      break;
    }
  }
  return w;
}

}  // namespace rsd::testing
