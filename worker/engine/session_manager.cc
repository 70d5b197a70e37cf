#include "worker/engine/session_manager.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "storage/cold_tier.h"
#include "storage/common/clock.h"
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
    m->tiers_->Add(std::make_unique<ColdTier>(m->cold_.get()));
  } else {
    m->tiers_->Add(std::make_unique<MemoryTier>("host"));
  }
  engine->set_tiers(m->tiers_.get());
  if (m->cold_) RSD_RETURN_IF_ERROR(m->Recover());
  return m;
}

SessionManager::~SessionManager() {
  // The sessions' checkpoints stay in the tiers (a restarted process finds them).
  for (auto& [id, s] : sessions_) engine_->ReleaseSequence(id);
  engine_->set_tiers(nullptr);
  tiers_.reset();  // before the warm region goes
}

std::vector<int32_t> SessionManager::Log(const Session& s) const {
  const std::vector<int32_t>& all = engine_->SequenceTokens(s.id);
  return std::vector<int32_t>(all.begin(), all.begin() + s.committed());
}

absl::Status SessionManager::Recover() {
  RSD_ASSIGN_OR_RETURN(std::vector<SessionId> ids, cold_->ListSessions());
  const int n_layers = engine_->config().n_layers;
  for (const SessionId& id : ids) {
    Session s;
    s.id = id;
    s.name = id.ToHex();
    s.spilled = SpillForm::kTokens;
    int32_t n_chunks = 0;
    LayerPlan plan;
    absl::StatusOr<std::string> meta = cold_->GetMeta(id);
    if (meta.ok()) {
      nlohmann::json j = nlohmann::json::parse(*meta, nullptr, /*allow_exceptions=*/false);
      if (j.is_object()) {
        s.name = j.value("name", s.name);
        s.attrs.tenant = j.value("tenant", s.attrs.tenant);
        s.attrs.epoch = j.value("epoch", uint64_t{0});
        s.attrs.ttl_seconds = j.value("ttl_seconds", 0u);
        s.attrs.pin = j.value("pin", false);
        s.attrs.priority = j.value("priority", 0);
        const bool same_layout = j.value("model", "") == engine_->model_fingerprint() &&
                                 j.value("numerics", "") == engine_->numerics_fingerprint();
        auto form = ParseSpillForm(j.value("spilled", "tokens"));
        auto layers = LayerPlan::Parse(j.value("layer_forms", std::string()), n_layers);
        const bool checkpoints =
            form.ok() && *form != SpillForm::kNone && *form != SpillForm::kTokens && layers.ok();
        if (same_layout && checkpoints) {
          s.spilled = *form;
          n_chunks = j.value("spilled_chunks", 0);
          plan = *layers;
        }
        if (!same_layout) {
          std::fprintf(stderr, "session %s: stored with another model or numerics fingerprint; "
                               "it will be rebuilt from its token log\n", s.name.c_str());
        }
      }
    }
    RSD_ASSIGN_OR_RETURN(std::vector<TokenRecord> log, cold_->ReadTokenLog(id));
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
  }
  return absl::OkStatus();
}

absl::Status SessionManager::SaveMeta(const Session& s) {
  if (!cold_) return absl::OkStatus();
  nlohmann::json j;
  j["name"] = s.name;
  j["tenant"] = s.attrs.tenant;
  j["epoch"] = s.attrs.epoch;
  j["ttl_seconds"] = s.attrs.ttl_seconds;
  j["pin"] = s.attrs.pin;
  j["priority"] = s.attrs.priority;
  j["turns"] = s.turns();
  j["spilled"] = SpillFormName(s.spilled);
  const bool checkpoints = s.spilled != SpillForm::kNone && s.spilled != SpillForm::kTokens;
  j["spilled_chunks"] = checkpoints ? engine_->FullChunks(s.id) : 0;
  j["layer_forms"] = engine_->SequenceLayerPlan(s.id).ToString();
  j["block_tokens"] = engine_->model().block_tokens();
  j["model"] = engine_->model_fingerprint();
  j["numerics"] = engine_->numerics_fingerprint();
  return cold_->PutMeta(s.id, j.dump());
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
  info.hot_blocks = engine_->SequenceMemoryUse(id).hot_blocks;
  info.idle_seconds = MonotonicSeconds() - s.last_active;
  return info;
}

