// Token sampling: greedy, temperature, top-k, top-p. Randomness is counter-based: the uniform draw
// for a token is a pure function of (seed, absolute position in the session), so a retried or
// migrated turn reproduces exactly (DESIGN.md section 2).
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "absl/status/status.h"

namespace rsd {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy (ties to the lowest id)
  int top_k = 0;             // 0: off
  float top_p = 1.0f;        // 1: off
  uint64_t seed = 0;
};

// INVALID_ARGUMENT naming the field for NaN, negative temperature, top_k < 0, top_p outside (0, 1].
absl::Status ValidateSamplingParams(const SamplingParams& p);

// A uniform double in [0, 1) from (seed, position): splitmix64 of the pair.
double CounterUniform(uint64_t seed, int64_t position);

// Picks a token from `logits` (one row of vocab values) for the token at absolute `position`.
int32_t SampleToken(std::span<const float> logits, const SamplingParams& p, int64_t position);

// The index of the largest logit, lowest index on ties (cpu::ArgMaxF32: NaN is never chosen
// unless it is element 0; 0 for an empty row).
int32_t ArgMax(std::span<const float> logits);

}  // namespace rsd
