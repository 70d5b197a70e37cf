// Two passes on the vector paths: the largest non-NaN value, then the first element equal to it
// (IEEE equality, so -0 and +0 match each other as `>` ties them). Element 0 being NaN is the one
// case where the loop's answer is not a maximum: the loop then never moves, so it answers 0.
#pragma GCC diagnostic ignored "-Wuninitialized"  // GCC bug 105593, as in dot_f32.cc
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "kernels/cpu/argmax.h"

#include <immintrin.h>

#include <cmath>
#include <limits>

namespace rsd::cpu {
namespace {

int64_t ArgMaxScalar(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (x[i] > x[best]) best = i;
  }
  return best;
}

// The first index at or after `from` whose value equals m (it exists: m was taken from x).
int64_t FirstEqualScalar(const float* x, int64_t from, int64_t n, float m) {
  for (int64_t i = from; i < n; ++i) {
    if (x[i] == m) return i;
  }
  return n;
}

__attribute__((target("avx2"))) int64_t ArgMaxAvx2(const float* x, int64_t n) {
  // max_ps(v, m) returns m where v is NaN: NaNs drop out, and m starts at -inf, so it never is.
  __m256 m = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(_mm256_loadu_ps(x + i), m);
  float lanes[8];
  _mm256_storeu_ps(lanes, m);
  float best = lanes[0];
  for (float v : lanes) best = v > best ? v : best;
  for (int64_t j = i; j < n; ++j) best = x[j] > best ? x[j] : best;
  const __m256 bv = _mm256_set1_ps(best);
  for (i = 0; i + 8 <= n; i += 8) {
    const int hit = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), bv, _CMP_EQ_OQ));
    if (hit != 0) return i + __builtin_ctz(static_cast<unsigned>(hit));
  }
  return FirstEqualScalar(x, i, n, best);
}

__attribute__((target("avx512f"))) int64_t ArgMaxAvx512(const float* x, int64_t n) {
  __m512 m = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) m = _mm512_max_ps(_mm512_loadu_ps(x + i), m);
  float best = _mm512_reduce_max_ps(m);  // no NaN among the lanes
  for (int64_t j = i; j < n; ++j) best = x[j] > best ? x[j] : best;
  const __m512 bv = _mm512_set1_ps(best);
  for (i = 0; i + 16 <= n; i += 16) {
    const __mmask16 hit = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i), bv, _CMP_EQ_OQ);
    if (hit != 0) return i + __builtin_ctz(static_cast<unsigned>(hit));
  }
  return FirstEqualScalar(x, i, n, best);
}

}  // namespace

int64_t ArgMaxF32(Isa isa, const float* x, int64_t n) {
  if (isa == Isa::kScalar) return ArgMaxScalar(x, n);
  if (std::isnan(x[0])) return 0;
  return isa >= Isa::kAvx512 ? ArgMaxAvx512(x, n) : ArgMaxAvx2(x, n);
}

}  // namespace rsd::cpu
