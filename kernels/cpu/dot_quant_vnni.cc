// The quantized dot on AVX-512 VNNI. The arithmetic is the one dot_quant.cc spells out for every
// path, so the bits are the scalar path's:
// - a group of four blocks is one register: quarter k holds the first 16 weights of block k (lo)
//   or its last 16 (hi), as unsigned bytes u (the nibble; for Q8_0, w + 128), and two vpdpbusd
//   against the matching activation bytes leave four int32 lanes per block whose sum is
//   sum(u * q); subtracting c * sum(q) (c = 8 for Q4_0, 128 for Q8_0, from the row's exact block
//   sums) gives P_b exactly;
// - one row (decode): the four lanes of each quarter are summed in place, and quarter k's float
//   lanes carry acc[k]; the activation halves are picked out of the row with a permute;
// - several rows: the rows are rearranged once per matmul (PrepareQ8Rows: halves already split,
//   scales interleaved by tiles of four rows), the weight group is unpacked once for up to 16
//   rows, and the lanes of a tile's four rows are summed per block by transposing additions
//   (integers: exact in any order), leaving one register per tile with lane 4r + k = P of block k,
//   row r, whose float lanes are the accumulators acc[k] of row r;
// - either way each block updates its class with one multiply by dw * da and one add, a last
//   group of fewer than four blocks only its blocks' lanes (masked adds); Q4_1's offsets the same
//   way; then ((acc0 + acc1) + (acc2 + acc3)) + ((off0 + off1) + (off2 + off3)) per row.
//
// GCC 12's AVX-512 headers pass an uninitialized `_mm512_undefined_*` value as the unused
// pass-through operand of unmasked intrinsics, which -Wuninitialized reports at every use (GCC
// bug 105593); the operand is never read.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "kernels/cpu/dot_quant_vnni.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "kernels/cpu/quant_block.h"

namespace rsd::cpu {
namespace {

#define RSD_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,f16c")))
// Helpers are forced inline: GCC does not always inline target-attributed functions, and a call
// per block group costs more than the group.
#define RSD_VNNI_INLINE RSD_VNNI inline __attribute__((always_inline))

constexpr int kMaxTiles = 4;  // rows per call: 4 tiles of 4

// F16 values at p, p + stride, ... (N <= 4 of them; the rest 0) as floats.
template <int N>
RSD_VNNI_INLINE __m128 LoadF16s(const uint8_t* p, size_t stride) {
  uint16_t h[4];
  for (int i = 0; i < 4; ++i) h[i] = i < N ? LoadU16(p + i * stride) : uint16_t{0};
  return _mm_cvtph_ps(_mm_setr_epi16(h[0], h[1], h[2], h[3], 0, 0, 0, 0));
}

// The block scales dw (and for Q4_1 the minimums mw) of N blocks as floats (the rest 0). Q4_1
// blocks start with the two F16 values side by side: one 32-bit load per block gives both.
template <DType T, int N>
RSD_VNNI_INLINE void LoadScales(const uint8_t* blk, __m128* dw, __m128* mw) {
  constexpr size_t bb = DTypeBlockBytes(T);
  if constexpr (T == DType::kQ4_1) {
    uint32_t v[4];
    for (int k = 0; k < 4; ++k) {
      v[k] = 0;
      if (k < N) std::memcpy(&v[k], blk + k * bb, 4);
    }
    const __m256 f =
        _mm256_cvtph_ps(_mm_setr_epi32(static_cast<int>(v[0]), static_cast<int>(v[1]),
                                       static_cast<int>(v[2]), static_cast<int>(v[3])));
    *dw = _mm256_castps256_ps128(
        _mm256_permutevar8x32_ps(f, _mm256_setr_epi32(0, 2, 4, 6, 0, 0, 0, 0)));
    *mw = _mm256_castps256_ps128(
        _mm256_permutevar8x32_ps(f, _mm256_setr_epi32(1, 3, 5, 7, 0, 0, 0, 0)));
  } else {
    *dw = LoadF16s<N>(blk, bb);
    *mw = _mm_setzero_ps();
  }
}

// Quarter k: the 16 payload bytes at `off` of block k (k < N; zero past N).
template <DType T, int N>
RSD_VNNI_INLINE __m512i JoinQuarters(const uint8_t* blk, int off) {
  constexpr size_t bb = DTypeBlockBytes(T);
  constexpr int qo = QsOffset(T);
  __m128i part[4];
  for (int k = 0; k < 4; ++k) {
    part[k] = k < N ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + k * bb + qo + off))
                    : _mm_setzero_si128();
  }
  return _mm512_inserti64x4(_mm512_zextsi256_si512(_mm256_set_m128i(part[1], part[0])),
                            _mm256_set_m128i(part[3], part[2]), 1);
}

