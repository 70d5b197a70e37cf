#include "worker/engine/session_manager.h"

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

namespace rsd {

absl::StatusOr<std::unique_ptr<SessionManager>> SessionManager::Create(
    Engine* engine, SessionManagerOptions options) {
  std::unique_ptr<SessionManager> m(new SessionManager(engine, std::move(options)));
  const size_t warm_budget = m->options_.warm_budget_bytes;
  // The warm tier's values live in memory the device copies from directly (pinned on a GPU).
  absl::StatusOr<void*> region = engine->backend().AllocHost(warm_budget, "the warm tier");
  if (region.ok()) {
    m->warm_region_.backend = &engine->backend();
    m->warm_region_.base = *region;
    m->warm_memory_ = std::make_unique<HostArena>(
        *region, warm_budget, engine->backend().device_info().kind == "cpu" ? "host" : "pinned");
  }
  m->tiers_ = std::make_unique<TierChain>();
  auto warm = std::make_unique<WarmTier>(warm_budget, m->warm_memory_.get());
  m->warm_ = warm.get();
  m->tiers_->Add(std::move(warm));
  // Below the warm tier: RocksDB when there is a data dir (full checkpoint chunks overflow there,
  // so host memory stays within the warm budget), else host memory (nothing is lost).
  if (!m->options_.data_dir.empty()) {
    RSD_ASSIGN_OR_RETURN(m->cold_, ColdStore::Open(m->options_.data_dir, m->options_.cold));
    RSD_RETURN_IF_ERROR(m->SalvageIfDamaged());
    m->tiers_->Add(std::make_unique<ColdTier>(m->cold_.get()));
  } else {
    m->tiers_->Add(std::make_unique<MemoryTier>("host"));
  }
  engine->set_tiers(m->tiers_.get());
  if (m->cold_) RSD_RETURN_IF_ERROR(m->Recover());
  return m;
}

SessionManager::~SessionManager() {
  // The sessions' checkpoints stay in the tiers (a restarted process finds them); kept prefixes
  // of closed sessions go.
  for (const CachedPrefix& c : prefix_cache_) engine_->DestroySequence(c.id);
  for (auto& [id, s] : sessions_) engine_->ReleaseSequence(id);
  engine_->set_tiers(nullptr);
  tiers_.reset();  // before the warm region goes
}

std::vector<int32_t> SessionManager::Log(const Session& s) const {
  const std::vector<int32_t>& all = engine_->SequenceTokens(s.id);
  return std::vector<int32_t>(all.begin(), all.begin() + s.committed());
}

absl::Status SessionManager::Recover() {
  // The sessions SalvageIfDamaged read whole, or (after a salvage, or with none read) a listing.
  std::vector<SessionId> ids;
  for (const auto& [id, stored] : read_at_start_) ids.push_back(id);
  if (ids.empty()) {
    RSD_ASSIGN_OR_RETURN(ids, cold_->ListSessions());
  }
  for (const SessionId& id : ids) {
    Quarantined seen;
    seen.id = id;
    auto stored = read_at_start_.find(id);
    absl::Status st =
        RecoverOne(id, stored == read_at_start_.end() ? nullptr : &stored->second, &seen);
    if (st.ok()) continue;
    // The session's stored data is damaged: the rest of the worker does not pay for it.
    if (engine_->HasSequence(id)) engine_->DestroySequence(id);
    sessions_.erase(id);
    cold_->DeleteSession(id).IgnoreError();
    Quarantine(std::move(seen), st);
  }
  read_at_start_.clear();
  return absl::OkStatus();
}

void SessionManager::Quarantine(Quarantined seen, const absl::Status& why) {
  seen.error = std::string(why.message());
  log::Error(
      "session quarantined: its stored data cannot be read; the router rebuilds it from its "
      "journal",
      {{"session", seen.id.ToHex()}, {"error", seen.error}});
  std::lock_guard<std::mutex> lock(quarantine_mu_);
  quarantined_.push_back(std::move(seen));
}

absl::Status SessionManager::ApplyMeta(const std::string& meta, Session& s, int32_t* n_chunks,
                                       LayerPlan* plan) const {
  nlohmann::json j = nlohmann::json::parse(meta, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return absl::DataLossError("its metadata is not a JSON object");
  s.name = j.value("name", s.name);
  s.attrs.tenant = j.value("tenant", s.attrs.tenant);
  s.attrs.epoch = j.value("epoch", uint64_t{0});
  s.attrs.ttl_seconds = j.value("ttl_seconds", 0u);
  s.attrs.pin = j.value("pin", false);
  s.attrs.priority = j.value("priority", 0);
  const bool same_layout = j.value("model", "") == engine_->model_fingerprint() &&
                           j.value("numerics", "") == engine_->numerics_fingerprint();
  auto form = ParseSpillForm(j.value("spilled", "tokens"));
  auto layers = LayerPlan::Parse(j.value("layer_forms", std::string()), engine_->config().n_layers);
  const bool checkpoints =
      form.ok() && *form != SpillForm::kNone && *form != SpillForm::kTokens && layers.ok();
  if (same_layout && checkpoints) {
    s.spilled = *form;
    *n_chunks = j.value("spilled_chunks", 0);
    *plan = *layers;
  }
  if (!same_layout) {
    log::Warn(
        "session stored with another model or numerics fingerprint: it will be rebuilt from its "
        "token log",
        {{"session", s.name}});
  }
  return absl::OkStatus();
}

absl::Status SessionManager::RecoverOne(const SessionId& id, StoredSession* stored,
                                        Quarantined* seen) {
  Session s;
  s.id = id;
  s.name = id.ToHex();
  s.spilled = SpillForm::kTokens;
  int32_t n_chunks = 0;
  LayerPlan plan;
  const absl::StatusOr<std::string> meta = stored ? stored->meta : cold_->GetMeta(id);
  if (!meta.ok() && !absl::IsNotFound(meta.status())) return meta.status();
  if (meta.ok()) {
    RSD_RETURN_IF_ERROR(ApplyMeta(*meta, s, &n_chunks, &plan));
    seen->tenant = s.attrs.tenant;
    seen->epoch = s.attrs.epoch;
  }
  std::vector<TokenRecord> log;
  if (stored != nullptr) {
    log = std::move(stored->log);
  } else {
    RSD_ASSIGN_OR_RETURN(log, cold_->ReadTokenLog(id));
  }
  if (!meta.ok() && log.empty()) {
    // Checkpoints of no session (a kept prefix of a closed one, or a close cut short by a crash):
    // swept, not recovered as an empty session.
    ++orphans_swept_;
    log::Info("swept stored checkpoints that belong to no session", {{"id", id.ToHex()}});
    return cold_->DeleteSession(id);
  }
  std::vector<int32_t> tokens;
  for (const TokenRecord& r : log) {
    tokens.insert(tokens.end(), r.tokens.begin(), r.tokens.end());
    s.turn_ends.push_back(static_cast<int64_t>(tokens.size()));
  }
  absl::Status adopted = engine_->AdoptSequence(id, tokens, n_chunks, plan);
  if (!adopted.ok()) {  // metadata that does not fit the log: rebuild from the log
    s.spilled = SpillForm::kTokens;
    RSD_RETURN_IF_ERROR(engine_->AdoptSequence(id, tokens, 0, plan));
  }
  s.last_active = MonotonicSeconds();
  sessions_[id] = std::move(s);
  return absl::OkStatus();
}

std::vector<SessionManager::Quarantined> SessionManager::QuarantinedSessions() const {
  std::lock_guard<std::mutex> lock(quarantine_mu_);
  return quarantined_;
}

absl::Status SessionManager::SaveMeta(const Session& s) {
  if (!cold_) return absl::OkStatus();
  return cold_->PutMeta(s.id, MetaJson(s, s.turns(), s.spilled));
}

std::string SessionManager::MetaJson(const Session& s, uint32_t turns, SpillForm spilled) const {
  nlohmann::json j;
  j["name"] = s.name;
  j["tenant"] = s.attrs.tenant;
  j["epoch"] = s.attrs.epoch;
  j["ttl_seconds"] = s.attrs.ttl_seconds;
  j["pin"] = s.attrs.pin;
  j["priority"] = s.attrs.priority;
  j["turns"] = turns;
  j["spilled"] = SpillFormName(spilled);
  const bool checkpoints = spilled != SpillForm::kNone && spilled != SpillForm::kTokens;
  j["spilled_chunks"] = checkpoints ? engine_->FullChunks(s.id) : 0;
  j["layer_forms"] = engine_->SequenceLayerPlan(s.id).ToString();
  j["block_tokens"] = engine_->model().block_tokens();
  j["model"] = engine_->model_fingerprint();
  j["numerics"] = engine_->numerics_fingerprint();
  return j.dump();
}

absl::StatusOr<SessionId> SessionManager::OpenOrCreate(const std::string& name) {
  for (const auto& [id, s] : sessions_) {
    if (s.name == name) return id;
  }
  const SessionId id = SessionId::Random();
  RSD_RETURN_IF_ERROR(Create(id, SessionAttrs{}));
  sessions_[id].name = name;
  RSD_RETURN_IF_ERROR(SaveMeta(sessions_[id]));
  return id;
}

absl::Status SessionManager::Create(const SessionId& id, const SessionAttrs& attrs) {
  ForgetKeptPrefix(id);  // a closed session's id reused: its kept prefix goes
  auto it = sessions_.find(id);
  if (it != sessions_.end()) {
    if (it->second.attrs.tenant != attrs.tenant) {
      return absl::PermissionDeniedError(absl::StrCat("session ", id.ToHex(),
                                                      " belongs to another tenant"));
    }
    it->second.attrs = attrs;
    return SaveMeta(it->second);
  }
  Session s;
  s.id = id;
  s.name = id.ToHex();
  s.attrs = attrs;
  s.last_active = MonotonicSeconds();
  RSD_RETURN_IF_ERROR(engine_->CreateSequence(id));
  // Not resident until its first turn brings it in ("new").
  absl::Status saved = engine_->DropState(id);
  if (saved.ok()) saved = SaveMeta(s);
  if (!saved.ok()) {
    engine_->DestroySequence(id);
    return saved;
  }
  sessions_[id] = std::move(s);
  return absl::OkStatus();
}

SessionManager::Session* SessionManager::Find(const SessionId& id) {
  auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : &it->second;
}

absl::Status SessionManager::NotFound(const SessionId& id) const {
  return absl::NotFoundError(absl::StrCat("unknown session ", id.ToHex()));
}

absl::StatusOr<SessionInfo> SessionManager::Describe(const SessionId& id) const {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return NotFound(id);
  const Session& s = it->second;
  SessionInfo info;
  info.id = s.id;
  info.name = s.name;
  info.turns = s.turns();
  info.token_count = s.committed();
  info.resident = engine_->Resident(id);
  info.spilled = s.spilled;
  info.attrs = s.attrs;
  const SequenceMemory memory = engine_->SequenceMemoryUse(id);
  info.hot_blocks = memory.hot_blocks;
  info.shared_blocks = memory.shared_blocks;
  info.idle_seconds = MonotonicSeconds() - s.last_active;
  return info;
}

std::vector<SessionInfo> SessionManager::List() const {
  std::vector<SessionInfo> out;
  for (const auto& [id, s] : sessions_) out.push_back(*Describe(id));
  return out;
}

absl::Status SessionManager::Close(const SessionId& id, bool keep_prefix) {
  Session* s = Find(id);
  if (s == nullptr) return NotFound(id);
  // A kept prefix is the session's own sequence, cut to its leading chunks, with their
  // checkpoints; everything else of the session goes (a crash leaves those checkpoints without a
  // session: swept at start).
  const bool kept = keep_prefix && KeepPrefixOf(*s);
  if (!kept) engine_->DestroySequence(id);  // its blocks (unless shared) and checkpoints
  if (cold_) RSD_RETURN_IF_ERROR(cold_->DeleteSession(id, /*keep_blocks=*/kept));
  sessions_.erase(id);
  return absl::OkStatus();
}

int32_t SessionManager::HotBlocks(const SessionId& id) const {
  if (!sessions_.count(id)) return 0;
  return engine_->SequenceMemoryUse(id).hot_blocks;
}

int32_t SessionManager::Priority(const SessionId& id) const {
  auto it = sessions_.find(id);
  return it == sessions_.end() ? 0 : it->second.attrs.priority;
}

int64_t SessionManager::UserTurnTokens(const SessionId& id, const TurnInput& input) const {
  auto it = sessions_.find(id);
  const bool first = it == sessions_.end() || it->second.turns() == 0;
  return static_cast<int64_t>(PromptTokens(input, first).size());
}

std::vector<int32_t> SessionManager::PromptTokens(const TurnInput& input, bool first_turn) const {
  if (!input.raw) return engine_->chat_template().Turn(input.context, input.user_text, first_turn);
  const TokenizerSpec& spec = engine_->tokenizer().spec();
  std::vector<int32_t> out;
  if (first_turn && spec.add_bos && spec.bos_id >= 0) out.push_back(spec.bos_id);
  const std::vector<int32_t> body = engine_->tokenizer().Encode(input.user_text, false);
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

int64_t SessionManager::BlocksForTurn(const SessionId& id, int64_t new_tokens) const {
  auto it = sessions_.find(id);
  const int64_t history = it == sessions_.end() ? 0 : it->second.committed();
  const int64_t bt = engine_->model().block_tokens();
  const int64_t all = (history + new_tokens + bt - 1) / bt;
  const int64_t budget = engine_->hot_budget_blocks();
  return budget > 0 ? std::min(all, budget + 1) : all;  // bounded: the budget plus one scratch
}

size_t SessionManager::WarmBytes(const SessionId& id) const {
  return warm_->SessionBytes(id).value_or(0);
}

absl::Status SessionManager::CheckTurn(const SessionId& id, const TurnInput& input,
                                       const GenerateParams& params) const {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return NotFound(id);
  const Session& s = it->second;
  RSD_RETURN_IF_ERROR(ChatTemplate::CheckContext(input.context, s.turns() == 0));
  if (input.raw && !input.context.empty()) {
    return absl::InvalidArgumentError("a raw-text turn takes no context messages");
  }
  RSD_RETURN_IF_ERROR(ValidateSamplingParams(params.sampling));
  if (params.max_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens must be >= 0, got ",
                                                   params.max_tokens));
  }
  const int64_t max_context = engine_->model().max_context();
  const int64_t history = s.committed();
  // No room at all: not even an empty message's template tokens fit (any request would fail).
  const int64_t overhead =
      static_cast<int64_t>(engine_->chat_template().UserTurn("", s.turns() == 0).size());
  if (history + overhead > max_context) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session ", s.name, " has no room left: its history holds ", history, " tokens of a ",
        max_context, "-token context and a turn needs at least ", overhead));
  }
  const int64_t prompt = static_cast<int64_t>(PromptTokens(input, s.turns() == 0).size());
  const int64_t need = history + prompt + params.max_tokens;
  if (need > max_context) {
    return absl::InvalidArgumentError(absl::StrCat(
        "history (", history, ") + prompt (", prompt, ") + max_tokens (", params.max_tokens,
        ") = ", need, " tokens exceeds the context length ", max_context));
  }
  return absl::OkStatus();
}

