#include "kernels/cpu/packed_weights.h"

#include <cstring>
#include <type_traits>

#include "kernels/cpu/quant_block.h"

namespace rsd::cpu {
namespace {

bool Quantized(DType t) { return t == DType::kQ8_0 || t == DType::kQ4_0 || t == DType::kQ4_1; }

// Bytes of a packed block's scale part (dw, and mw for Q4_1), and its payload chunks.
int ScaleBytes(DType t) { return t == DType::kQ4_1 ? 64 : 32; }
int Chunks(DType t) { return t == DType::kQ8_0 ? 8 : 4; }

// Offset of block b's packed block inside a group.
size_t PackedBlockOffset(DType t, int64_t b, int64_t nb) {
  return static_cast<size_t>(PackedBlockIndex(b, nb)) * kPackRows * DTypeBlockBytes(t);
}

// Row o's file block <-> its part of a packed block: kPack copies file -> packed, else back.
template <bool kPack>
void MoveBlock(DType t, std::conditional_t<kPack, const uint8_t*, uint8_t*> file,
               std::conditional_t<kPack, uint8_t*, const uint8_t*> packed, int o) {
  auto move = [&](int file_off, int packed_off, int n, uint8_t x) {
    for (int i = 0; i < n; ++i) {
      if constexpr (kPack) {
        packed[packed_off + i] = file[file_off + i] ^ x;
      } else {
        file[file_off + i] = packed[packed_off + i] ^ x;
      }
    }
  };
  move(0, 2 * o, 2, 0);                              // dw
  if (t == DType::kQ4_1) move(2, 32 + 2 * o, 2, 0);  // mw
  const uint8_t bias = t == DType::kQ8_0 ? 0x80 : 0x00;
  const int qo = QsOffset(t), sb = ScaleBytes(t);
  for (int j = 0; j < Chunks(t); ++j) move(qo + 4 * j, sb + 64 * j + 4 * o, 4, bias);
}

}  // namespace

bool Packable(DType t, int64_t rows) { return Quantized(t) && rows >= kPackRows; }

int64_t PackedBlockIndex(int64_t b, int64_t nb) {
  int64_t before = 0;  // blocks of the classes before b's: ceil((nb - k) / 4) for class k
  for (int64_t k = 0; k < b % 4; ++k) before += (nb - k + 3) / 4;
  return before + b / 4;
}

void PackWeights(DType t, const uint8_t* src, int64_t rows, int64_t cols, uint8_t* dst) {
  const size_t rb = DTypeRowBytes(t, cols), bb = DTypeBlockBytes(t);
  const int64_t nb = cols / kQBlock, groups = rows / kPackRows, packed_rows = groups * kPackRows;
  for (int64_t g = 0; g < groups; ++g) {
    uint8_t* group = dst + g * kPackRows * rb;
    for (int o = 0; o < kPackRows; ++o) {
      const uint8_t* row = src + (g * kPackRows + o) * rb;
      for (int64_t b = 0; b < nb; ++b) {
        MoveBlock<true>(t, row + b * bb, group + PackedBlockOffset(t, b, nb), o);
      }
    }
  }
  std::memcpy(dst + packed_rows * rb, src + packed_rows * rb, (rows - packed_rows) * rb);
}

void UnpackWeightRow(DType t, const uint8_t* packed, int64_t rows, int64_t cols, int64_t r,
                     uint8_t* out) {
  const size_t rb = DTypeRowBytes(t, cols), bb = DTypeBlockBytes(t);
  const int64_t packed_rows = rows / kPackRows * kPackRows, nb = cols / kQBlock;
  if (r >= packed_rows) {
    std::memcpy(out, packed + r * rb, rb);
    return;
  }
  const uint8_t* group = packed + (r / kPackRows) * kPackRows * rb;
  for (int64_t b = 0; b < nb; ++b) {
    MoveBlock<false>(t, out + b * bb, group + PackedBlockOffset(t, b, nb),
                     static_cast<int>(r % kPackRows));
  }
}

}  // namespace rsd::cpu
