#include <cstring>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/packed_weights.h"
#include "kernels/cpu/quant_block.h"

namespace rsd::cpu {

void DequantizeRow(DType t, const uint8_t* row, int64_t cols, float* out) {
  switch (t) {
    case DType::kF32:
      std::memcpy(out, row, cols * sizeof(float));
      return;
    case DType::kF16:
      for (int64_t i = 0; i < cols; ++i) out[i] = F16ToF32(LoadU16(row + 2 * i));
      return;
    case DType::kBF16:
      for (int64_t i = 0; i < cols; ++i) out[i] = BF16ToF32(LoadU16(row + 2 * i));
      return;
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_1: {
      const size_t bb = DTypeBlockBytes(t);
      for (int64_t b = 0; b < cols / kQBlock; ++b) {
        const uint8_t* blk = row + b * bb;
        const float d = F16ToF32(LoadU16(blk));
        float* o = out + b * kQBlock;
        if (t == DType::kQ8_0) {
          for (int i = 0; i < 32; ++i) o[i] = d * static_cast<float>(static_cast<int8_t>(blk[2 + i]));
        } else if (t == DType::kQ4_0) {
          for (int i = 0; i < 16; ++i) {
            o[i] = d * static_cast<float>((blk[2 + i] & 0x0F) - 8);
            o[i + 16] = d * static_cast<float>((blk[2 + i] >> 4) - 8);
          }
        } else {
          const float m = F16ToF32(LoadU16(blk + 2));
          for (int i = 0; i < 16; ++i) {
            o[i] = d * static_cast<float>(blk[4 + i] & 0x0F) + m;
            o[i + 16] = d * static_cast<float>(blk[4 + i] >> 4) + m;
          }
        }
      }
      return;
    }
  }
}

void EmbedOp(OpContext& ctx, const Tensor& table, const int32_t* ids, Tensor out) {
  const uint8_t* base = static_cast<const uint8_t*>(table.data);
  std::vector<uint8_t> unpacked(table.layout == WeightLayout::kPacked16 ? table.row_bytes() : 0);
  for (int64_t i = 0; i < out.rows; ++i) {
    const uint8_t* row = base + table.row_bytes() * ids[i];
    if (table.layout == WeightLayout::kPacked16) {
      UnpackWeightRow(table.dtype, base, table.rows, table.cols, ids[i], unpacked.data());
      row = unpacked.data();
    }
    DequantizeRow(table.dtype, row, table.cols, out.f32() + i * out.cols);
  }
}

}  // namespace rsd::cpu