// The unsigned weight bytes of N blocks: quarter k of *lo the values 0-15 of block k, of *hi the
// values 16-31 (quarters past N zero).
template <DType T, int N>
RSD_VNNI_INLINE void UnpackGroup(const uint8_t* blk, __m512i* lo, __m512i* hi) {
  const __m512i a = JoinQuarters<T, N>(blk, 0);
  __m512i b = _mm512_setzero_si512();
  if constexpr (T == DType::kQ8_0) b = JoinQuarters<T, N>(blk, 16);
  if constexpr (T == DType::kQ8_0) {
    const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
    *lo = _mm512_xor_si512(a, bias);
    *hi = _mm512_xor_si512(b, bias);  // missing blocks: 128, against zero activations
  } else {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    *lo = _mm512_and_si512(a, m4);
    *hi = _mm512_and_si512(_mm512_srli_epi16(a, 4), m4);
  }
}

// sum(u * q) of N blocks of one activation row, as four lanes per block in quarter k.
template <int N>
RSD_VNNI_INLINE __m512i RowLanes(const int8_t* q, __m512i lo, __m512i hi) {
  __m512i l0, l1;
  if constexpr (N == 4) {
    l0 = _mm512_loadu_si512(q);
    l1 = _mm512_loadu_si512(q + 64);
  } else {
    constexpr int bytes = 32 * N;
    l0 = _mm512_maskz_loadu_epi8(bytes >= 64 ? ~0ull : (1ull << bytes) - 1, q);
    l1 = _mm512_maskz_loadu_epi8(bytes > 64 ? (1ull << (bytes - 64)) - 1 : 0ull, q + 64);
  }
  // Quarter k: the activation bytes 0-15 (x_lo) or 16-31 (x_hi) of block k.
  const __m512i x_lo =
      _mm512_permutex2var_epi64(l0, _mm512_setr_epi64(0, 1, 4, 5, 8, 9, 12, 13), l1);
  const __m512i x_hi =
      _mm512_permutex2var_epi64(l0, _mm512_setr_epi64(2, 3, 6, 7, 10, 11, 14, 15), l1);
  return _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, x_lo), hi, x_hi);
}

// Four rows' lanes (quarter k: four lanes of block k) summed per block: lane 4r + k.
RSD_VNNI_INLINE __m512i TileSums(const __m512i* x) {
  const __m512i y01 =
      _mm512_add_epi32(_mm512_unpacklo_epi32(x[0], x[1]), _mm512_unpackhi_epi32(x[0], x[1]));
  const __m512i y23 =
      _mm512_add_epi32(_mm512_unpacklo_epi32(x[2], x[3]), _mm512_unpackhi_epi32(x[2], x[3]));
  const __m512i z = _mm512_add_epi32(_mm512_unpacklo_epi64(y01, y23),
                                     _mm512_unpackhi_epi64(y01, y23));  // lane 4k + r
  return _mm512_permutexvar_epi32(
      _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), z);
}

// Four rows' prepared data (Q8Prepared), at group 0.
struct Tile {
  const int8_t* split[4];
  const float* d;
  const float* s;
  const int32_t* sum;
};

