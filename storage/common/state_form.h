// One vocabulary for the forms of a session's state (DESIGN.md section 1), used by the engine, the
// tiers, the state codec (whose byte format records a form) and the wire: StateForm names a form;
// LayerPlan says, per layer, which form that layer's checkpoints take.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace rsd {

// The three exact forms. The values are part of the state codec's byte format.
enum class StateForm : uint8_t { kKv = 1, kResidual = 2, kTokens = 3 };
const char* StateFormName(StateForm form);  // "kv", "residual", "tokens"
// INVALID_ARGUMENT naming the text unless it is one of those names.
absl::StatusOr<StateForm> ParseStateForm(std::string_view name);

// Per layer, the form of its checkpoints: kKv or kResidual. Layer 0's residual is the token
// embedding, so a kResidual layer 0 stores nothing (its tokens rebuild it). Written as one letter a
// layer, 'k' or 'r' ("rkk...").
class LayerPlan {
 public:
  LayerPlan() = default;
  static LayerPlan Uniform(int n_layers, StateForm form);
  // INVALID_ARGUMENT naming the letter or the count unless `letters` has `n_layers` of 'r'/'k'.
  static absl::StatusOr<LayerPlan> Parse(std::string_view letters, int n_layers);

  int size() const { return static_cast<int>(forms_.size()); }
  bool empty() const { return forms_.empty(); }
  StateForm form(int layer) const { return forms_.at(layer); }
  bool kv(int layer) const { return forms_.at(layer) == StateForm::kKv; }
  void set(int layer, StateForm form) { forms_.at(layer) = form; }
  // Whether any layer past 0 keeps residual checkpoints (those must be captured as tokens pass).
  bool HasResidualLayers() const;
  // One form for every layer (kTokens never: a plan only holds kKv and kResidual).
  bool Uniform(StateForm form) const;
  std::string ToString() const;

  friend bool operator==(const LayerPlan&, const LayerPlan&) = default;

 private:
  std::vector<StateForm> forms_;
};

// How a whole session leaves the hot pool between turns, as requested: every layer in one form
// (kResidual, kKv), each layer in the engine's planned form (kAuto), nothing but its token log
// (kTokens), or not at all (kNone). The per-layer forms it results in are a LayerPlan.
enum class SpillForm { kNone, kResidual, kKv, kTokens, kAuto };
// INVALID_ARGUMENT naming the text unless it is one of none, residual, kv, tokens, auto.
absl::StatusOr<SpillForm> ParseSpillForm(std::string_view name);
const char* SpillFormName(SpillForm form);

}  // namespace rsd
