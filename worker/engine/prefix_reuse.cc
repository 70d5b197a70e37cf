// Prefix reuse (issue #15): a session's first turn whose prompt starts with whole chunks that
// another resident session has computed starts from those chunks' hot blocks, shared, instead of
// prefilling them. A chunk's state is a pure function of the tokens from the start of the sequence
// through it (DESIGN.md: output never depends on where state lives), so the shared block is, bit
// for bit, what the prefill would compute; the donor's tokens are compared one by one, never by
// hash.
//
// The engine shares them (Engine::SharePrefixOf: reference-counted pool blocks, read-only while
// shared, copied on a write into one), so sixteen sessions with one system prompt hold its blocks
// once in the hot pool. The tiers still keep a copy per session (deduplicated tiers are issue
// #15's next step).
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "storage/common/clock.h"
#include "storage/common/log.h"
#include "storage/common/status.h"
#include "worker/engine/session_manager.h"

namespace rsd {

SessionManager::PrefixDonor SessionManager::PrefixDonorFor(const SessionId& id,
                                                           const TurnInput& input) const {
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second.turns() != 0) return {};
  return ReusablePrefix(it->second, PromptTokens(input, true));
}

SessionManager::PrefixDonor SessionManager::ReusablePrefix(const Session& s,
                                                           std::span<const int32_t> prompt) const {
  const SessionId& id = s.id;
  if (!options_.prefix_reuse || s.turns() != 0 || !engine_->HasSequence(id) ||
      !engine_->SequenceTokens(id).empty()) {
    return {};
  }
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
  if (best.chunks * bt < options_.prefix_reuse_min_tokens) return {};
  return best;
}

int64_t SessionManager::SeedFromPrefix(const SessionId& id, const PrefixDonor& donor,
                                       std::span<const int32_t> prompt) {
  const int64_t tokens = donor.chunks * engine_->model().block_tokens();
  const double t0 = MonotonicSeconds();
  engine_->DestroySequence(id);  // the new session's empty sequence, to adopt the prefix
  absl::StatusOr<int64_t> bytes =
      engine_->SharePrefixOf(id, donor.id, prompt.first(static_cast<size_t>(tokens)), donor.chunks);
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