absl::StatusOr<PendingTurn> SessionManager::BeginTurn(const SessionId& id, const TurnInput& input,
                                                      const GenerateParams& params, bool flush) {
  Session* sp = Find(id);
  if (sp == nullptr) return NotFound(id);
  Session& s = *sp;
  s.last_used = ++clock_;
  s.last_active = MonotonicSeconds();
  RSD_RETURN_IF_ERROR(CheckTurn(id, input, params));
  PendingTurn t;
  t.id = id;
  t.turn = s.turns() + 1;
  t.before = s.committed();
  t.user_tokens = PromptTokens(input, s.turns() == 0);
  t.raw = input.raw;
  const double t0 = MonotonicSeconds();
  if (const PrefixDonor donor = ReusablePrefix(s, t.user_tokens); donor.chunks > 0) {
    t.reused_tokens = SeedFromPrefix(id, donor, t.user_tokens);
  }
  if (absl::Status restored = Restore(s, &t.restored_from); !restored.ok()) {
    // A seeded prefix goes with the failed attempt: the next one starts from nothing again.
    if (t.reused_tokens > 0) engine_->TruncateSequence(id, 0).IgnoreError();
    return restored;
  }
  if (t.reused_tokens > 0) t.restored_from = "prefix";
  if (flush) {
    absl::Status st = engine_->FlushPending(id);
    if (!st.ok()) {
      RSD_RETURN_IF_ERROR(engine_->TruncateSequence(id, t.before));
      return st;
    }
  }
  t.restore_seconds = MonotonicSeconds() - t0;
  return t;
}

