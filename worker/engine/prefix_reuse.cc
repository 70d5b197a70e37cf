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

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "storage/common/clock.h"
#include "storage/common/log.h"
#include "storage/common/status.h"
#include "storage/prefix_keys.h"
#include "worker/engine/session_manager.h"

namespace rsd {

std::vector<SessionManager::Donor> SessionManager::Donors() const {
  std::vector<Donor> out;
  for (const auto& [id, s] : sessions_) {
    if (!engine_->HasSequence(id)) continue;
    const bool hot = engine_->Resident(id);
    const bool checkpoints = s.spilled != SpillForm::kNone && s.spilled != SpillForm::kTokens;
    if (hot || checkpoints) out.push_back({id, s.attrs.tenant, s.last_used, hot});
  }
  for (const CachedPrefix& c : prefix_cache_) out.push_back({c.id, c.tenant, c.last_used});
  return out;
}

int32_t SessionManager::LeadingHotChunks(const SessionId& id) const {
  const std::vector<int32_t>& blocks = engine_->SequenceBlocks(id);
  const int32_t full = engine_->FullChunks(id);
  int32_t n = 0;
  while (n < full && n < static_cast<int32_t>(blocks.size()) && blocks[n] >= 0) ++n;
  return n;
}

int32_t SessionManager::HeldChunksOf(const Donor& d) const {
  return d.hot ? LeadingHotChunks(d.id) : LeadingCheckpointedChunks(d.id);
}

int32_t SessionManager::LeadingCheckpointedChunks(const SessionId& id) const {
  if (engine_->Resident(id)) return 0;
  const std::vector<int32_t>& blocks = engine_->SequenceBlocks(id);
  const int32_t full = engine_->FullChunks(id);
  int32_t n = 0;
  while (n < full && n < static_cast<int32_t>(blocks.size()) && blocks[n] == -1) ++n;
  return n;
}

SessionManager::PrefixDonor SessionManager::PrefixDonorFor(const SessionId& id,
                                                           const TurnInput& input) const {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return {};
  // A later turn of a spilled session restores sharing a resident session's blocks.
  if (it->second.turns() != 0) return HotDonorFor(it->second);
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
  PrefixDonor best = LongestHeldPrefix(s.attrs.tenant, prompt, most, id);
  if (best.chunks * bt < options_.prefix_reuse_min_tokens) return {};
  return best;
}

SessionManager::PrefixDonor SessionManager::LongestHeldPrefix(
    const std::string& tenant, std::span<const int32_t> tokens, int32_t max_chunks,
    const SessionId& except, bool hot_only, const LayerPlan* forms) const {
  const int64_t bt = engine_->model().block_tokens();
  const int32_t most =
      std::min<int32_t>(max_chunks, static_cast<int32_t>(static_cast<int64_t>(tokens.size()) / bt));
  PrefixDonor best;
  if (most <= 0) return best;
  for (const Donor& d : Donors()) {
    // Never across tenants: another tenant's prompt must not show in this one's latency.
    if (d.id == except || d.tenant != tenant || (hot_only && !d.hot)) continue;
    if (forms != nullptr && !engine_->GivesPrefixIn(d.id, *forms)) continue;
    const std::vector<int32_t>& have = engine_->SequenceTokens(d.id);
    const int32_t limit = std::min(most, HeldChunksOf(d));
    int32_t n = 0;
    // Whole chunks, token by token, while the donor holds the chunk's state.
    while (n < limit && std::equal(tokens.begin() + n * bt, tokens.begin() + (n + 1) * bt,
                                   have.begin() + n * bt)) {
      ++n;
    }
    // Longest first; at equal length shared blocks beat a restore.
    if (n > best.chunks || (n == best.chunks && n > 0 && d.hot && !best.hot))
      best = {d.id, n, d.hot};
  }
  return best;
}

SessionManager::PrefixDonor SessionManager::HotDonorFor(const Session& s) const {
  if (!options_.prefix_reuse || engine_->Resident(s.id)) return {};
  const std::vector<int32_t>& tokens = engine_->SequenceTokens(s.id);
  PrefixDonor donor =
      LongestHeldPrefix(s.attrs.tenant, tokens, engine_->FullChunks(s.id), s.id, /*hot_only=*/true);
  if (donor.chunks * engine_->model().block_tokens() < options_.prefix_reuse_min_tokens) return {};
  return donor;
}

int32_t SessionManager::HeldChunks(const std::string& tenant, const SessionId& except,
                                   std::span<const std::string> keys, const LayerPlan& plan) const {
  if (!options_.prefix_reuse) return 0;
  const int32_t bt = engine_->model().block_tokens();
  const std::string root = PrefixRoot(tenant);
  int32_t best = 0;
  for (const Donor& d : Donors()) {
    if (d.id == except || d.tenant != tenant || !engine_->GivesPrefixIn(d.id, plan)) continue;
    const int32_t limit = std::min(static_cast<int32_t>(keys.size()), HeldChunksOf(d));
    if (limit <= best) continue;
    const std::vector<std::string> have = ChunkKeys(root, engine_->SequenceTokens(d.id), bt, limit);
    int32_t n = 0;
    while (n < limit && have[n] == keys[n]) ++n;
    best = std::max(best, n);
  }
  return best;
}

absl::StatusOr<int64_t> SessionManager::TakeHeldChunks(const SessionId& id,
                                                       const PrefixDonor& donor,
                                                       std::span<const int32_t> tokens,
                                                       const LayerPlan& plan) {
  const double t0 = MonotonicSeconds();
  const size_t n = static_cast<size_t>(donor.chunks * engine_->model().block_tokens());
  RSD_ASSIGN_OR_RETURN(const int64_t bytes, engine_->CopyPrefixCheckpoints(
                                                id, donor.id, tokens.first(n), donor.chunks, plan));
  NoteMove("reuse/import", bytes, MonotonicSeconds() - t0);
  for (CachedPrefix& c : prefix_cache_) c.last_used = c.id == donor.id ? ++clock_ : c.last_used;
  return bytes;
}

int64_t SessionManager::SeedFromPrefix(const SessionId& id, const PrefixDonor& donor,
                                       std::span<const int32_t> prompt) {
  const int64_t tokens = donor.chunks * engine_->model().block_tokens();
  const double t0 = MonotonicSeconds();
  engine_->DestroySequence(id);  // the new session's empty sequence, to adopt the prefix
  const std::span<const int32_t> prefix = prompt.first(static_cast<size_t>(tokens));
  absl::StatusOr<int64_t> bytes =
      donor.hot ? engine_->SharePrefixOf(id, donor.id, prefix, donor.chunks)
                : engine_->AdoptCheckpointsOf(id, donor.id, prefix, donor.chunks);
  if (bytes.ok()) {
    NoteMove(donor.hot ? "reuse/prefix" : "reuse/checkpoints", *bytes, MonotonicSeconds() - t0);
    for (CachedPrefix& c : prefix_cache_) c.last_used = c.id == donor.id ? ++clock_ : c.last_used;
    return tokens;
  }
  // Reuse is an optimization: on any failure the turn prefills the whole prompt as usual.
  log::Warn(
      "prefix reuse failed; prefilling instead",
      {{"session", id.ToHex()}, {"donor", donor.id.ToHex()}, {"error", bytes.status().ToString()}});
  RSD_CHECK(engine_->CreateSequence(id).ok());
  return 0;
}

int32_t SessionManager::SeedFromHeld(const Session& s, std::span<const int32_t> tokens,
                                     LayerPlan* plan) {
  if (!options_.prefix_reuse) return 0;
  const int64_t bt = engine_->model().block_tokens();
  const PrefixDonor donor = LongestHeldPrefix(s.attrs.tenant, tokens, INT32_MAX, s.id);
  if (donor.chunks * bt < options_.prefix_reuse_min_tokens) return 0;
  // In the donor's forms (its checkpoints aliased, its K/V copied); K/V only from a hot donor that
  // kept no residuals.
  *plan = engine_->SequenceLayerPlan(donor.id);
  absl::StatusOr<int64_t> taken = TakeHeldChunks(s.id, donor, tokens, *plan);
  if (!taken.ok() && donor.hot) {
    *plan = LayerPlan::Uniform(engine_->config().n_layers, StateForm::kKv);
    taken = TakeHeldChunks(s.id, donor, tokens, *plan);
  }
  if (!taken.ok()) {
    // An optimization: the session rebuilds from its token log as it would have.
    log::Warn("taking an imported session's prefix from a session here failed",
              {{"session", s.name}, {"error", taken.status().ToString()}});
    return 0;
  }
  return donor.chunks;
}

bool SessionManager::KeepPrefixOf(const Session& s) {
  if (!options_.prefix_reuse || options_.prefix_cache_entries <= 0 || !engine_->Resident(s.id)) {
    return false;
  }
  const int32_t chunks = LeadingHotChunks(s.id);
  const int64_t bt = engine_->model().block_tokens();
  if (chunks * bt < options_.prefix_reuse_min_tokens) return false;
  const std::vector<int32_t>& all = engine_->SequenceTokens(s.id);
  const std::span<const int32_t> tokens(all.data(), static_cast<size_t>(chunks * bt));
  // One entry per prefix: a kept prefix this one extends goes; one that covers this one stays.
  for (auto it = prefix_cache_.begin(); it != prefix_cache_.end();) {
    const std::vector<int32_t>& kept = engine_->SequenceTokens(it->id);
    const size_t common = std::min(kept.size(), tokens.size());
    const bool same_start = it->tenant == s.attrs.tenant &&
                            std::equal(tokens.begin(), tokens.begin() + common, kept.begin());
    if (same_start && kept.size() >= tokens.size()) return false;
    if (same_start) {
      engine_->DestroySequence(it->id);
      it = prefix_cache_.erase(it);
    } else {
      ++it;
    }
  }
  // The session's own sequence stays, cut to those chunks: nothing is copied (its checkpoints of
  // them stay in the tiers under its id, for sessions that share the blocks later).
  if (absl::Status cut = engine_->TruncateSequence(s.id, chunks * bt); !cut.ok()) {
    log::Warn("keeping a closed session's prefix failed",
              {{"session", s.name}, {"error", cut.ToString()}});
    return false;
  }
  prefix_cache_.push_back({s.id, s.attrs.tenant, ++clock_});
  while (static_cast<int>(prefix_cache_.size()) > options_.prefix_cache_entries) {
    DropCachedPrefix();
  }
  return true;
}

void SessionManager::ForgetKeptPrefix(const SessionId& id) {
  auto it = std::find_if(prefix_cache_.begin(), prefix_cache_.end(),
                         [&](const CachedPrefix& c) { return c.id == id; });
  if (it == prefix_cache_.end()) return;
  engine_->DestroySequence(id);
  prefix_cache_.erase(it);
}

bool SessionManager::DropCachedPrefix(const std::vector<SessionId>& busy) {
  auto victim = prefix_cache_.end();
  for (auto it = prefix_cache_.begin(); it != prefix_cache_.end(); ++it) {
    if (std::find(busy.begin(), busy.end(), it->id) != busy.end()) continue;
    if (victim == prefix_cache_.end() || it->last_used < victim->last_used) victim = it;
  }
  if (victim == prefix_cache_.end()) return false;
  engine_->DestroySequence(victim->id);  // its blocks (unless shared) and its checkpoints
  prefix_cache_.erase(victim);
  return true;
}

std::string SessionManager::PrefixRoot(const std::string& tenant) const {
  return ChainRoot(engine_->model_fingerprint(), engine_->numerics_fingerprint(),
                   engine_->model().block_tokens(), tenant);
}

std::vector<SessionManager::PrefixKey> SessionManager::PromptPrefixKeys(
    const std::string& tenant, const TurnInput& input) const {
  std::vector<PrefixKey> out;
  if (!options_.prefix_reuse) return out;
  const int32_t bt = engine_->model().block_tokens();
  const std::vector<int32_t> prompt = PromptTokens(input, true);
  // At least one prompt token is computed by the turn itself.
  const int32_t most = static_cast<int32_t>((static_cast<int64_t>(prompt.size()) - 1) / bt);
  const std::vector<std::string> keys = PowerOfTwoPrefixKeys(PrefixRoot(tenant), prompt, bt, most);
  for (size_t i = 0; i < keys.size(); ++i) {
    const int64_t tokens = (int64_t{1} << i) * bt;
    if (tokens >= options_.prefix_reuse_min_tokens) out.push_back({keys[i], tokens});
  }
  return out;
}

std::vector<std::string> SessionManager::PrefixSummary(size_t max_keys) const {
  std::vector<Donor> donors = Donors();
  std::sort(donors.begin(), donors.end(),
            [](const Donor& a, const Donor& b) { return a.last_used > b.last_used; });
  const int32_t bt = engine_->model().block_tokens();
  absl::flat_hash_set<std::string> seen;
  std::vector<std::string> out;
  for (const Donor& d : donors) {
    if (!d.hot) continue;  // a restore is worth less than shared blocks: not advertised
    for (std::string& key : PowerOfTwoPrefixKeys(
             PrefixRoot(d.tenant), engine_->SequenceTokens(d.id), bt, LeadingHotChunks(d.id))) {
      if (out.size() >= max_keys) return out;
      if (seen.insert(key).second) out.push_back(std::move(key));
    }
  }
  return out;
}

}  // namespace rsd
