// Prefix reuse (issue #15, its first part): a session's first turn whose prompt starts with whole
// chunks that another resident session has computed starts from copies of their K/V instead of
// prefilling them. A chunk's state is a pure function of the tokens from the start of the sequence
// through it (DESIGN.md: output never depends on where state lives), so the copy is, bit for bit,
// what the prefill would compute; the donor's tokens are compared one by one, never by hash.
//
// The copies go through the path an import takes: encoded checkpoint blocks in the tiers under the
// new session's keys, in the forms a prefill would have left (the engine's plan where it keeps
// residual checkpoints, else K/V), AdoptSequence, then the usual Restore into the hot pool (a copy
// for K/V layers, a K/V projection for residual layers: either far less than a prefill). Each
// session keeps its own copy (shared hot blocks and deduplicated tiers are issue #15's next
// steps).
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "storage/common/clock.h"
#include "storage/common/log.h"
#include "storage/common/status.h"
#include "storage/state_codec.h"
#include "worker/engine/session_manager.h"

namespace rsd {

SessionManager::PrefixDonor SessionManager::FindPrefixDonor(const SessionId& id,
                                                            std::span<const int32_t> prompt) const {
  const int64_t bt = engine_->model().block_tokens();
  // At least one prompt token is computed by the turn itself (its logits start the generation).
  const int32_t most = static_cast<int32_t>((static_cast<int64_t>(prompt.size()) - 1) / bt);
  PrefixDonor best;
  if (most <= 0) return best;
  for (const auto& [did, donor] : sessions_) {
    if (did == id || !engine_->HasSequence(did) || !engine_->Resident(did)) continue;
    const std::vector<int32_t>& tokens = engine_->SequenceTokens(did);
    const std::vector<int32_t>& blocks = engine_->SequenceBlocks(did);
    const int32_t limit = std::min(most, engine_->FullChunks(did));
    int32_t n = 0;
    // Whole chunks, token by token, while the donor holds the chunk in the hot pool.
    while (n < limit && n < static_cast<int32_t>(blocks.size()) && blocks[n] >= 0 &&
           std::equal(prompt.begin() + n * bt, prompt.begin() + (n + 1) * bt,
                      tokens.begin() + n * bt)) {
      ++n;
    }
    if (n > best.chunks) best = {did, n};
  }
  return best;
}

int64_t SessionManager::SeedFromPrefix(const SessionId& id, std::span<const int32_t> prompt) {
  const PrefixDonor donor = FindPrefixDonor(id, prompt);
  const int64_t bt = engine_->model().block_tokens();
  if (donor.chunks == 0 || donor.chunks * bt < options_.prefix_reuse_min_tokens) return 0;
  const int n_layers = engine_->config().n_layers;
  const int64_t tokens = donor.chunks * bt;
  const double t0 = MonotonicSeconds();
  int64_t bytes = 0;
  // The checkpoints a prefill would have left: the engine's plan where it keeps residual
  // checkpoints (the session can later spill or move in that form), else K/V for every layer
  // (restored by a copy). Layer 0's residual is the token embedding: no block.
  const bool residuals = engine_->CapturesResidualsByDefault();
  const LayerPlan plan =
      residuals ? engine_->layer_plan() : LayerPlan::Uniform(n_layers, StateForm::kKv);
  engine_->DestroySequence(id);  // the new session's empty sequence, to adopt the prefix
  absl::Status st = [&]() -> absl::Status {
    for (int32_t c = 0; c < donor.chunks; ++c) {
      for (int l = 0; l < n_layers; ++l) {
        if (!plan.kv(l) && l == 0) continue;
        RSD_ASSIGN_OR_RETURN(std::vector<uint8_t> payload,
                             engine_->ChunkPayload(donor.id, c, l, plan.kv(l)));
        bytes += static_cast<int64_t>(payload.size());
        RSD_ASSIGN_OR_RETURN(
            std::string value,
            EncodeBlock(CheckpointHeaderFor(engine_->state_layout(), plan.form(l), l, c), payload,
                        Compression::kNone));
        RSD_RETURN_IF_ERROR(tiers_->Offload(
            BlockKey{id, static_cast<uint32_t>(l), static_cast<uint32_t>(c)}, std::move(value)));
      }
    }
    return engine_->AdoptSequence(id, prompt.first(static_cast<size_t>(tokens)), donor.chunks,
                                  plan);
  }();
  if (st.ok()) {
    NoteMove("reuse/prefix", bytes, MonotonicSeconds() - t0);
    return tokens;
  }
  // Reuse is an optimization: on any failure the turn prefills the whole prompt as usual.
  log::Warn("prefix reuse failed; prefilling instead",
            {{"session", id.ToHex()}, {"donor", donor.id.ToHex()}, {"error", st.ToString()}});
  tiers_->EvictSession(id).IgnoreError();
  if (!engine_->HasSequence(id)) RSD_CHECK(engine_->CreateSequence(id).ok());
  return 0;
}

}  // namespace rsd
