// CPU instruction-set paths, chosen at run time (the build never uses -march=native).
// Every path computes bit-identical results (same reduction orders); the choice only changes speed.
#pragma once

namespace rsd::cpu {

// Ordered: each path has every instruction set of the ones before it. kAvx512Vnni is kAvx512 plus
// VNNI (vpdpbusd), used by the quantized dot; every other kernel treats it as kAvx512. kAmx is
// kAvx512Vnni plus AMX-INT8 tile multiplies (granted by the kernel), used by matmuls of 16
// activation rows or more over packed weights; everything else treats it as kAvx512Vnni.
enum class Isa { kScalar = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Vnni = 3, kAmx = 4 };

const char* IsaName(Isa isa);
bool IsaSupported(Isa isa);
// The best path this CPU supports, unless RSD_CPU_ISA=scalar|avx2|avx512|avx512vnni|amx forces one.
Isa DefaultIsa();
// Parses "scalar", "avx2", "avx512", "avx512vnni", "amx"; returns false on anything else.
bool ParseIsa(const char* name, Isa* out);

}  // namespace rsd::cpu
