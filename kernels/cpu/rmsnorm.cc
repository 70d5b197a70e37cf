#include <cmath>

#include "kernels/cpu/dot.h"
#include "kernels/cpu/ops.h"

namespace rsd::cpu {

void RmsNormOp(OpContext& ctx, const Tensor& x, const float* w, float eps, Tensor out) {
  const int64_t d = x.cols;
  for (int64_t r = 0; r < x.rows; ++r) {
    const float* xr = x.f32() + r * d;
    float* o = out.f32() + r * d;
    const float ss = DotF32(ctx.isa, xr, xr, d);
    const float scale = 1.0f / std::sqrt(ss / static_cast<float>(d) + eps);
    for (int64_t i = 0; i < d; ++i) o[i] = (xr[i] * scale) * w[i];
  }
}

}  // namespace rsd::cpu
