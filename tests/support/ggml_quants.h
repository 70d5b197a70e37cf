// ggml's reference quantizers and dequantizers for the formats we read, written from ggml's
// formulas (quantize_row_*_ref / dequantize_row_*), for writing synthetic models and checking
// what the loaders return. Test support only; the engine's kernels have their own.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/dtype.h"

namespace rsd::testing {

// Encodes a row of `n` floats as `t` (n must be a multiple of DTypeBlockValues(t)).
std::vector<uint8_t> QuantizeRow(DType t, const float* x, int64_t n);

// Decodes a row of `n` values of type `t`.
std::vector<float> DequantizeRow(DType t, const uint8_t* data, int64_t n);

// QuantizeRow then DequantizeRow: what a value becomes once stored as `t`.
std::vector<float> RoundTrip(DType t, const std::vector<float>& x);

}  // namespace rsd::testing
