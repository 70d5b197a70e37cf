#include "worker/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/argmax.h"
#include "kernels/cpu/dot.h"
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

namespace {

// The CPU path the sampler's row kernels take (read once: DefaultIsa looks at CPUID and the
// environment).
cpu::Isa SamplerIsa() {
  static const cpu::Isa isa = cpu::DefaultIsa();
  return isa;
}

}  // namespace

int32_t ArgMax(std::span<const float> logits) {
  if (logits.empty()) return 0;
  return static_cast<int32_t>(
      cpu::ArgMaxF32(SamplerIsa(), logits.data(), static_cast<int64_t>(logits.size())));
}

namespace {

// A logit's rank key: ascending keys are descending logits (-0 and +0 alike), NaN last.
uint32_t DescendingKey(float x) {
  if (x != x) return UINT32_MAX;
  if (x == 0.0f) x = 0.0f;
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  const uint32_t ascending = (u & 0x80000000u) != 0 ? ~u : u | 0x80000000u;
  return ~ascending;
}

}  // namespace

std::vector<int32_t> SortByLogit(std::span<const float> logits, std::vector<int32_t> ids) {
  const size_t n = ids.size();
  if (n < 512) {  // few: a comparison sort through the logits is quicker than three passes
    std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) {
      const uint32_t ka = DescendingKey(logits[a]), kb = DescendingKey(logits[b]);
      return ka < kb || (ka == kb && a < b);
    });
    return ids;
  }
  // A stable LSD radix sort (the ids ascend to begin with, so ties stay by id) on the keys:
  // three passes of 11 bits, linear in the count.
  std::vector<uint32_t> keys(n), keys_tmp(n);
  std::vector<int32_t> ids_tmp(n);
  constexpr int kBits = 11, kPasses = 3;
  constexpr uint32_t kMask = (1u << kBits) - 1;
  std::vector<uint32_t> counts(static_cast<size_t>(kPasses) << kBits, 0);
  for (size_t i = 0; i < n; ++i) {
    keys[i] = DescendingKey(logits[ids[i]]);
    for (int pass = 0; pass < kPasses; ++pass) {
      counts[(static_cast<size_t>(pass) << kBits) + ((keys[i] >> (pass * kBits)) & kMask)]++;
    }
  }
  for (int pass = 0; pass < kPasses; ++pass) {
    uint32_t* c = counts.data() + (static_cast<size_t>(pass) << kBits);
    if (c[(keys[0] >> (pass * kBits)) & kMask] == n) continue;  // one digit: nothing would move
    uint32_t sum = 0;
    for (uint32_t d = 0; d <= kMask; ++d) sum += std::exchange(c[d], sum);
    for (size_t i = 0; i < n; ++i) {
      const uint32_t at = c[(keys[i] >> (pass * kBits)) & kMask]++;
      keys_tmp[at] = keys[i];
      ids_tmp[at] = ids[i];
    }
    keys.swap(keys_tmp);
    ids.swap(ids_tmp);
  }
  return ids;
}

std::vector<int32_t> SortedCandidates(std::span<const float> logits) {
  std::vector<int32_t> ids(logits.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  return SortByLogit(logits, std::move(ids));
}

namespace {

// Below this a weight cannot change a float sum that already holds 1 (less than half its ulp):
// the first candidate's weight is exactly Exp(0) = 1, so the sums over candidate order are the
// sums over the candidates at or above it, whatever the order of the rest.
constexpr float kNegligible = 0x1p-24f;

// Every id's weight Exp((logit - max) / T), in id order (elementwise: the bits the candidate
// order would give), and the candidate order's head: every id whose logit is at least the
// lowest logit of a weight >= kNegligible, sorted. Returns that logit: the ids below it follow
// the head in candidate order, each with a weight below kNegligible. With a NaN logit or an
// infinite largest one nothing is negligible: the head is every id (returns -infinity).
float Weigh(std::span<const float> logits, float temperature, std::vector<float>* w,
            std::vector<int32_t>* head) {
  const size_t n = logits.size();
  const float max_logit = logits[static_cast<size_t>(ArgMax(logits))];
  const auto weigh = [&](float first) {  // Exp of (x - first) / T: Exp(y - 0) is Exp(y)
    w->resize(n);
    for (size_t i = 0; i < n; ++i) (*w)[i] = (logits[i] - first) / temperature;
    cpu::ExpShifted(SamplerIsa(), w->data(), 0.0f, w->data(), static_cast<int64_t>(n));
  };
  weigh(max_logit);
  float cut = max_logit;
  bool split = std::isfinite(max_logit);
  for (size_t i = 0; i < n; ++i) {
    const float x = logits[i];
    if (x != x) split = false;
    if ((*w)[i] >= kNegligible && x < cut) cut = x;
  }
  if (!split) {
    *head = SortedCandidates(logits);
    weigh(logits[static_cast<size_t>((*head)[0])]);  // NaN sorts last
    return -INFINITY;
  }
  std::vector<int32_t> above;
  for (size_t i = 0; i < n; ++i) {
    if (logits[i] >= cut) above.push_back(static_cast<int32_t>(i));
  }
  *head = SortByLogit(logits, std::move(above));
  return cut;
}

}  // namespace

int32_t SampleWithDraw(std::span<const float> logits, const SamplingParams& p, double u) {
  std::vector<float> w;
  std::vector<int32_t> order;
  const float head_cut = Weigh(logits, p.temperature, &w, &order);
  const auto complete = [&] {  // the candidate order past the head, when the walk gets there
    if (order.size() == logits.size()) return;
    std::vector<int32_t> below;
    for (size_t i = 0; i < logits.size(); ++i) {
      if (logits[i] < head_cut) below.push_back(static_cast<int32_t>(i));
    }
    const std::vector<int32_t> tail = SortByLogit(logits, std::move(below));
    order.insert(order.end(), tail.begin(), tail.end());
  };
  size_t keep = logits.size();
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < keep) keep = static_cast<size_t>(p.top_k);
  // Sums in candidate order, over the head alone: what follows it adds nothing to a float sum.
  size_t counted = std::min(keep, order.size());
  float total = 0.0f;
  for (size_t i = 0; i < counted; ++i) total = total + w[order[i]];
  if (p.top_p < 1.0f) {
    float cum = 0.0f;
    for (size_t i = 0; i < counted; ++i) {
      cum = cum + w[order[i]];
      if (cum >= p.top_p * total) {
        keep = counted = i + 1;
        break;
      }
    }
    total = 0.0f;
    for (size_t i = 0; i < counted; ++i) total = total + w[order[i]];
  }
  const double target = u * static_cast<double>(total);
  double cum = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    if (i == order.size()) complete();
    cum += w[order[i]];
    if (target < cum) return order[i];
  }
  if (keep > order.size()) complete();
  return order[keep - 1];
}

int32_t SampleToken(std::span<const float> logits, const SamplingParams& p, int64_t position) {
  if (p.temperature == 0.0f || p.top_k == 1 || logits.empty()) return ArgMax(logits);
  return SampleWithDraw(logits, p, CounterUniform(p.seed, position));
}

}  // namespace rsd
