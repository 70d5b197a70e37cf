// A plain float64 forward of a Llama-family model, written independently of the engine (no
// kernels, no loaders): it reads the synthetic model's canonical weights directly. Slow; for tiny
// models only.
#pragma once

#include <cstdint>
#include <vector>

#include "tests/support/synthetic_model.h"

namespace rsd::testing {

// Logits [tokens.size(), vocab] for every position of `tokens` (positions 0..n-1).
std::vector<std::vector<double>> ReferenceForward(const SyntheticModel& model,
                                                  const std::vector<int32_t>& tokens);

}  // namespace rsd::testing
