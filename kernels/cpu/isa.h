// CPU instruction-set paths, chosen at run time (the build never uses -march=native).
// Every path computes bit-identical results (same reduction orders); the choice only changes speed.
#pragma once

namespace rsd::cpu {

enum class Isa { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

const char* IsaName(Isa isa);
bool IsaSupported(Isa isa);
// The best path this CPU supports, unless RSD_CPU_ISA=scalar|avx2|avx512 forces one.
Isa DefaultIsa();
// Parses "scalar", "avx2", "avx512"; returns false on anything else.
bool ParseIsa(const char* name, Isa* out);

}  // namespace rsd::cpu
