#include "worker/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/argmax.h"
#include "kernels/cpu/exp.h"

namespace rsd {

absl::Status ValidateSamplingParams(const SamplingParams& p) {
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature)) {
    return absl::InvalidArgumentError(absl::StrCat("temperature must be a finite number >= 0, got ",
                                                   p.temperature));
  }
  if (p.top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", p.top_k));
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", p.top_p));
  }
  return absl::OkStatus();
}

double CounterUniform(uint64_t seed, int64_t position) {
  uint64_t z = seed ^ (static_cast<uint64_t>(position) * 0x9E3779B97F4A7C15ull);
  for (int round = 0; round < 2; ++round) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = z ^ (z >> 31);
  }
  return static_cast<double>(z >> 11) * (1.0 / 9007199254740992.0);
}

int32_t ArgMax(std::span<const float> logits) {
  static const cpu::Isa isa = cpu::DefaultIsa();
  if (logits.empty()) return 0;
  return static_cast<int32_t>(
      cpu::ArgMaxF32(isa, logits.data(), static_cast<int64_t>(logits.size())));
}

int32_t SampleToken(std::span<const float> logits, const SamplingParams& p, int64_t position) {
  if (p.temperature == 0.0f || p.top_k == 1) return ArgMax(logits);
  // Candidates sorted by logit (descending), ties by id: a total order, so the cut is exact.
  std::vector<int32_t> ids(logits.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  auto better = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  size_t keep = ids.size();
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < keep) {
    keep = static_cast<size_t>(p.top_k);
    std::partial_sort(ids.begin(), ids.begin() + keep, ids.end(), better);
  } else {
    std::sort(ids.begin(), ids.end(), better);
  }
  const float max_logit = logits[ids[0]];
  std::vector<float> w(keep);
  float total = 0.0f;
  for (size_t i = 0; i < keep; ++i) {
    w[i] = cpu::Exp((logits[ids[i]] - max_logit) / p.temperature);
    total = total + w[i];
  }
  if (p.top_p < 1.0f) {
    float cum = 0.0f;
    size_t cut = keep;
    for (size_t i = 0; i < keep; ++i) {
      cum = cum + w[i];
      if (cum >= p.top_p * total) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
    total = 0.0f;
    for (size_t i = 0; i < keep; ++i) total = total + w[i];
  }
  const double target = CounterUniform(p.seed, position) * static_cast<double>(total);
  double cum = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    cum += w[i];
    if (target < cum) return ids[i];
  }
  return ids[keep - 1];
}

}  // namespace rsd