std::vector<SessionInfo> SessionManager::List() const {
  std::vector<SessionInfo> out;
  for (const auto& [id, s] : sessions_) out.push_back(*Describe(id));
  return out;
}

absl::Status SessionManager::Close(const SessionId& id) {
  Session* s = Find(id);
  if (s == nullptr) return NotFound(id);
  engine_->DestroySequence(id);                              // its blocks and checkpoints
  if (cold_) RSD_RETURN_IF_ERROR(cold_->DeleteSession(id));  // metadata and token log
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

int64_t SessionManager::UserTurnTokens(const SessionId& id, const std::string& user_text) const {
  auto it = sessions_.find(id);
  const bool first = it == sessions_.end() || it->second.turns() == 0;
  return static_cast<int64_t>(engine_->chat_template().UserTurn(user_text, first).size());
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

absl::Status SessionManager::Spill(const SessionId& id, SpillForm form) {
  Session* s = Find(id);
  if (s == nullptr) return NotFound(id);
  if (form == SpillForm::kNone || !engine_->Resident(id)) return absl::OkStatus();
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
  return SaveMeta(*s);
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
  if (const Session* existing = Find(state.id);
      existing != nullptr && existing->attrs.epoch >= state.attrs.epoch) {
    return absl::FailedPreconditionError(
        absl::StrCat("session ", state.id.ToHex(), " is here already at epoch ",
                     existing->attrs.epoch, " (import at epoch ", state.attrs.epoch, ")"));
  }
  const bool use_blocks = checked.use_blocks;
  const LayerPlan& plan = checked.plan;
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
  s.spilled = use_blocks ? state.form : SpillForm::kTokens;
  bool adopted = false;
  absl::Status st = [&]() -> absl::Status {
    if (cold_) {
      RSD_RETURN_IF_ERROR(cold_->DeleteSession(s.id));
      int64_t begin = 0;
      for (size_t t = 0; t < s.turn_ends.size(); ++t) {
        RSD_RETURN_IF_ERROR(cold_->AppendTokens(
            s.id, static_cast<uint32_t>(t),
            std::span<const int32_t>(state.tokens.data() + begin, s.turn_ends[t] - begin)));
        begin = s.turn_ends[t];
      }
    }
    if (use_blocks) {
      for (const SessionState::Block& b : state.blocks) {
        RSD_RETURN_IF_ERROR(tiers_->Offload(BlockKey{s.id, b.layer, b.chunk}, b.value));
      }
    }
    RSD_RETURN_IF_ERROR(
        engine_->AdoptSequence(s.id, state.tokens, use_blocks ? state.n_chunks : 0, plan));
    adopted = true;
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
  sessions_[s.id] = std::move(s);
  return report;
}

absl::Status SessionManager::DemoteToCold(const SessionId& id) {
  if (!cold_) return absl::FailedPreconditionError("no cold tier (no data dir)");
  return tiers_->Demote(id);
}

absl::Status SessionManager::Restore(Session& s, std::string* restored_from) {
  absl::StatusOr<std::string> from = engine_->Restore(s.id);
  if (!from.ok() && from.status().code() != absl::StatusCode::kResourceExhausted) {
    // A checkpoint that cannot be read is never served: rebuild from the token log instead.
    std::fprintf(stderr, "session %s: %s checkpoints unusable (%s); rebuilding from tokens\n",
                 s.name.c_str(), SpillFormName(s.spilled), from.status().ToString().c_str());
    RSD_RETURN_IF_ERROR(engine_->DropState(s.id));
    s.spilled = SpillForm::kTokens;
    RSD_RETURN_IF_ERROR(SaveMeta(s));
    from = engine_->Restore(s.id);
  }
  RSD_RETURN_IF_ERROR(from.status());
  *restored_from = *from;
  return absl::OkStatus();
}

absl::Status SessionManager::ResetToTokens(const SessionId& id, const absl::Status& why) {
  Session* s = Find(id);
  if (s == nullptr) return NotFound(id);
  std::fprintf(stderr,
               "session %s: a checkpoint failed to load (%s); dropping its checkpoints "
               "and rebuilding it from the token log\n",
               s->name.c_str(), why.ToString().c_str());
  RSD_RETURN_IF_ERROR(engine_->DropState(id));
  s->spilled = SpillForm::kTokens;
  return SaveMeta(*s);
}

absl::Status SessionManager::CheckTurn(const SessionId& id, const std::string& user_text,
                                       const GenerateParams& params) const {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return NotFound(id);
  const Session& s = it->second;
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
  const int64_t prompt =
      static_cast<int64_t>(engine_->chat_template().UserTurn(user_text, s.turns() == 0).size());
  const int64_t need = history + prompt + params.max_tokens;
  if (need > max_context) {
    return absl::InvalidArgumentError(absl::StrCat(
        "history (", history, ") + prompt (", prompt, ") + max_tokens (", params.max_tokens,
        ") = ", need, " tokens exceeds the context length ", max_context));
  }
  return absl::OkStatus();
}

absl::StatusOr<PendingTurn> SessionManager::BeginTurn(const SessionId& id,
                                                      const std::string& user_text,
                                                      const GenerateParams& params, bool flush) {
  Session* sp = Find(id);
  if (sp == nullptr) return NotFound(id);
  Session& s = *sp;
  s.last_used = ++clock_;
  s.last_active = MonotonicSeconds();
  RSD_RETURN_IF_ERROR(CheckTurn(id, user_text, params));
  PendingTurn t;
  t.id = id;
  t.turn = s.turns() + 1;
  t.before = s.committed();
  t.user_tokens = engine_->chat_template().UserTurn(user_text, s.turns() == 0);
  const double t0 = MonotonicSeconds();
  RSD_RETURN_IF_ERROR(Restore(s, &t.restored_from));
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
  Session* sp = Find(turn.id);
  if (sp == nullptr) return NotFound(turn.id);
  Session& s = *sp;
  s.last_active = MonotonicSeconds();
  const std::vector<int32_t> stops = engine_->chat_template().StopTokens();
  const bool generated_eot =
      generated.finish_reason == "eos" && !generated.tokens.empty() &&
      std::find(stops.begin(), stops.end(), generated.tokens.back()) != stops.end();
  const std::vector<int32_t> end = engine_->chat_template().EndOfAssistantTurn(generated_eot);
  engine_->AppendPending(s.id, end);
  TurnResult r;
  r.turn = turn.turn;
  r.restored_from = turn.restored_from;
  r.restore_seconds = turn.restore_seconds;
  const std::vector<int32_t>& all = engine_->SequenceTokens(s.id);
  r.turn_tokens.assign(all.begin() + turn.before, all.end());
  if (cold_) {
    absl::Status st = cold_->AppendTokens(s.id, s.turns(), r.turn_tokens);
    if (!st.ok()) {
      RSD_RETURN_IF_ERROR(engine_->TruncateSequence(s.id, turn.before));
      return st;
    }
  }
  s.turn_ends.push_back(static_cast<int64_t>(all.size()));
  s.spilled = SpillForm::kNone;
  r.history_tokens = s.committed();
  RSD_RETURN_IF_ERROR(SaveMeta(s));
  generated.prompt_tokens = static_cast<int64_t>(turn.user_tokens.size());
  r.generation = std::move(generated);
  return r;
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

absl::StatusOr<bool> SessionManager::SpillIdle(const std::vector<SessionId>& busy) {
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
  if (st.code() == absl::StatusCode::kFailedPrecondition) st = Spill(victim->id, SpillForm::kTokens);
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
        std::fprintf(stderr, "session %s: idle spill failed: %s\n", s.name.c_str(),
                     st.ToString().c_str());
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
