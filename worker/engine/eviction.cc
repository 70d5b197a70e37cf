// The eviction policies: exact (checkpoints) and the lossy baselines window, StreamingLLM, H2O,
// TOVA and SnapKV.
#include "worker/engine/eviction.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace rsd {
namespace {

bool FullHot(const ChunkView& chunks, int32_t c) {
  return c < chunks.full_chunks && chunks.blocks[c] >= 0;
}

int32_t HotCount(const ChunkView& chunks) {
  return static_cast<int32_t>(
      std::count_if(chunks.blocks.begin(), chunks.blocks.end(), [](int32_t b) { return b >= 0; }));
}

// The oldest full hot chunk from `first` on (-1: none).
int32_t OldestFullHot(const ChunkView& chunks, int32_t first) {
  const int32_t n = std::min(chunks.full_chunks, static_cast<int32_t>(chunks.blocks.size()));
  for (int32_t c = first; c < n; ++c) {
    if (chunks.blocks[c] >= 0) return c;
  }
  return -1;
}

// Exact: the oldest full hot chunk becomes a checkpoint.
class ExactPolicy : public EvictionPolicy {
 public:
  std::string_view name() const override { return "exact"; }
  bool exact() const override { return true; }
  int32_t PickVictim(const EvictionState&, const ChunkView& chunks) const override {
    return OldestFullHot(chunks, 0);
  }
};

// Sliding window: the oldest full hot chunk is dropped.
class WindowPolicy : public EvictionPolicy {
 public:
  std::string_view name() const override { return "window"; }
  bool exact() const override { return false; }
  int32_t PickVictim(const EvictionState&, const ChunkView& chunks) const override {
    return OldestFullHot(chunks, 0);
  }
};

// StreamingLLM: chunk 0 holds the attention sinks and stays while any other hot chunk could go;
// otherwise the oldest full hot chunk is dropped.
class StreamingPolicy : public EvictionPolicy {
 public:
  std::string_view name() const override { return "streaming"; }
  bool exact() const override { return false; }
  int32_t PickVictim(const EvictionState&, const ChunkView& chunks) const override {
    return OldestFullHot(chunks, HotCount(chunks) > 1 ? 1 : 0);
  }
};

// The full hot chunk with the least attention mass by Score is dropped, the newest full hot chunk
// spared unless it is the only one. Ties go to the older chunk.
class MassRankedPolicy : public EvictionPolicy {
 public:
  bool exact() const override { return false; }
  int32_t PickVictim(const EvictionState& state, const ChunkView& chunks) const override {
    int32_t newest = -1;
    for (int32_t c = 0; c < static_cast<int32_t>(chunks.blocks.size()); ++c) {
      if (FullHot(chunks, c)) newest = c;
    }
    int32_t victim = -1;
    for (int32_t c = 0; c < newest; ++c) {
      if (chunks.blocks[c] < 0) continue;
      if (victim < 0 || Score(state, c) < Score(state, victim)) victim = c;
    }
    return victim < 0 ? newest : victim;
  }

 protected:
  // A chunk's mass; chunks the forward never reached have none.
  virtual double Score(const EvictionState& state, int32_t c) const {
    return c < static_cast<int32_t>(state.mass.size()) ? state.mass[c] : 0.0;
  }
};

// H2O (Heavy-Hitter Oracle): the mass accumulates over the whole history.
class H2oPolicy : public MassRankedPolicy {
 public:
  std::string_view name() const override { return "h2o"; }
  AttentionProbe Observe(EvictionState& state, const EvictionStep&) const override {
    return {&state.mass, 0};
  }
};

// TOVA (Token Omission Via Attention), by chunk: only the latest step's queries count.
class TovaPolicy : public MassRankedPolicy {
 public:
  std::string_view name() const override { return "tova"; }
  AttentionProbe Observe(EvictionState& state, const EvictionStep&) const override {
    std::fill(state.mass.begin(), state.mass.end(), 0.0);
    return {&state.mass, 0};
  }
};

// SnapKV, by chunk: a prefill step (more than one token) rescores every chunk by the attention of
// its last chunk's worth of tokens (the observation window); decode steps keep the scores (SnapKV
// selects once per prompt). Chunks written after the scoring rank above every scored one.
class SnapKvPolicy : public MassRankedPolicy {
 public:
  std::string_view name() const override { return "snapkv"; }
  AttentionProbe Observe(EvictionState& state, const EvictionStep& step) const override {
    if (step.n_new <= 1) return {};
    std::fill(state.mass.begin(), state.mass.end(), 0.0);
    const int64_t end = step.first_pos + step.n_new, bt = step.block_tokens;
    state.scored_chunks = static_cast<int32_t>((end + bt - 1) / bt);
    return {&state.mass, static_cast<int32_t>(std::min<int64_t>(bt, step.n_new))};
  }

 protected:
  double Score(const EvictionState& state, int32_t c) const override {
    if (c >= state.scored_chunks) return HUGE_VAL;
    return MassRankedPolicy::Score(state, c);
  }
};

template <typename P>
std::unique_ptr<EvictionPolicy> Make() {
  return std::make_unique<P>();
}

constexpr std::pair<std::string_view, std::unique_ptr<EvictionPolicy> (*)()> kPolicies[] = {
    {"exact", &Make<ExactPolicy>},         {"window", &Make<WindowPolicy>},
    {"streaming", &Make<StreamingPolicy>}, {"h2o", &Make<H2oPolicy>},
    {"tova", &Make<TovaPolicy>},           {"snapkv", &Make<SnapKvPolicy>},
};

}  // namespace

AttentionProbe EvictionPolicy::Observe(EvictionState&, const EvictionStep&) const { return {}; }

void EvictionPolicy::Truncate(EvictionState&, int32_t) const {}

absl::StatusOr<std::unique_ptr<EvictionPolicy>> MakeEvictionPolicy(const std::string& name) {
  for (const auto& [policy, make] : kPolicies) {
    if (policy == name) return make();
  }
  std::vector<std::string> names;
  for (const auto& entry : kPolicies) names.emplace_back(entry.first);
  return absl::InvalidArgumentError(
      absl::StrCat("eviction policy '", name, "' is not one of ", absl::StrJoin(names, ", ")));
}

}  // namespace rsd
