// Dot products with one fixed reduction order on every ISA path.
//
// f32: 16 lanes; element i accumulates into lane i % 16 (a = a + x*y, no FMA), then lanes are
// folded as a tree: lane j += lane j+8, j+4, j+2, j+1. Scalar, AVX2 (2 x 8 lanes) and AVX-512
// (16 lanes) produce the same bits.
//
// Quantized: activations are quantized per 32-value block to int8 (Q8Row). The integer dot of a
// weight block with an activation block is exact, so ISA paths only compute the per-block integer
// sums exactly; the float combination of blocks follows one order (see QuantDot).
#pragma once

#include <cstdint>

#include "kernels/cpu/isa.h"
#include "kernels/dtype.h"

namespace rsd::cpu {

float DotF32(Isa isa, const float* a, const float* b, int64_t n);

// An activation row quantized per block of 32: x ≈ d[b] * q[32b + i].
struct Q8Row {
  const int8_t* q;     // [k]
  const float* d;      // [k / 32]
  const int32_t* sum;  // [k / 32]: sum of the block's q
};

// Quantizes x[k] (k % 32 == 0) into q/d/sum. One scalar implementation for every path.
void QuantizeQ8Row(const float* x, int64_t k, int8_t* q, float* d, int32_t* sum);

// Per-block integer sums of weight row `w` (dtype Q8_0, Q4_0 or Q4_1; raw nibbles 0..15 for the
// 4-bit types) against activation q: sums[b] = sum_i w_int[32b+i] * q[32b+i]. For tests.
void BlockIntDots(Isa isa, DType wtype, const uint8_t* w, const int8_t* q, int64_t n_blocks,
                  int32_t* sums);

// The float dot of a quantized weight row (n_blocks blocks) with a Q8Row. Per block:
// Q8_0 (dw*da)*sumi; Q4_0 (dw*da)*(sumi - 8*qsum); Q4_1 (dw*da)*sumi + mw*(da*qsum); block b adds
// into accumulator b % 4; result (acc0 + acc1) + (acc2 + acc3). Same bits on every path.
float QuantDot(Isa isa, DType wtype, const uint8_t* w, const Q8Row& a, int64_t n_blocks);

}  // namespace rsd::cpu
