// Dot products with one fixed reduction order on every ISA path.
//
// f32: 16 lanes; element i accumulates into lane i % 16 with one fused multiply-add (a =
// fma(x, y, a), rounded once: std::fma on the scalar path), then lanes are folded as a tree: lane
// j += lane j+8, j+4, j+2, j+1. Scalar, AVX2 (2 x 8 lanes) and AVX-512 (16 lanes) produce the
// same bits (kernel version 3; versions 1 and 2 multiplied, rounded, then added).
//
// Quantized: activations are quantized per 32-value block to int8 (Q8Row). The integer dot of a
// weight block with an activation block is exact, so ISA paths only compute the per-block integer
// sums exactly; the float combination of blocks follows one order (see QuantDot).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cpu/isa.h"
#include "kernels/dtype.h"

namespace rsd::cpu {

float DotF32(Isa isa, const float* a, const float* b, int64_t n);
// y[i] = fma(a, x[i], y[i]) (one rounding). Elementwise, so every path gives the same bits
// whatever its width.
void AxpyF32(Isa isa, float* y, float a, const float* x, int64_t n);
// out[j] = DotF32(isa, a, b + j * stride, d) for j < n <= 16, bit for bit: on AVX-512 with d a
// multiple of 16 the n dot products run together and their 16-lane folds are done for all of
// them at once by transposing additions (each sum still adds the same pairs in the same tree).
// The rows are F16 (the hot K/V), each element converted exactly to F32 as it is read: the bits
// of DotF32 on the converted rows.
void DotF32Many(Isa isa, const float* a, const uint16_t* b, int64_t stride, int n, int64_t d,
                float* out);
// AxpyF32(isa, y, w[j], x + j * stride, d) for j = 0 .. n-1 in that order, with y held in
// registers across the rows: the same operations on every element, so the same bits. F16 rows
// (V), converted as in DotF32Many.
void WeightedSumF32(Isa isa, float* y, const float* w, const uint16_t* x, int64_t stride, int n,
                    int64_t d);
// The same keys or rows for the g query heads that share them (grouped-query attention): head h's
// query a + h * a_stride, scores out + h * out_stride; accumulator y + h * y_stride, weights
// w + h * w_stride. Bit for bit g calls of DotF32Many / WeightedSumF32; the AVX-512 paths convert
// each F16 element once for all g heads.
void DotF32ManyGroup(Isa isa, const float* a, int64_t a_stride, int g, const uint16_t* b,
                     int64_t stride, int n, int64_t d, float* out, int64_t out_stride);
void WeightedSumF32Group(Isa isa, float* y, int64_t y_stride, const float* w, int64_t w_stride,
                         int g, const uint16_t* x, int64_t stride, int n, int64_t d);
// out[i] = half::F32ToF16(x[i]) (round to nearest even) on every path (F16C where present).
void F32ToF16Row(Isa isa, const float* x, uint16_t* out, int64_t n);
// probs[j] = Exp(scores[j] - max) (exp.h's Exp) for j < n, 16 or 8 at a time on the vector
// paths (Exp16, Exp8: the scalar bits).
void ExpShifted(Isa isa, const float* scores, float max, float* probs, int64_t n);
// y[i] = y[i] * a + x[i] * b (each product rounded, then the sum), elementwise like AxpyF32.
void ScaleAddF32(Isa isa, float* y, float a, const float* x, float b, int64_t n);

// An activation row quantized per block of 32 as llama.cpp's Q8_1 does (so our logits track its
// reference closely): x ≈ d[b] * q[32b + i], with d rounded to F16 and s = F16(d * sum(q)).
struct Q8Row {
  const int8_t* q;     // [k]
  const float* d;      // [k / 32]: the block scale, rounded through F16
  const int32_t* sum;  // [k / 32]: sum of the block's q (exact)
  const float* s;      // [k / 32]: F16-rounded d * sum, the Q4_1 offset term
};

// Quantizes x[k] (k % 32 == 0): amax/127 scale, q = round-half-even(x * 127/amax); scales are
// computed within the 32-value block, never across rows. Every path gives the same bits (for
// finite x).
void QuantizeQ8Row(Isa isa, const float* x, int64_t k, int8_t* q, float* d, int32_t* sum, float* s);

// Per-block integer sums of weight row `w` (dtype Q8_0, Q4_0 or Q4_1; raw nibbles 0..15 for the
// 4-bit types) against activation q: sums[b] = sum_i w_int[32b+i] * q[32b+i]. For tests.
void BlockIntDots(Isa isa, DType wtype, const uint8_t* w, const int8_t* q, int64_t n_blocks,
                  int32_t* sums);

// The float dot of a quantized weight row (n_blocks blocks) with a Q8Row: per block, the exact
// integer sum of its 32 products scaled by dw*da and added into accumulator b % 4 (for Q4_1 also
// mw*s into offset b % 4); then (acc0 + acc1) + (acc2 + acc3) plus the offsets paired the same
// way. The order is spelled out in dot_quant.cc; every path gives the same bits.
float QuantDot(Isa isa, DType wtype, const uint8_t* w, const Q8Row& a, int64_t n_blocks);
// QuantDot of one weight row against n_rows activation rows (out[r]); same bits as n_rows calls.
void QuantDotRows(Isa isa, DType wtype, const uint8_t* w, const Q8Row* a, int64_t n_rows,
                  int64_t n_blocks, float* out);

}  // namespace rsd::cpu
