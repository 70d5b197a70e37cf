// The index of a row's largest value, as greedy sampling reads it: the lowest index on ties,
// NaN never chosen unless it is element 0 (the plain loop `if (x[i] > x[best]) best = i` with
// best = 0 at the start, on every path; -0 and +0 tie). Every ISA path returns the same index.
#pragma once

#include <cstdint>

#include "kernels/cpu/isa.h"

namespace rsd::cpu {

// n >= 1.
int64_t ArgMaxF32(Isa isa, const float* x, int64_t n);

}  // namespace rsd::cpu
