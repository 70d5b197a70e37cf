#include "tests/support/ggml_quants.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "storage/common/status.h"

namespace rsd::testing {
namespace {

void PutHalf(uint8_t* p, float f) {
  uint16_t h = F32ToF16(f);
  std::memcpy(p, &h, 2);
}

float GetHalf(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return F16ToF32(h);
}

// quantize_row_q8_0_ref: d = amax/127, q = round(x/d).
void QuantizeQ8_0(const float* x, uint8_t* out) {
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  PutHalf(out, d);
  for (int j = 0; j < 32; ++j) {
    out[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::round(x[j] * id)));
  }
}

// quantize_row_q4_0_ref: d = max/-8 where max is the value of largest magnitude;
// nibble = min(15, (int8)(x/d + 8.5)); element j in the low nibble of byte j, j+16 in the high.
void QuantizeQ4_0(const float* x, uint8_t* out) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < 32; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  const float d = max / -8.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  PutHalf(out, d);
  for (int j = 0; j < 16; ++j) {
    const float x0 = x[j] * id, x1 = x[16 + j] * id;
    const uint8_t q0 =
        static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x0 + 8.5f))));
    const uint8_t q1 =
        static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x1 + 8.5f))));
    out[2 + j] = static_cast<uint8_t>(q0 | (q1 << 4));
  }
}

// quantize_row_q4_1_ref: d = (max-min)/15, m = min, nibble = min(15, (int8)((x-min)/d + 0.5)).
void QuantizeQ4_1(const float* x, uint8_t* out) {
  float min = FLT_MAX, max = -FLT_MAX;
  for (int j = 0; j < 32; ++j) {
    min = std::min(min, x[j]);
    max = std::max(max, x[j]);
  }
  const float d = (max - min) / 15.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  PutHalf(out, d);
  PutHalf(out + 2, min);
  for (int j = 0; j < 16; ++j) {
    const float x0 = (x[j] - min) * id, x1 = (x[16 + j] - min) * id;
    const uint8_t q0 =
        static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x0 + 0.5f))));
    const uint8_t q1 =
        static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x1 + 0.5f))));
    out[4 + j] = static_cast<uint8_t>(q0 | (q1 << 4));
  }
}

}  // namespace

std::vector<uint8_t> QuantizeRow(DType t, const float* x, int64_t n) {
  RSD_CHECK(n % DTypeBlockValues(t) == 0);
  std::vector<uint8_t> out(DTypeRowBytes(t, n));
  const int64_t nb = n / DTypeBlockValues(t);
  const size_t bb = DTypeBlockBytes(t);
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t* o = out.data() + b * bb;
    switch (t) {
      case DType::kF32:
        std::memcpy(o, &x[b], 4);
        break;
      case DType::kF16:
        PutHalf(o, x[b]);
        break;
      case DType::kBF16: {
        uint16_t h = F32ToBF16(x[b]);
        std::memcpy(o, &h, 2);
        break;
      }
      case DType::kQ8_0:
        QuantizeQ8_0(x + b * 32, o);
        break;
      case DType::kQ4_0:
        QuantizeQ4_0(x + b * 32, o);
        break;
      case DType::kQ4_1:
        QuantizeQ4_1(x + b * 32, o);
        break;
    }
  }
  return out;
}

std::vector<float> DequantizeRow(DType t, const uint8_t* data, int64_t n) {
  RSD_CHECK(n % DTypeBlockValues(t) == 0);
  std::vector<float> y(n);
  const int64_t nb = n / DTypeBlockValues(t);
  const size_t bb = DTypeBlockBytes(t);
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* p = data + b * bb;
    float* o = y.data() + b * DTypeBlockValues(t);
    switch (t) {
      case DType::kF32:
        std::memcpy(o, p, 4);
        break;
      case DType::kF16:
        *o = GetHalf(p);
        break;
      case DType::kBF16: {
        uint16_t h;
        std::memcpy(&h, p, 2);
        *o = BF16ToF32(h);
        break;
      }
      case DType::kQ8_0: {
        const float d = GetHalf(p);
        for (int j = 0; j < 32; ++j) o[j] = static_cast<float>(static_cast<int8_t>(p[2 + j])) * d;
        break;
      }
      case DType::kQ4_0: {
        const float d = GetHalf(p);
        for (int j = 0; j < 16; ++j) {
          o[j] = static_cast<float>((p[2 + j] & 0x0f) - 8) * d;
          o[j + 16] = static_cast<float>((p[2 + j] >> 4) - 8) * d;
        }
        break;
      }
      case DType::kQ4_1: {
        const float d = GetHalf(p), m = GetHalf(p + 2);
        for (int j = 0; j < 16; ++j) {
          o[j] = static_cast<float>(p[4 + j] & 0x0f) * d + m;
          o[j + 16] = static_cast<float>(p[4 + j] >> 4) * d + m;
        }
        break;
      }
    }
  }
  return y;
}

std::vector<float> RoundTrip(DType t, const std::vector<float>& x) {
  std::vector<uint8_t> q = QuantizeRow(t, x.data(), static_cast<int64_t>(x.size()));
  return DequantizeRow(t, q.data(), static_cast<int64_t>(x.size()));
}

}  // namespace rsd::testing
