// A session's state between turns: spilling, restoring, export and import (migration), the idle
// spill and TTL sweeps, and the bytes each tier holds. Split from session_manager.cc by concern.
#include <algorithm>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "storage/cold_tier.h"
#include "storage/common/clock.h"
#include "storage/common/log.h"
#include "storage/common/status.h"
#include "storage/memory_tier.h"
#include "storage/state_codec.h"
#include "worker/engine/session_manager.h"

namespace rsd {

absl::Status SessionManager::Spill(const SessionId& id, SpillForm form) {
  Session* s = Find(id);
  if (s == nullptr) return NotFound(id);
  if (form == SpillForm::kNone || !engine_->Resident(id)) return absl::OkStatus();
  const double t0 = MonotonicSeconds();
  if (form == SpillForm::kTokens) {
    RSD_RETURN_IF_ERROR(engine_->DropState(id));
  } else {
    const int n_layers = engine_->config().n_layers;
    const LayerPlan plan =
        form == SpillForm::kAuto
            ? engine_->SequenceLayerPlan(id)
            : LayerPlan::Uniform(n_layers,
                                 form == SpillForm::kKv ? StateForm::kKv : StateForm::kResidual);
    RSD_RETURN_IF_ERROR(engine_->Spill(id, plan));
  }
  s->spilled = form;
  NoteMove(absl::StrCat("spill/", SpillFormName(form)),
           engine_->SequenceMemoryUse(id).checkpoint_bytes, MonotonicSeconds() - t0);
  return SaveMeta(*s);
}

void SessionManager::NoteMove(const std::string& key, int64_t bytes, double seconds) {
  std::lock_guard<std::mutex> lock(moves_mu_);
  MoveTotals& m = moves_[key];
  m.count++;
  m.bytes += bytes;
  m.seconds += seconds;
}

std::map<std::string, SessionManager::MoveTotals> SessionManager::StateMoves() const {
  std::lock_guard<std::mutex> lock(moves_mu_);
  return moves_;
}

bool SessionManager::HoldsCheckpoints(const Session& s) const {
  return !engine_->Resident(s.id) && s.spilled != SpillForm::kNone &&
         s.spilled != SpillForm::kTokens && engine_->FullChunks(s.id) > 0;
}

absl::StatusOr<SessionState> SessionManager::ExportState(const SessionId& id, SpillForm form) {
  Session* sp = Find(id);
  if (sp == nullptr) return NotFound(id);
  Session& s = *sp;
  if (form == SpillForm::kNone) form = SpillForm::kAuto;
  const bool wants_blocks = form != SpillForm::kTokens;
  if (wants_blocks && !engine_->Resident(id) && !(HoldsCheckpoints(s) && s.spilled == form) &&
      s.committed() > 0) {
    // Spilled in another form (or as tokens): back to hot, then out in the form asked for.
    std::string from;
    RSD_RETURN_IF_ERROR(Restore(s, &from));
  }
  if (engine_->Resident(id)) {
    // Pending tokens (the last turn's end) get their K/V first, so the blocks cover them too.
    if (wants_blocks) RSD_RETURN_IF_ERROR(engine_->FlushPending(id));
    absl::Status st = Spill(id, form);
    if (st.code() == absl::StatusCode::kFailedPrecondition && form == SpillForm::kAuto) {
      st = Spill(id, SpillForm::kTokens);  // the residuals the plan needs were not kept
    }
    RSD_RETURN_IF_ERROR(st);
  }
  SessionState out;
  out.id = id;
  out.attrs = s.attrs;
  out.model_fingerprint = engine_->model_fingerprint();
  out.numerics_fingerprint = engine_->numerics_fingerprint();
  out.block_tokens = engine_->model().block_tokens();
  out.tokens = Log(s);
  out.turn_ends = s.turn_ends;
  const bool blocks = wants_blocks && HoldsCheckpoints(s);
  out.form = blocks ? s.spilled : SpillForm::kTokens;
  if (!blocks) return out;
  out.n_chunks = engine_->FullChunks(id);
  const LayerPlan& plan = engine_->SequenceLayerPlan(id);
  out.plan = plan;
  for (int32_t c = 0; c < out.n_chunks; ++c) {
    for (int l = 0; l < plan.size(); ++l) {
      if (!plan.kv(l) && l == 0) continue;  // layer 0's residual is the token embedding
      const BlockKey key{id, static_cast<uint32_t>(l), static_cast<uint32_t>(c)};
      RSD_ASSIGN_OR_RETURN(std::string value, tiers_->Onboard(key));
      out.blocks.push_back({key.layer, key.block, std::move(value)});
    }
  }
  return out;
}

absl::StatusOr<ImportReport> SessionManager::ImportState(const SessionState& state) {
  RSD_ASSIGN_OR_RETURN(CheckedState checked, CheckSessionState(state, engine_->state_layout()));
  ForgetKeptPrefix(state.id);  // a closed session's id reused: its kept prefix goes
  if (const Session* existing = Find(state.id);
      existing != nullptr && existing->attrs.epoch >= state.attrs.epoch) {
    return absl::FailedPreconditionError(
        absl::StrCat("session ", state.id.ToHex(), " is here already at epoch ",
                     existing->attrs.epoch, " (import at epoch ", state.attrs.epoch, ")"));
  }
  const bool use_blocks = checked.use_blocks;
  ImportReport report = checked.report;
  // A stale copy from an older ownership goes (only once the new one is known to be sound).
  if (Find(state.id) != nullptr) RSD_RETURN_IF_ERROR(Close(state.id));
  Session s;
  s.id = state.id;
  s.name = state.id.ToHex();
  s.attrs = state.attrs;
  s.turn_ends = state.turn_ends;
  s.last_active = MonotonicSeconds();
  s.last_used = ++clock_;
  bool adopted = false;
  int32_t n_chunks = use_blocks ? state.n_chunks : 0;
  LayerPlan plan = checked.plan;
  absl::Status st = [&]() -> absl::Status {
    if (cold_) {
      RSD_RETURN_IF_ERROR(cold_->DeleteSession(s.id));
      RSD_RETURN_IF_ERROR(cold_->PutTokenLog(s.id, state.tokens, s.turn_ends));
    }
    RSD_RETURN_IF_ERROR(StoreImportedCheckpoints(s, state, use_blocks, &n_chunks, &plan, &report));
    RSD_RETURN_IF_ERROR(engine_->AdoptSequence(s.id, state.tokens, n_chunks, plan));
    adopted = true;
    s.spilled = use_blocks ? state.form : n_chunks > 0 ? SpillForm::kAuto : SpillForm::kTokens;
    return SaveMeta(s);
  }();
  if (!st.ok()) {
    if (adopted) {
      engine_->DestroySequence(s.id);  // its checkpoints with it
    } else {
      tiers_->EvictSession(s.id).IgnoreError();
    }
    if (cold_) cold_->DeleteSession(s.id).IgnoreError();
    return st;
  }
  report.form = s.spilled;
  {
    std::lock_guard<std::mutex> lock(quarantine_mu_);
    std::erase_if(quarantined_, [&](const Quarantined& q) { return q.id == s.id; });
  }
  sessions_[s.id] = std::move(s);
  return report;
}

absl::Status SessionManager::StoreImportedCheckpoints(const Session& s, const SessionState& state,
                                                      bool use_blocks, int32_t* n_chunks,
                                                      LayerPlan* plan, ImportReport* report) {
  const int64_t bt = engine_->model().block_tokens();
  if (!use_blocks) {
    *n_chunks = SeedFromHeld(s, state.tokens, plan);  // failover: what is here is not rebuilt
    report->shared_tokens = *n_chunks * bt;
    return absl::OkStatus();
  }
  if (state.shared_chunks > 0) {
    // The sender left out the chunks this worker said it holds: they come from a session here
    // whose tokens start with them and that gives the blocks' forms (as HeldChunks counted).
    PrefixDonor donor =
        LongestHeldPrefix(s.attrs.tenant, state.tokens, state.shared_chunks, s.id, false, plan);
    absl::Status taken = absl::NotFoundError(absl::StrCat(
        "no session of tenant '", s.attrs.tenant, "' here holds them (", donor.chunks, " found)"));
    if (donor.chunks == state.shared_chunks) {
      taken = TakeHeldChunks(s.id, donor, state.tokens, *plan).status();
    }
    if (!taken.ok()) {
      return absl::AbortedError(
          absl::StrCat("the ", state.shared_chunks, " shared chunks of session ", s.name,
                       " cannot be taken here any more (", taken.message(), "): send them"));
    }
    report->shared_tokens = state.shared_chunks * bt;
  }
  for (const SessionState::Block& b : state.blocks) {
    RSD_RETURN_IF_ERROR(tiers_->Offload(BlockKey{s.id, b.layer, b.chunk}, b.value));
  }
  return absl::OkStatus();
}

absl::Status SessionManager::DemoteToCold(const SessionId& id) {
  if (!cold_) return absl::FailedPreconditionError("no cold tier (no data dir)");
  return tiers_->Demote(id);
}

absl::Status SessionManager::Restore(Session& s, std::string* restored_from) {
  const double t0 = MonotonicSeconds();
  const int64_t stored = engine_->Resident(s.id) ? 0
                         : s.spilled == SpillForm::kTokens
                             ? 4 * s.committed()
                             : engine_->SequenceMemoryUse(s.id).checkpoint_bytes;
  // Leading chunks a resident session holds in the pool are shared, not rebuilt (sessions that
  // shared a prompt share it again after a spill).
  const PrefixDonor donor = HotDonorFor(s);
  absl::StatusOr<std::string> from =
      donor.chunks > 0 ? engine_->Restore(s.id, &donor.id, donor.chunks) : engine_->Restore(s.id);
  if (!from.ok() && from.status().code() != absl::StatusCode::kResourceExhausted) {
    // A checkpoint that cannot be read is never served: rebuild from the token log instead.
    log::Warn("checkpoints unusable: rebuilding from the token log",
              {{"session", s.name},
               {"form", SpillFormName(s.spilled)},
               {"error", from.status().ToString()}});
    RSD_RETURN_IF_ERROR(engine_->DropState(s.id));
    s.spilled = SpillForm::kTokens;
    RSD_RETURN_IF_ERROR(SaveMeta(s));
    from = engine_->Restore(s.id);
  }
  RSD_RETURN_IF_ERROR(from.status());
  *restored_from = *from;
  if (*from != "hot" && *from != "new") {
    NoteMove(absl::StrCat("restore/", *from), *from == "tokens" ? 4 * s.committed() : stored,
             MonotonicSeconds() - t0);
  }
  if (donor.chunks > 0 && engine_->SequenceMemoryUse(s.id).shared_blocks > 0) {
    NoteMove("reuse/restore", 0, 0);  // chunks shared with `donor` rather than rebuilt
  }
  return absl::OkStatus();
}

absl::Status SessionManager::ResetToTokens(const SessionId& id, const absl::Status& why) {
  Session* s = Find(id);
  if (s == nullptr) return NotFound(id);
  log::Warn(
      "a checkpoint failed to load: dropping the session's checkpoints and rebuilding it "
      "from the token log",
      {{"session", s->name}, {"error", why.ToString()}});
  RSD_RETURN_IF_ERROR(engine_->DropState(id));
  s->spilled = SpillForm::kTokens;
  return SaveMeta(*s);
}

absl::StatusOr<bool> SessionManager::SpillIdle(const std::vector<SessionId>& busy) {
  if (DropCachedPrefix(busy)) return true;  // kept prefixes of closed sessions go first
  Session* victim = nullptr;
  auto less_important = [](const Session& a, const Session& b) {
    if (a.attrs.pin != b.attrs.pin) return !a.attrs.pin;
    if (a.attrs.priority != b.attrs.priority) return a.attrs.priority < b.attrs.priority;
    return a.last_used < b.last_used;
  };
  for (auto& [id, s] : sessions_) {
    if (!engine_->Resident(id) || std::find(busy.begin(), busy.end(), id) != busy.end()) continue;
    if (victim == nullptr || less_important(s, *victim)) victim = &s;
  }
  if (victim == nullptr) return false;
  // Checkpoints in the engine's per-layer plan if it keeps what they need, else the token log.
  absl::Status st = Spill(victim->id, SpillForm::kAuto);
  if (st.code() == absl::StatusCode::kFailedPrecondition)
    st = Spill(victim->id, SpillForm::kTokens);
  RSD_RETURN_IF_ERROR(st);
  return true;
}

std::vector<SessionId> SessionManager::ExpireIdle(const std::vector<SessionId>& busy) {
  std::vector<SessionId> deleted;
  const double now = MonotonicSeconds();
  std::vector<SessionId> ids;
  for (const auto& [id, s] : sessions_) ids.push_back(id);
  for (const SessionId& id : ids) {
    Session& s = sessions_[id];
    if (s.attrs.ttl_seconds == 0 || std::find(busy.begin(), busy.end(), id) != busy.end()) continue;
    const double idle = now - s.last_active;
    if (idle > 2.0 * s.attrs.ttl_seconds) {
      if (Close(id).ok()) deleted.push_back(id);
    } else if (idle > s.attrs.ttl_seconds && engine_->Resident(id)) {
      absl::Status st = Spill(id, SpillForm::kAuto);
      if (st.code() == absl::StatusCode::kFailedPrecondition) st = Spill(id, SpillForm::kTokens);
      if (st.ok() && cold_) st = DemoteToCold(id);
      if (!st.ok()) {
        log::Warn("idle spill failed", {{"session", s.name}, {"error", st.ToString()}});
      }
    }
  }
  return deleted;
}

absl::StatusOr<int64_t> SessionManager::ColdBytes(const SessionId& id) {
  if (!cold_) return 0;
  RSD_ASSIGN_OR_RETURN(size_t bytes, tiers_->SessionBytes(id, 1));
  return static_cast<int64_t>(bytes);
}

absl::StatusOr<SessionManager::StoredBytes> SessionManager::Stored(const SessionId& id) {
  StoredBytes b;
  std::map<uint32_t, uint32_t> chunk_tokens;
  auto add = [&](const BlockKey& key, std::string_view v) -> absl::Status {
    RSD_ASSIGN_OR_RETURN(BlockInfo info, InspectBlock(v));
    b.payload += static_cast<int64_t>(info.payload_size);
    b.framing += static_cast<int64_t>(v.size() - info.stored_size);
    b.keys += static_cast<int64_t>(BlockKey::kEncodedSize);
    b.blocks++;
    chunk_tokens[key.block] = info.header.n_tokens;
    return absl::OkStatus();
  };
  RSD_RETURN_IF_ERROR(tiers_->Export(id, add));  // each stored block once, wherever it is
  for (const auto& [chunk, n] : chunk_tokens) b.tokens_covered += n;
  return b;
}

}  // namespace rsd
