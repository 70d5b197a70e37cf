// Token sampling: greedy, temperature, top-k, top-p. Randomness is counter-based: the uniform draw
// for a token is a pure function of (seed, absolute position in the session), so a retried or
// migrated turn reproduces exactly (DESIGN.md section 2).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

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

// The order in which sampling takes candidates: every id, logit descending, ties (-0 and +0
// among them) by the lower id; NaN last. SortByLogit orders a subset (`ids` ascending) the same.
std::vector<int32_t> SortedCandidates(std::span<const float> logits);
std::vector<int32_t> SortByLogit(std::span<const float> logits, std::vector<int32_t> ids);

// SampleToken's draw with the uniform `u` in [0, 1) given (tests reach the rare draws with it):
// candidates in that order cut to top_k, weights Exp((logit - max) / T), cut to the top_p
// nucleus by a float running sum, then the first candidate whose double running sum exceeds
// u * their float total (the last kept one if none does).
int32_t SampleWithDraw(std::span<const float> logits, const SamplingParams& p, double u);

// The index of the largest logit, lowest index on ties (cpu::ArgMaxF32: NaN is never chosen
// unless it is element 0; 0 for an empty row).
int32_t ArgMax(std::span<const float> logits);

}  // namespace rsd
