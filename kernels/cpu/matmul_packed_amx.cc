// PackedGroupDotsAmx (packed_weights.h): the packed layout's 16 output rows against 16 activation
// rows at a time on AMX. Per block, one tile multiply (TDPBSUD: signed activation bytes times
// unsigned weight bytes) gives the exact integer sums of all 16 x 16 pairs in one tile; the
// packed chunks are already the tile's VNNI row format (four consecutive weights of each of 16
// rows per 64 bytes), so Q8_0 (stored as w + 128) loads straight from the weights and a 4-bit
// group only splits its nibbles into eight tile rows a block, once for all its activation tiles.
// Then, as on every path, -bias * sum(q)
// corrects the unsigned weights (exact integers) and acc += (dw * da) * P for each activation row,
// the blocks walked in the group's class order; Q4_1's mw * s terms go into their own accumulators
// in a second walk (the same additions in the same order as PackedGroupDotsVnni's, so the same
// bits). Block i + 1's tile work is issued before block i's float work, into the other of two
// tile sets. Measured on a Xeon with AMX (2 threads of a VM): the tile work of a block (loads of
// 16 + 8 rows, the multiply, the store of 16 rows of sums) hardly overlaps the float work, so a
// 16 x 16 block costs ~42 ns against the VNNI kernel's ~50 (Q4_1, k = 576..4,608): the per-block
// float arithmetic the numerics fix, not the integer products, bounds both.
//
// GCC 12's AVX-512 headers pass an uninitialized `_mm512_undefined_*` value as the unused
// pass-through operand of unmasked intrinsics (GCC bug 105593); the operand is never read.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstring>
#include <vector>

#include "kernels/cpu/dot.h"
#include "kernels/cpu/packed_kernels.h"
#include "kernels/cpu/packed_weights.h"

