// The AVX-512 VNNI path's weight layout (WeightLayout::kPacked16): the same bytes as the file's
// rows, rearranged so that one 512-bit register holds four consecutive weights of each of 16
// output rows and vpdpbusd against one broadcast group of four activation bytes gives 16 outputs'
// partial sums in place (no horizontal sums, no rearranged activations).
//
// Rows go in groups of 16; rows past the last whole group keep the row-major layout after the
// groups. A group is its nb blocks in class order (blocks 0, 4, 8, ..., then 1, 5, 9, ..., then
// 2, ..., then 3, ...: the accumulator each block feeds, dot_quant.cc), each a packed block of
// 16 * (the dtype's block bytes):
//   Q4_0: 16 F16 scales dw, then 4 chunks of 64 bytes;
//   Q4_1: 16 F16 scales dw, 16 F16 minimums mw, then 4 chunks of 64 bytes;
//   Q8_0: 16 F16 scales dw, then 8 chunks of 64 bytes;
// chunk j's bytes 4o..4o+3 are row o's payload bytes 4j..4j+3 (for Q8_0 each XOR 0x80, the
// unsigned w + 128 vpdpbusd takes). A 4-bit payload byte i holds weights i (low nibble) and
// i + 16 (high nibble), so a chunk's low nibbles are weights 4j..4j+3 and its high nibbles
// weights 16 + 4j..16 + 4j + 3.
#pragma once

#include <cstdint>

#include "kernels/dtype.h"

namespace rsd::cpu {

constexpr int kPackRows = 16;

// Whether weights of this dtype and shape are packed by PackWeights (quantized, one group or more).
bool Packable(DType t, int64_t rows);

// Position of block b in a group's class order, for a row of nb blocks.
int64_t PackedBlockIndex(int64_t b, int64_t nb);

// dst (rows * row bytes) = the packed layout of the row-major src. dst and src do not overlap.
void PackWeights(DType t, const uint8_t* src, int64_t rows, int64_t cols, uint8_t* dst);

// Row `r` of packed weights in the file's row-major bytes (row_bytes of them at out).
void UnpackWeightRow(DType t, const uint8_t* packed, int64_t rows, int64_t cols, int64_t r,
                     uint8_t* out);

}  // namespace rsd::cpu

namespace rsd::cpu {

struct Q8Row;

// The kernel over this layout (AVX-512 VNNI only): out[r * ldo + o] = QuantDot of row o of the
// packed group at `group` (16 rows of nb blocks of `wtype`) with a[r] (+ bias[o] when bias is
// not null), for o < 16 and r < n_rows. The bits of QuantDotScalar (dot_quant.cc's arithmetic):
// per block an exact integer sum, scaled by dw * da and added into the block's class; the group
// is walked class by class, each class's blocks in order, so every accumulator sees its blocks in
// the scalar path's order. `next`, when not null, is the group (of the same shape) the caller
// reads next: it is prefetched while this one computes.
void PackedGroupDotsVnni(DType wtype, const uint8_t* group, int64_t nb, const Q8Row* a,
                         int64_t n_rows, const float* bias, float* out, int64_t ldo,
                         const uint8_t* next = nullptr);

// The same on AMX (Isa::kAmx), for activation rows whose bytes are equally spaced:
// a[r].q == a[0].q + r * lda. Rows go 16 at a time through tile multiplies; the last n_rows % 16
// take PackedGroupDotsVnni. The same bits as PackedGroupDotsVnni; `next` as there.
void PackedGroupDotsAmx(DType wtype, const uint8_t* group, int64_t nb, const Q8Row* a,
                        int64_t n_rows, int64_t lda, const float* bias, float* out, int64_t ldo,
                        const uint8_t* next = nullptr);

}  // namespace rsd::cpu
