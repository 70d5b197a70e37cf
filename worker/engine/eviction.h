// Which chunk of a sequence leaves the hot pool when the sequence is over its hot budget, and what
// becomes of it. The exact policy (the default) takes the oldest full hot chunk and turns it into a
// checkpoint that attention rebuilds bit for bit; the lossy baselines, kept for comparison, drop
// the chunk they pick and attention skips it from then on (see EngineOptions::evict for each
// paper's rule). The engine holds one policy and keeps an EvictionState with every sequence; only
// the policy reads or writes that state. Policies hold no state of their own: const and
// thread-compatible.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace rsd {

// One sequence's eviction statistics, owned by the engine with the sequence. DropState resets it.
struct EvictionState {
  // Attention mass per chunk: H2O accumulates it over every step; TOVA keeps the latest step's;
  // SnapKV the last prefill's observation window's. The forward grows it to the chunks it sees.
  std::vector<double> mass;
  int32_t scored_chunks = 0;  // SnapKV: chunks [0, scored_chunks) were scored
};

// A step about to feed `n_new` tokens of one sequence, at positions [first_pos, first_pos+n_new).
struct EvictionStep {
  int64_t first_pos = 0;
  int64_t n_new = 0;
  int32_t block_tokens = 0;
};

// What the forward measures for the policy in a step (SeqInput::attention_mass, mass_window).
struct AttentionProbe {
  // If set, the forward adds each chunk's share of the softmax mass (summed over layers, heads and
  // the counted new tokens) to (*mass)[chunk], growing it as needed.
  std::vector<double>* mass = nullptr;
  int32_t window = 0;  // only the last `window` new tokens count (0: all of them)
};

// A sequence's chunks as a policy sees them when it picks a victim.
struct ChunkView {
  std::span<const int32_t> blocks;  // per chunk: its pool block (>= 0: hot), else not in the pool
  int32_t full_chunks = 0;          // chunks [0, full_chunks) are full: only those may leave
};

class EvictionPolicy {
 public:
  virtual ~EvictionPolicy() = default;

  // The name EngineOptions::evict selects it by.
  virtual std::string_view name() const = 0;
  // Whether a victim becomes a checkpoint (rebuilt bit for bit) rather than being dropped.
  virtual bool exact() const = 0;

  // Called before each step of a sequence with a hot budget: how the policy observes the attention
  // the step produces. The forward adds into the probe's buffer in place, so a running sum (H2O)
  // keeps its order of additions. Default: nothing is measured.
  virtual AttentionProbe Observe(EvictionState& state, const EvictionStep& step) const;

  // The full hot chunk to evict next (-1: none).
  virtual int32_t PickVictim(const EvictionState& state, const ChunkView& chunks) const = 0;

  // The sequence's history was cut back to `keep_chunks` chunks (a rollback). Default, and what
  // every policy here does: the statistics stay as they are.
  virtual void Truncate(EvictionState& state, int32_t keep_chunks) const;
};

// The policy named `name`: "exact", "window", "streaming", "h2o", "tova" or "snapkv".
// INVALID_ARGUMENT naming it and the valid ones for any other name.
absl::StatusOr<std::unique_ptr<EvictionPolicy>> MakeEvictionPolicy(const std::string& name);

}  // namespace rsd
