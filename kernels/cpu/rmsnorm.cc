#include <cmath>

#include "kernels/cpu/ops.h"

namespace rsd::cpu {

namespace {

// The sum of squares is accumulated in double, 16 lanes (element i into lane i % 16) folded as a
// tree: one order on every path, and close to llama.cpp, which also sums in double.
void RmsNormRow(const float* xr, const float* w, float eps, int64_t d, float* o) {
  double acc[16] = {0};
  for (int64_t i = 0; i < d; ++i) {
    acc[i % 16] = acc[i % 16] + static_cast<double>(xr[i]) * static_cast<double>(xr[i]);
  }
  for (int width = 8; width >= 1; width /= 2) {
    for (int j = 0; j < width; ++j) acc[j] = acc[j] + acc[j + width];
  }
  const float mean = static_cast<float>(acc[0] / static_cast<double>(d));
  const float scale = 1.0f / std::sqrt(mean + eps);
  for (int64_t i = 0; i < d; ++i) o[i] = (xr[i] * scale) * w[i];
}

}  // namespace

// Rows go to the pool's threads (each row's bits depend on that row alone).
void RmsNormOp(OpContext& ctx, const Tensor& x, const float* w, float eps, Tensor out) {
  const int64_t d = x.cols;
  ctx.pool->ParallelFor(x.rows, 8, [&](int64_t b, int64_t e, int) {
    for (int64_t r = b; r < e; ++r) RmsNormRow(x.f32() + r * d, w, eps, d, out.f32() + r * d);
  });
}

}  // namespace rsd::cpu
