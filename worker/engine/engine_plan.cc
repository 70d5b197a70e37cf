// The per-layer checkpoint plan: a form given for every layer ("residual", "kv"), letters given
// per layer, or "auto": per layer, the form whose restore is fastest for the host bandwidth and
// rebuild compute measured at start (the way HCache mixes hidden-state and K/V restoration).
#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "storage/common/clock.h"
#include "storage/common/status.h"
#include "worker/engine/engine.h"

namespace rsd {

absl::Status Engine::ChoosePlan() {
  const int L = config().n_layers;
  const ModelConfig& c = config();
  plan_ =
      LayerPlan::Uniform(L, options_.spill_form == "kv" ? StateForm::kKv : StateForm::kResidual);
  if (!options_.layer_forms.empty()) {
    RSD_ASSIGN_OR_RETURN(plan_, LayerPlan::Parse(options_.layer_forms, L));
    return absl::OkStatus();
  }
  if (options_.spill_form != "auto") return absl::OkStatus();
  // Calibrate: host bandwidth (a large copy) and the rebuild of one chunk of one layer.
  const int64_t bt = model_->block_tokens(), kvd = model_->kv_dim();
  plan_bw_ = options_.planner_bytes_per_second;
  if (plan_bw_ <= 0) {
    std::vector<char> a(64 << 20, 1), b(64 << 20);
    const double t0 = MonotonicSeconds();
    std::memcpy(b.data(), a.data(), a.size());
    plan_bw_ = static_cast<double>(a.size()) / std::max(MonotonicSeconds() - t0, 1e-9);
  }
  plan_rebuild_ = options_.planner_rebuild_seconds;
  if (plan_rebuild_ <= 0) {
    RSD_ASSIGN_OR_RETURN(int32_t block, pool_->Allocate());
    ChunkState cs;
    cs.form = StateForm::kResidual;
    cs.h.assign(static_cast<size_t>(bt * c.d_model), 0.5f);
    double best = 1e30;
    for (int rep = 0; rep < 5; ++rep) {
      const double t0 = MonotonicSeconds();
      RSD_RETURN_IF_ERROR(model_->RebuildIntoBlock(L > 1 ? 1 : 0, 0, cs, block, pool_->view()));
      best = std::min(best, MonotonicSeconds() - t0);
    }
    pool_->Free(block);
    model_->ResetRebuildCounters();
    plan_rebuild_ = best;
  }
  // Restore cost per chunk-layer: bytes through the host tier, plus compute for residuals.
  const double kv_cost = 2.0 * bt * kvd * kKvElementBytes / plan_bw_;
  const double res_cost =
      static_cast<double>(bt) * c.d_model * sizeof(float) / plan_bw_ + plan_rebuild_;
  const double tok_cost = 4.0 * bt / plan_bw_ + plan_rebuild_;  // layer 0: ids -> embedding
  for (int l = 0; l < L; ++l) {
    plan_.set(l, (l == 0 ? tok_cost : res_cost) < kv_cost ? StateForm::kResidual : StateForm::kKv);
  }
  return absl::OkStatus();
}

std::string Engine::PlanDescription() const {
  const std::string letters = plan_.ToString();
  if (options_.spill_form != "auto" || !options_.layer_forms.empty()) return letters;
  return absl::StrCat(letters, " (host ", static_cast<int64_t>(plan_bw_ / 1e6), " MB/s, rebuild ",
                      static_cast<int64_t>(plan_rebuild_ * 1e6), " us per chunk-layer)");
}

absl::Status Engine::PlanLayers() {
  RSD_RETURN_IF_ERROR(ChoosePlan());
  layout_.model_fingerprint = model_fingerprint_;
  layout_.numerics_fingerprint = numerics_fingerprint();
  layout_.block_tokens = model_->block_tokens();
  layout_.n_layers = config().n_layers;
  layout_.vocab_size = tokenizer_->vocab_size();
  layout_.kv_dim = model_->kv_dim();
  layout_.d_model = config().d_model;
  layout_.plan = plan_;
  layout_.max_tokens = model_->max_context();
  return absl::OkStatus();
}

}  // namespace rsd
