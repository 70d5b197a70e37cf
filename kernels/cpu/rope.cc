#include "kernels/cpu/ops.h"

namespace rsd::cpu {

// Rotate-half pairing: (x[i], x[i + half]) rotates by the table's angle for pair i.
void RopeOp(OpContext& ctx, Tensor x, int n_heads, int head_dim, const int32_t* pos,
            const RopeTable& table) {
  const int half = head_dim / 2;
  for (int64_t r = 0; r < x.rows; ++r) {
    const float* c = table.cos + static_cast<int64_t>(pos[r]) * table.half_dim;
    const float* s = table.sin + static_cast<int64_t>(pos[r]) * table.half_dim;
    for (int h = 0; h < n_heads; ++h) {
      float* v = x.f32() + r * x.cols + static_cast<int64_t>(h) * head_dim;
      for (int i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * c[i] - b * s[i];
        v[i + half] = b * c[i] + a * s[i];
      }
    }
  }
}

}  // namespace rsd::cpu