absl::Status SessionManager::AbortTurn(const PendingTurn& turn) {
  Session* s = Find(turn.id);
  if (s == nullptr) return NotFound(turn.id);
  s->last_active = MonotonicSeconds();
  return engine_->TruncateSequence(turn.id, turn.before);
}

absl::StatusOr<TurnResult> SessionManager::CommitTurn(const PendingTurn& turn,
                                                      GenerateResult generated) {
  TurnToCommit one{&turn, std::move(generated)};
  return std::move(CommitTurns(std::span<TurnToCommit>(&one, 1)).front());
}

std::vector<absl::StatusOr<TurnResult>> SessionManager::CommitTurns(std::span<TurnToCommit> turns) {
  // First every turn's end-of-turn tokens and result; then one write for all; then each written
  // turn joins its session's history, and each refused one rolls back.
  std::vector<absl::StatusOr<TurnResult>> out;
  out.reserve(turns.size());  // `writes` points into the results' tokens: they must not move
  std::vector<ColdStore::TurnCommit> writes;
  const std::vector<int32_t> stops = engine_->chat_template().StopTokens();
  for (TurnToCommit& t : turns) {
    const PendingTurn& turn = *t.turn;
    Session* s = Find(turn.id);
    if (s == nullptr) {
      out.push_back(NotFound(turn.id));
      continue;
    }
    s->last_active = MonotonicSeconds();
    GenerateResult& g = t.generated;
    const bool generated_eot =
        g.finish_reason == "eos" && !g.tokens.empty() &&
        std::find(stops.begin(), stops.end(), g.tokens.back()) != stops.end();
    if (!turn.raw) {
      engine_->AppendPending(s->id, engine_->chat_template().EndOfAssistantTurn(generated_eot));
    }
    TurnResult r;
    r.turn = turn.turn;
    r.restored_from = turn.restored_from;
    r.restore_seconds = turn.restore_seconds;
    r.reused_tokens = turn.reused_tokens;
    const std::vector<int32_t>& all = engine_->SequenceTokens(s->id);
    r.turn_tokens.assign(all.begin() + turn.before, all.end());
    g.prompt_tokens = static_cast<int64_t>(turn.user_tokens.size());
    r.generation = std::move(g);
    out.push_back(std::move(r));
    if (cold_) {
      writes.push_back({s->id, s->turns(), out.back()->turn_tokens,
                        MetaJson(*s, s->turns() + 1, SpillForm::kNone)});
    }
  }
  std::vector<absl::Status> written;
  if (cold_) written = cold_->CommitTurns(writes);
  for (size_t i = 0, w = 0; i < out.size(); ++i) {
    if (!out[i].ok()) continue;
    const PendingTurn& turn = *turns[i].turn;
    Session& s = *Find(turn.id);
    if (cold_ && !written[w++].ok()) {
      const absl::Status rolled = engine_->TruncateSequence(s.id, turn.before);
      out[i] = rolled.ok() ? written[w - 1] : rolled;
      continue;
    }
    s.turn_ends.push_back(static_cast<int64_t>(engine_->SequenceTokens(s.id).size()));
    s.spilled = SpillForm::kNone;
    out[i]->history_tokens = s.committed();
  }
  return out;
}

absl::Status SessionManager::Undo(const SessionId& id) {
  Session* sp = Find(id);
  if (sp == nullptr) return NotFound(id);
  Session& s = *sp;
  if (s.turns() == 0) {
    return absl::FailedPreconditionError(absl::StrCat("session ", s.name, " has no turn to undo"));
  }
  const int64_t keep = s.turns() >= 2 ? s.turn_ends[s.turns() - 2] : 0;
  if (cold_) RSD_RETURN_IF_ERROR(cold_->TruncateTokenLog(s.id, s.turns() - 1));
  // Hot or spilled, the state before `keep` stays (checkpoints of chunks the removed turn reached
  // go; a partial chunk's tokens become pending).
  RSD_RETURN_IF_ERROR(engine_->TruncateSequence(id, keep));
  s.turn_ends.pop_back();
  if (s.spilled != SpillForm::kNone && engine_->FullChunks(id) == 0) s.spilled = SpillForm::kTokens;
  return SaveMeta(s);
}

}  // namespace rsd