// One tile of R rows in a group of N blocks at block b: the integer sums, then
// acc += (dw * da) * P and off += mw * s on the group's lanes.
template <DType T, int N, int R>
RSD_VNNI_INLINE void TileStep(const Tile& tile, int64_t g, __m512i lo, __m512i hi, __m512 dw,
                              __m512 mw, __m512* acc, __m512* off) {
  constexpr __mmask16 kLanes = static_cast<__mmask16>(((1u << N) - 1) * 0x1111u);
  __m512i x[4];
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r) {
    if (r < R) {
      const int8_t* q = tile.split[r] + g * 128;
      x[r] = _mm512_dpbusd_epi32(
          _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(q)), hi,
          _mm512_loadu_si512(q + 64));
    } else {
      x[r] = _mm512_setzero_si512();
    }
  }
  __m512i p = TileSums(x);
  if constexpr (T != DType::kQ4_1) {
    const __m512i sums = _mm512_loadu_si512(tile.sum + g * 16);
    p = _mm512_sub_epi32(p, _mm512_slli_epi32(sums, T == DType::kQ4_0 ? 3 : 7));
  }
  const __m512 s = _mm512_mul_ps(dw, _mm512_loadu_ps(tile.d + g * 16));
  *acc = _mm512_mask_add_ps(*acc, kLanes, *acc, _mm512_mul_ps(s, _mm512_cvtepi32_ps(p)));
  if constexpr (T == DType::kQ4_1) {
    *off =
        _mm512_mask_add_ps(*off, kLanes, *off, _mm512_mul_ps(mw, _mm512_loadu_ps(tile.s + g * 16)));
  }
}

// One group of N blocks at block b for NT tiles (the last with RL rows, the others full): the
// weights are unpacked once for all of them.
template <DType T, int NT, int RL, int N>
RSD_VNNI_INLINE void Group(const uint8_t* blk, const Tile* tiles, int64_t b, __m512* acc,
                           __m512* off) {
  __m512i lo, hi;
  UnpackGroup<T, N>(blk, &lo, &hi);
  __m128 dw4, mw4;
  LoadScales<T, N>(blk, &dw4, &mw4);
  const __m512 dw = _mm512_broadcast_f32x4(dw4), mw = _mm512_broadcast_f32x4(mw4);
#pragma GCC unroll 4
  for (int t = 0; t < NT - 1; ++t)
    TileStep<T, N, 4>(tiles[t], b / 4, lo, hi, dw, mw, &acc[t], &off[t]);
  TileStep<T, N, RL>(tiles[NT - 1], b / 4, lo, hi, dw, mw, &acc[NT - 1], &off[NT - 1]);
}

