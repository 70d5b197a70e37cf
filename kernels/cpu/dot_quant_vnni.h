// The AVX-512 VNNI path of QuantDotRows (dot.h): same bits as every other path.
#pragma once

#include <cstdint>

#include "kernels/cpu/dot.h"

namespace rsd::cpu {

// out[r] = QuantDot of weight row `w` (n_blocks blocks of `wtype`) with a[r], for r < n_rows.
// Only on a CPU with AVX-512 F/BW/VL and VNNI (Isa::kAvx512Vnni).
void QuantDotRowsVnni(DType wtype, const uint8_t* w, const Q8Row* a, int64_t n_rows,
                      int64_t n_blocks, float* out);

}  // namespace rsd::cpu
