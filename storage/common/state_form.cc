#include "storage/common/state_form.h"

#include "absl/strings/str_cat.h"

namespace rsd {

const char* StateFormName(StateForm form) {
  switch (form) {
    case StateForm::kKv:
      return "kv";
    case StateForm::kResidual:
      return "residual";
    case StateForm::kTokens:
      return "tokens";
  }
  return "?";
}

absl::StatusOr<StateForm> ParseStateForm(std::string_view name) {
  for (StateForm f : {StateForm::kKv, StateForm::kResidual, StateForm::kTokens}) {
    if (name == StateFormName(f)) return f;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("state form '", std::string(name), "' is not one of kv, residual, tokens"));
}

LayerPlan LayerPlan::Uniform(int n_layers, StateForm form) {
  LayerPlan p;
  p.forms_.assign(static_cast<size_t>(n_layers), form);
  return p;
}

absl::StatusOr<LayerPlan> LayerPlan::Parse(std::string_view letters, int n_layers) {
  if (static_cast<int>(letters.size()) != n_layers) {
    return absl::InvalidArgumentError(absl::StrCat("layer plan '", std::string(letters), "' has ",
                                                   letters.size(), " letters for ", n_layers,
                                                   " layers"));
  }
  LayerPlan p;
  for (char c : letters) {
    if (c != 'r' && c != 'k') {
      return absl::InvalidArgumentError(
          absl::StrCat("layer plan letter '", std::string(1, c), "' is not r or k"));
    }
    p.forms_.push_back(c == 'k' ? StateForm::kKv : StateForm::kResidual);
  }
  return p;
}

bool LayerPlan::HasResidualLayers() const {
  for (size_t l = 1; l < forms_.size(); ++l) {
    if (forms_[l] == StateForm::kResidual) return true;
  }
  return false;
}

bool LayerPlan::Uniform(StateForm form) const {
  for (StateForm f : forms_) {
    if (f != form) return false;
  }
  return true;
}

std::string LayerPlan::ToString() const {
  std::string s;
  for (StateForm f : forms_) s += f == StateForm::kKv ? 'k' : 'r';
  return s;
}

absl::StatusOr<SpillForm> ParseSpillForm(std::string_view name) {
  for (SpillForm f : {SpillForm::kNone, SpillForm::kResidual, SpillForm::kKv, SpillForm::kTokens,
                      SpillForm::kAuto}) {
    if (name == SpillFormName(f)) return f;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "spill form '", std::string(name), "' is not one of none, residual, kv, tokens, auto"));
}

const char* SpillFormName(SpillForm form) {
  switch (form) {
    case SpillForm::kNone:
      return "none";
    case SpillForm::kResidual:
      return "residual";
    case SpillForm::kKv:
      return "kv";
    case SpillForm::kTokens:
      return "tokens";
    case SpillForm::kAuto:
      return "auto";
  }
  return "?";
}

}  // namespace rsd
