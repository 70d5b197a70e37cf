// Prefix reuse (issue #15, its first part): a session's first turn whose prompt starts with whole
// chunks that another resident session has computed starts from copies of their K/V instead of
// prefilling them. A chunk's state is a pure function of the tokens from the start of the sequence
// through it (DESIGN.md: output never depends on where state lives), so the copy is, bit for bit,
// what the prefill would compute; the donor's tokens are compared one by one, never by hash.
//
// The engine copies them the way an import arrives (Engine::AdoptPrefixOf: checkpoint blocks in
// the tiers in the forms a prefill would have left, AdoptSequence), then the usual Restore brings
// them into the hot pool (a copy for K/V layers, a K/V projection for residual layers: either far
// less than a prefill). Each session keeps its own copy (shared hot blocks and deduplicated tiers
// are issue #15's next steps).
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "storage/common/clock.h"
#include "storage/common/log.h"
#include "storage/common/status.h"
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
  const int64_t tokens = donor.chunks * engine_->model().block_tokens();
  if (donor.chunks == 0 || tokens < options_.prefix_reuse_min_tokens) return 0;
  const double t0 = MonotonicSeconds();
  engine_->DestroySequence(id);  // the new session's empty sequence, to adopt the prefix
  absl::StatusOr<int64_t> bytes =
      engine_->AdoptPrefixOf(id, donor.id, prompt.first(static_cast<size_t>(tokens)), donor.chunks);
  if (bytes.ok()) {
    NoteMove("reuse/prefix", *bytes, MonotonicSeconds() - t0);
    return tokens;
  }
  // Reuse is an optimization: on any failure the turn prefills the whole prompt as usual.
  log::Warn(
      "prefix reuse failed; prefilling instead",
      {{"session", id.ToHex()}, {"donor", donor.id.ToHex()}, {"error", bytes.status().ToString()}});
  RSD_CHECK(engine_->CreateSequence(id).ok());
  return 0;
}

}  // namespace rsd