namespace rsd::cpu {
namespace {

#define RSD_AMX                                                             \
  __attribute__((                                                           \
      target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,f16c,fma,amx-tile," \
             "amx-int8")))

constexpr int kM = 16;  // activation rows per tile

// Tiles 0 and 1: the integer sums (16 rows x 16 int32); 2 and 3: activation bytes (16 rows x one
// block of 32); 4 and 5: weights (8 rows of four bytes of each of 16 outputs).
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {64, 64, 32, 32, 64, 64};
  uint8_t rows[16] = {16, 16, 16, 16, 8, 8};
};

// The configuration is per thread and stays loaded (nothing else here uses tiles).
RSD_AMX void ConfigureTiles() {
  thread_local bool configured = false;
  if (configured) return;
  static const TileConfig config;
  _tile_loadconfig(&config);
  configured = true;
}

template <DType T>
constexpr int32_t WeightBias() {
  return T == DType::kQ8_0 ? 128 : (T == DType::kQ4_0 ? 8 : 0);
}

constexpr size_t kTileBytes = 512;  // one block's weights of 16 rows as 8 tile rows of 64 bytes

// A group's 4-bit blocks as tile rows, in the group's order: block i's nibbles split into eight
// rows at out + 512 i (low nibbles: weights 0..15, high: 16..31). Done once per group before any
// tile load reads them (a tile load of bytes still in the store buffer waits for them).
RSD_AMX void UnpackNibbles(const uint8_t* group, int64_t nb, size_t pb, int sb, uint8_t* out) {
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  for (int64_t i = 0; i < nb; ++i, out += kTileBytes) {
    const uint8_t* qs = group + i * pb + sb;
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __m512i z = _mm512_loadu_si512(qs + 64 * j);
      _mm512_store_si512(out + 64 * j, _mm512_and_si512(z, m4));
      _mm512_store_si512(out + 64 * (4 + j), _mm512_and_si512(_mm512_srli_epi16(z, 4), m4));
    }
  }
}

// The weights of block i as tile rows: Q8_0's packed chunks are already; 4-bit blocks come from
// UnpackNibbles' buffer.
template <DType T>
inline const void* WeightRows(const uint8_t* group, const uint8_t* unpacked, int64_t i) {
  constexpr size_t pb = kPackRows * DTypeBlockBytes(T);
  if constexpr (T == DType::kQ8_0) return group + i * pb + 32;
  return unpacked + i * kTileBytes;
}

// One block's tile work into tile set `slot` (sums 0 or 1, activations 2 or 3, weights 4 or 5:
// tile numbers are literals in the instructions); the sums land in sums[slot] (16 x 16 int32,
// row r = activation row r).
RSD_AMX inline __attribute__((always_inline)) void Issue(int slot, const void* w, const int8_t* q,
                                                         int64_t lda, int32_t (*sums)[kM * 16]) {
  if (slot == 0) {
    _tile_loadd(2, q, lda);
    _tile_loadd(4, w, 64);
    _tile_zero(0);
    _tile_dpbsud(0, 2, 4);
    _tile_stored(0, sums[0], 64);
  } else {
    _tile_loadd(3, q, lda);
    _tile_loadd(5, w, 64);
    _tile_zero(1);
    _tile_dpbsud(1, 3, 5);
    _tile_stored(1, sums[1], 64);
  }
}

// The blocks of a group in its class order: class c, block b, position in the group.
struct Cursor {
  int64_t c = 0, b = 0;
  void Next(int64_t nb) {
    b += 4;
    if (b >= nb) b = ++c;
  }
};

// acc_out[c][r] = class c's accumulators (16 outputs) of activation row r.
template <DType T>
RSD_AMX void ScaledSums(const uint8_t* group, const uint8_t* unpacked, int64_t nb, const Q8Row* a,
                        int64_t lda, const uint8_t* next_group, __m512 (*acc_out)[kM]) {
  constexpr size_t pb = kPackRows * DTypeBlockBytes(T);
  alignas(64) int32_t sums[2][kM * 16];
  const int8_t* q0 = a[0].q;
  Cursor next;
  Issue(0, WeightRows<T>(group, unpacked, 0), q0 + 32 * next.b, lda, sums);
  __m512 acc[kM];
  for (int64_t i = 0; i < nb; ++i) {
    const Cursor cur = next;
    next.Next(nb);
    if (cur.b == cur.c) {  // a class starts: the previous one is complete
#pragma GCC unroll 16
      for (int r = 0; r < kM; ++r) {
        if (cur.c > 0) acc_out[cur.c - 1][r] = acc[r];
        acc[r] = _mm512_setzero_ps();
      }
    }
    if (i + 1 < nb) {
      Issue((i + 1) & 1, WeightRows<T>(group, unpacked, i + 1), q0 + 32 * next.b, lda, sums);
    }
    PrefetchAhead(next_group, i * pb, pb);
    const uint8_t* p = group + i * pb;
    const int32_t* s = sums[i & 1];
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#pragma GCC unroll 16
    for (int r = 0; r < kM; ++r) {
      __m512i v = _mm512_load_si512(s + 16 * r);
      if constexpr (WeightBias<T>() != 0) {
        v = _mm512_add_epi32(v, _mm512_set1_epi32(-WeightBias<T>() * a[r].sum[cur.b]));
      }
      const __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(a[r].d[cur.b]));
      acc[r] = MulAdd(acc[r], scale, _mm512_cvtepi32_ps(v));
    }
  }
  const int64_t last = nb < 4 ? nb - 1 : 3;
#pragma GCC unroll 16
  for (int r = 0; r < kM; ++r) acc_out[last][r] = acc[r];
  for (int64_t c = last + 1; c < 4; ++c) {
    for (int r = 0; r < kM; ++r) acc_out[c][r] = _mm512_setzero_ps();
  }
}

// Q4_1's offsets: off_out[c][r] = class c's sums of mw * s, in the same block order.
RSD_AMX void Offsets(const uint8_t* group, int64_t nb, const Q8Row* a, __m512 (*off_out)[kM]) {
  constexpr size_t pb = kPackRows * DTypeBlockBytes(DType::kQ4_1);
  const uint8_t* p = group;
  for (int64_t c = 0; c < 4; ++c) {
    __m512 off[kM];
#pragma GCC unroll 16
    for (int r = 0; r < kM; ++r) off[r] = _mm512_setzero_ps();
    for (int64_t b = c; b < nb; b += 4, p += pb) AddQ41Offsets<kM>(p, a, b, off);
#pragma GCC unroll 16
    for (int r = 0; r < kM; ++r) off_out[c][r] = off[r];
  }
}

template <DType T>
RSD_AMX void Tile(const uint8_t* group, const uint8_t* unpacked, int64_t nb, const Q8Row* a,
                  int64_t lda, const float* bias, float* out, int64_t ldo, const uint8_t* next) {
  __m512 acc[4][kM], off[4][kM];
  ScaledSums<T>(group, unpacked, nb, a, lda, next, acc);
  if constexpr (T == DType::kQ4_1) {
    Offsets(group, nb, a, off);
  } else {
    for (int c = 0; c < 4; ++c) {
      for (int r = 0; r < kM; ++r) off[c][r] = _mm512_setzero_ps();
    }
  }
  for (int r = 0; r < kM; ++r) {
    const __m512 row_acc[4] = {acc[0][r], acc[1][r], acc[2][r], acc[3][r]};
    const __m512 row_off[4] = {off[0][r], off[1][r], off[2][r], off[3][r]};
    StoreCombined(row_acc, row_off, bias, out + r * ldo);
  }
}

template <DType T>
void Rows(const uint8_t* group, int64_t nb, const Q8Row* a, int64_t n, int64_t lda,
          const float* bias, float* out, int64_t ldo, const uint8_t* next) {
  const uint8_t* unpacked = nullptr;
  if (n >= kM) ConfigureTiles();
  if (T != DType::kQ8_0 && n >= kM) {
    thread_local std::vector<uint8_t> buffer;
    const size_t bytes = static_cast<size_t>(nb) * kTileBytes + 64;
    if (buffer.size() < bytes) buffer.resize(bytes);
    uint8_t* aligned = buffer.data() + (-reinterpret_cast<uintptr_t>(buffer.data()) & 63);
    UnpackNibbles(group, nb, kPackRows * DTypeBlockBytes(T), T == DType::kQ4_1 ? 64 : 32, aligned);
    unpacked = aligned;
  }
  int64_t r = 0;
  // The first tile (or the VNNI rows, when there is none) prefetches the next group.
  for (; r + kM <= n; r += kM) {
    Tile<T>(group, unpacked, nb, a + r, lda, bias, out + r * ldo, ldo, r == 0 ? next : nullptr);
  }
  if (r < n) {
    PackedGroupDotsVnni(T, group, nb, a + r, n - r, bias, out + r * ldo, ldo,
                        r == 0 ? next : nullptr);
  }
}

}  // namespace

void PackedGroupDotsAmx(DType wtype, const uint8_t* group, int64_t nb, const Q8Row* a,
                        int64_t n_rows, int64_t lda, const float* bias, float* out, int64_t ldo,
                        const uint8_t* next) {
  switch (wtype) {
    case DType::kQ4_1:
      Rows<DType::kQ4_1>(group, nb, a, n_rows, lda, bias, out, ldo, next);
      break;
    case DType::kQ4_0:
      Rows<DType::kQ4_0>(group, nb, a, n_rows, lda, bias, out, ldo, next);
      break;
    default:
      Rows<DType::kQ8_0>(group, nb, a, n_rows, lda, bias, out, ldo, next);
      break;
  }
}

}  // namespace rsd::cpu