// ((l0 + l1) + (l2 + l3)) of each quarter, in its lane 0.
RSD_VNNI_INLINE __m512 PairSums(__m512 v) {
  v = _mm512_add_ps(v, _mm512_permute_ps(v, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm512_add_ps(v, _mm512_permute_ps(v, _MM_SHUFFLE(1, 0, 3, 2)));
}

// 4 * (NT - 1) + RL rows.
template <DType T, int NT, int RL>
RSD_VNNI void Rows(const uint8_t* w, const Tile* tiles, int64_t nb, float* out) {
  constexpr size_t bb = DTypeBlockBytes(T);
  __m512 acc[NT], off[NT];
  for (int t = 0; t < NT; ++t) acc[t] = off[t] = _mm512_setzero_ps();
  int64_t b = 0;
  for (; b + 4 <= nb; b += 4) Group<T, NT, RL, 4>(w + b * bb, tiles, b, acc, off);
  switch (nb - b) {
    case 3:
      Group<T, NT, RL, 3>(w + b * bb, tiles, b, acc, off);
      break;
    case 2:
      Group<T, NT, RL, 2>(w + b * bb, tiles, b, acc, off);
      break;
    case 1:
      Group<T, NT, RL, 1>(w + b * bb, tiles, b, acc, off);
      break;
    default:
      break;
  }
  for (int t = 0; t < NT; ++t) {
    const __m512 v = _mm512_add_ps(PairSums(acc[t]), PairSums(off[t]));
    alignas(16) float r4[4];
    _mm_store_ps(r4, _mm512_castps512_ps128(_mm512_maskz_compress_ps(0x1111, v)));
    const int rows = t == NT - 1 ? RL : 4;
    for (int r = 0; r < rows; ++r) out[4 * t + r] = r4[r];
  }
}

template <DType T, int NT>
void RowsLast(int rl, const uint8_t* w, const Tile* tiles, int64_t nb, float* out) {
  switch (rl) {
    case 4:
      Rows<T, NT, 4>(w, tiles, nb, out);
      break;
    case 3:
      Rows<T, NT, 3>(w, tiles, nb, out);
      break;
    case 2:
      Rows<T, NT, 2>(w, tiles, nb, out);
      break;
    default:
      Rows<T, NT, 1>(w, tiles, nb, out);
      break;
  }
}

// One row (decode): the group's lanes summed within each quarter (every lane of quarter k then
// holds P of block k), the scales widened to quarters; acc[k] lives (four times) in quarter k.
template <DType T, int N>
RSD_VNNI_INLINE void Row1Group(const uint8_t* blk, const Q8Row& a, int64_t b, __m512* acc,
                               __m128* off) {
  constexpr __mmask8 kBlocks = static_cast<__mmask8>((1u << N) - 1);
  __m512i lo, hi;
  UnpackGroup<T, N>(blk, &lo, &hi);
  __m512i p = RowLanes<N>(a.q + b * kQBlock, lo, hi);
  p = _mm512_add_epi32(p, _mm512_shuffle_epi32(p, _MM_PERM_CDAB));
  p = _mm512_add_epi32(p, _mm512_shuffle_epi32(p, _MM_PERM_BADC));
  if constexpr (T != DType::kQ4_1) {
    const __m128i sums = _mm_maskz_loadu_epi32(kBlocks, a.sum + b);
    const __m512i wide =
        _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                                 _mm512_zextsi128_si512(sums));
    p = _mm512_sub_epi32(p, _mm512_slli_epi32(wide, T == DType::kQ4_0 ? 3 : 7));
  }
  __m128 dw, mw;
  LoadScales<T, N>(blk, &dw, &mw);
  const __m128 s4 = _mm_mul_ps(dw, _mm_maskz_loadu_ps(kBlocks, a.d + b));
  const __m512 s =
      _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                            _mm512_zextps128_ps512(s4));
  constexpr __mmask16 kLanes = static_cast<__mmask16>(N == 4 ? 0xFFFF : (1u << (4 * N)) - 1);
  *acc = _mm512_mask_add_ps(*acc, kLanes, *acc, _mm512_mul_ps(s, _mm512_cvtepi32_ps(p)));
  if constexpr (T == DType::kQ4_1) {
    *off =
        _mm_mask_add_ps(*off, kBlocks, *off, _mm_mul_ps(mw, _mm_maskz_loadu_ps(kBlocks, a.s + b)));
  }
}

template <DType T>
RSD_VNNI float Row1(const uint8_t* w, const Q8Row& a, int64_t nb) {
  constexpr size_t bb = DTypeBlockBytes(T);
  __m512 acc = _mm512_setzero_ps();
  __m128 off = _mm_setzero_ps();
  int64_t b = 0;
  for (; b + 4 <= nb; b += 4) Row1Group<T, 4>(w + b * bb, a, b, &acc, &off);
  switch (nb - b) {
    case 3:
      Row1Group<T, 3>(w + b * bb, a, b, &acc, &off);
      break;
    case 2:
      Row1Group<T, 2>(w + b * bb, a, b, &acc, &off);
      break;
    case 1:
      Row1Group<T, 1>(w + b * bb, a, b, &acc, &off);
      break;
    default:
      break;
  }
  const __m128 l = _mm512_castps512_ps128(_mm512_maskz_compress_ps(0x1111, acc));
  alignas(16) float al[4], ol[4];
  _mm_store_ps(al, l);
  _mm_store_ps(ol, off);
  return ((al[0] + al[1]) + (al[2] + al[3])) + ((ol[0] + ol[1]) + (ol[2] + ol[3]));
}

