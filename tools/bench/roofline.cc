// rsd-roofline: what this machine can do at most, measured with tight loops, so the engine's
// figures can be printed as a fraction of it (tools/bench/engine_bench.py does):
//   - memory bandwidth: a streaming read of a buffer far larger than the caches (GB/s);
//   - int8 multiply-accumulates: independent vpdpbusd (AVX-512 VNNI) or maddubs + madd (AVX2)
//     chains, the instructions our quantized dot uses (G MAC/s);
//   - F32: independent multiply and add chains, unfused as our numerics are (G FLOP/s).
// Each with 1 and N threads; prints JSON with --json.
// GCC 12 AVX-512 header warnings (bug 105593): see kernels/cpu/dot_quant_vnni.cc.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cpu/isa.h"

namespace {

double Seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Runs fn(thread) on `threads` threads at once; returns the wall time.
double Parallel(int threads, const std::function<void(int)>& fn) {
  std::vector<std::thread> pool;
  const double t0 = Seconds();
  for (int t = 1; t < threads; ++t) pool.emplace_back(fn, t);
  fn(0);
  for (auto& th : pool) th.join();
  return Seconds() - t0;
}

__attribute__((target("avx2"))) uint64_t ReadStream(const uint8_t* p, size_t bytes) {
  __m256i acc0 = _mm256_setzero_si256(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
  for (size_t i = 0; i + 128 <= bytes; i += 128) {
    acc0 = _mm256_xor_si256(acc0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    acc1 = _mm256_xor_si256(acc1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    acc2 = _mm256_xor_si256(acc2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    acc3 = _mm256_xor_si256(acc3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  const __m256i x = _mm256_xor_si256(_mm256_xor_si256(acc0, acc1), _mm256_xor_si256(acc2, acc3));
  return static_cast<uint64_t>(_mm256_extract_epi64(x, 0));
}

// GB/s reading `threads` disjoint parts of a 1 GiB buffer, best of 5.
double Bandwidth(int threads) {
  const size_t bytes = size_t{1} << 30;
  auto* buf = static_cast<uint8_t*>(std::aligned_alloc(64, bytes));
  std::memset(buf, 1, bytes);
  double best = 1e30;
  volatile uint64_t sink = 0;
  for (int rep = 0; rep < 5; ++rep) {
    best = std::min(best, Parallel(threads, [&](int t) {
                      const size_t part = bytes / threads;
                      sink = sink + ReadStream(buf + t * part, part);
                    }));
  }
  std::free(buf);
  return bytes / best / 1e9;
}

constexpr long kIters = 50'000'000;

// 12 independent accumulators of 64 u8 x s8 products each per step.
__attribute__((target("avx512f,avx512bw,avx512vnni"))) int64_t Int8Vnni() {
  __m512i acc[12];
  for (auto& a : acc) a = _mm512_setzero_si512();
  const __m512i w = _mm512_set1_epi8(3), x = _mm512_set1_epi8(-2);
  for (long i = 0; i < kIters / 12; ++i) {
#pragma GCC unroll 12
    for (auto& a : acc) a = _mm512_dpbusd_epi32(a, w, x);
  }
  __m512i s = acc[0];
  for (int k = 1; k < 12; ++k) s = _mm512_add_epi32(s, acc[k]);
  return _mm512_reduce_add_epi32(s);
}

// AMX tile multiplies of the shape the AMX matmul issues (16 x 16 outputs, one 32-byte block:
// 8,192 u8 x s8 products each), four independent accumulator tiles per step. Run only where
// cpu::IsaSupported(Isa::kAmx) (which asks Linux for the tile-data permission) says so.
struct alignas(64) AmxConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {64, 64, 64, 64, 32, 64};
  uint8_t rows[16] = {16, 16, 16, 16, 16, 8};
};

__attribute__((target("amx-tile,amx-int8"))) int64_t Int8Amx() {
  static const AmxConfig config;
  alignas(64) static int8_t x[16 * 32], w[8 * 64];
  alignas(64) int32_t out[16 * 16];
  std::memset(x, -2, sizeof(x));
  std::memset(w, 3, sizeof(w));
  _tile_loadconfig(&config);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, x, 32);
  _tile_loadd(5, w, 64);
  for (long i = 0; i < kIters / 256; ++i) {
    _tile_dpbsud(0, 4, 5);
    _tile_dpbsud(1, 4, 5);
    _tile_dpbsud(2, 4, 5);
    _tile_dpbsud(3, 4, 5);
  }
  _tile_stored(0, out, 64);
  _tile_release();
  return out[0];
}

// 8 independent maddubs + madd + add chains of 32 products each per step.
__attribute__((target("avx2"))) int64_t Int8Avx2() {
  __m256i acc[8];
  for (auto& a : acc) a = _mm256_setzero_si256();
  const __m256i w = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
  __m256i x = _mm256_set1_epi8(-2);
  for (long i = 0; i < kIters / 8; ++i) {
#pragma GCC unroll 8
    for (auto& a : acc) {
      a = _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), ones));
    }
    x = _mm256_add_epi8(x, ones);  // keeps the loop from being hoisted
  }
  __m256i s = acc[0];
  for (int k = 1; k < 8; ++k) s = _mm256_add_epi32(s, acc[k]);
  return _mm256_extract_epi32(s, 0);
}

// 8 independent (a * b) + c chains per step, unfused, on 16 (or 8) lanes.
__attribute__((target("avx512f"))) float F32Avx512() {
  __m512 acc[8];
  for (auto& a : acc) a = _mm512_set1_ps(1.0f);
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (long i = 0; i < kIters / 8; ++i) {
#pragma GCC unroll 8
    for (auto& a : acc) a = _mm512_add_ps(_mm512_mul_ps(a, m), c);
  }
  __m512 s = acc[0];
  for (int k = 1; k < 8; ++k) s = _mm512_add_ps(s, acc[k]);
  return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2"))) float F32Avx2() {
  __m256 acc[8];
  for (auto& a : acc) a = _mm256_set1_ps(1.0f);
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (long i = 0; i < kIters / 8; ++i) {
#pragma GCC unroll 8
    for (auto& a : acc) a = _mm256_add_ps(_mm256_mul_ps(a, m), c);
  }
  float out[8];
  _mm256_storeu_ps(out, acc[0]);
  return out[0];
}

// Operations per second of `fn` (ops_per_iter per loop step) on `threads` threads, best of 3.
template <typename R>
double Rate(int threads, R (*fn)(), double ops_per_iter) {
  double best = 1e30;
  volatile double sink = 0;
  for (int rep = 0; rep < 3; ++rep) {
    best = std::min(best, Parallel(threads, [&](int) { sink = sink + static_cast<double>(fn()); }));
  }
  return ops_per_iter * kIters * threads / best;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--json") == 0) {
      json = true;
    } else if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      char* end = nullptr;
      const long n = std::strtol(argv[++i], &end, 10);
      if (end == argv[i] || *end != '\0' || n < 1 || n > 1024) {
        std::fprintf(stderr,
                     "rsd-roofline: --threads must be a whole number in [1, 1024], got '%s'\n",
                     argv[i]);
        return 2;
      }
      threads = static_cast<int>(n);
    } else {
      std::fprintf(stderr, "usage: rsd-roofline [--threads N] [--json]\n");
      return 2;
    }
  }
  __builtin_cpu_init();
  const bool vnni = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw");
  const bool avx512 = __builtin_cpu_supports("avx512f");
  const bool amx = rsd::cpu::IsaSupported(rsd::cpu::Isa::kAmx);  // asks Linux for tile data
  std::string out = "[";
  for (int t : {1, threads}) {
    const double bw = Bandwidth(t);
    const double i8 = vnni ? Rate(t, Int8Vnni, 64.0) : Rate(t, Int8Avx2, 32.0);
    const double f32 = avx512 ? Rate(t, F32Avx512, 32.0) : Rate(t, F32Avx2, 16.0);
    // Four tile multiplies of 8,192 products in each of kIters / 256 steps: 128 per iteration.
    const double amx8 = amx ? Rate(t, Int8Amx, 128.0) : 0.0;
    char row[320];
    std::snprintf(row, sizeof(row),
                  "%s{\"threads\": %d, \"read_gb_per_s\": %.2f, \"int8_gmac_per_s\": %.1f, "
                  "\"int8_path\": \"%s\", \"amx_int8_gmac_per_s\": %.1f, "
                  "\"f32_gflop_per_s\": %.1f}",
                  out.size() > 1 ? ", " : "", t, bw, i8 / 1e9, vnni ? "vpdpbusd" : "maddubs",
                  amx8 / 1e9, f32 / 1e9);
    out += row;
    if (!json) {
      std::printf(
          "threads %d: streaming read %.1f GB/s, int8 %.1f G MAC/s (%s), F32 %.1f G FLOP/s\n", t,
          bw, i8 / 1e9, vnni ? "vpdpbusd" : "maddubs + madd", f32 / 1e9);
      if (amx) std::printf("threads %d: AMX int8 %.1f G MAC/s (16x16x32 tiles)\n", t, amx8 / 1e9);
    }
    if (threads == 1) break;
  }
  if (json) std::printf("%s]\n", out.c_str());
  return 0;
}