template <DType T>
void Dispatch(const uint8_t* w, int64_t n_rows, int64_t nb, float* out, const Q8Prepared& prep) {
  const int64_t ng = (nb + 3) / 4;
  for (int64_t r0 = 0; r0 < n_rows; r0 += 4 * kMaxTiles) {
    const int rows = static_cast<int>(std::min<int64_t>(n_rows - r0, 4 * kMaxTiles));
    Tile tiles[kMaxTiles];
    const int nt = (rows + 3) / 4, rl = rows - 4 * (nt - 1);
    for (int t = 0; t < nt; ++t) {
      const int64_t tile = r0 / 4 + t;
      for (int r = 0; r < 4; ++r) tiles[t].split[r] = nullptr;
      for (int r = 0; r < (t == nt - 1 ? rl : 4); ++r) {
        tiles[t].split[r] = prep.split.data() + (r0 + 4 * t + r) * ng * 128;
      }
      tiles[t].d = prep.d.data() + tile * ng * 16;
      tiles[t].s = prep.s.data() + tile * ng * 16;
      tiles[t].sum = prep.sum.data() + tile * ng * 16;
    }
    switch (nt) {
      case 4:
        RowsLast<T, 4>(rl, w, tiles, nb, out + r0);
        break;
      case 3:
        RowsLast<T, 3>(rl, w, tiles, nb, out + r0);
        break;
      case 2:
        RowsLast<T, 2>(rl, w, tiles, nb, out + r0);
        break;
      default:
        RowsLast<T, 1>(rl, w, tiles, nb, out + r0);
        break;
    }
  }
}

}  // namespace

namespace {
std::atomic<uint64_t> prepare_calls{0};
}  // namespace

uint64_t PrepareQ8RowsCalls() { return prepare_calls.load(std::memory_order_relaxed); }

void PrepareQ8Rows(const Q8Row* a, int64_t n_rows, int64_t nb, Q8Prepared* out) {
  prepare_calls.fetch_add(1, std::memory_order_relaxed);
  const int64_t ng = (nb + 3) / 4, tiles = (n_rows + 3) / 4;
  out->n_rows = n_rows;
  out->n_blocks = nb;
  out->split.assign(static_cast<size_t>(n_rows * ng * 128), 0);
  out->d.assign(static_cast<size_t>(tiles * ng * 16), 0.0f);
  out->s.assign(out->d.size(), 0.0f);
  out->sum.assign(out->d.size(), 0);
  for (int64_t r = 0; r < n_rows; ++r) {
    int8_t* dst = out->split.data() + r * ng * 128;
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t g = b / 4, k = b % 4;
      std::memcpy(dst + g * 128 + k * 16, a[r].q + b * kQBlock, 16);
      std::memcpy(dst + g * 128 + 64 + k * 16, a[r].q + b * kQBlock + 16, 16);
      const size_t lane = static_cast<size_t>(((r / 4) * ng + g) * 16 + (r % 4) * 4 + k);
      out->d[lane] = a[r].d[b];
      out->s[lane] = a[r].s[b];
      out->sum[lane] = a[r].sum[b];
    }
  }
}

void QuantDotRowsVnni(DType t, const uint8_t* w, const Q8Row* a, int64_t n_rows, int64_t nb,
                      float* out, const Q8Prepared* prepared) {
  if (n_rows == 1) {
    if (t == DType::kQ4_1) {
      out[0] = Row1<DType::kQ4_1>(w, a[0], nb);
    } else if (t == DType::kQ4_0) {
      out[0] = Row1<DType::kQ4_0>(w, a[0], nb);
    } else {
      out[0] = Row1<DType::kQ8_0>(w, a[0], nb);
    }
    return;
  }
  thread_local Q8Prepared local;
  if (prepared == nullptr || prepared->n_rows != n_rows || prepared->n_blocks != nb) {
    PrepareQ8Rows(a, n_rows, nb, &local);
    prepared = &local;
  }
  if (t == DType::kQ4_1) {
    Dispatch<DType::kQ4_1>(w, n_rows, nb, out, *prepared);
  } else if (t == DType::kQ4_0) {
    Dispatch<DType::kQ4_0>(w, n_rows, nb, out, *prepared);
  } else {
    Dispatch<DType::kQ8_0>(w, n_rows, nb, out, *prepared);
  }
}

}  // namespace rsd::cpu
