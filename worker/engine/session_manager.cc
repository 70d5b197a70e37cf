#include "worker/engine/session_manager.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "storage/cold_tier.h"
#include "storage/common/clock.h"
#include "storage/common/status.h"
#include "storage/state_codec.h"

namespace rsd {
namespace {

std::span<const uint8_t> AsBytes(const std::vector<float>& v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(float)};
}

}  // namespace

absl::StatusOr<SpillForm> ParseSpillForm(const std::string& s) {
  if (s == "none") return SpillForm::kNone;
  if (s == "residual") return SpillForm::kResidual;
  if (s == "kv") return SpillForm::kKv;
  if (s == "tokens") return SpillForm::kTokens;
  if (s == "auto") return SpillForm::kAuto;
  return absl::InvalidArgumentError(absl::StrCat("spill form '", s,
                                                 "' is not one of none, residual, kv, tokens, auto"));
}

const char* SpillFormName(SpillForm f) {
  switch (f) {
    case SpillForm::kNone: return "none";
    case SpillForm::kResidual: return "residual";
    case SpillForm::kKv: return "kv";
    case SpillForm::kTokens: return "tokens";
    case SpillForm::kAuto: return "auto";
  }
  return "?";
}

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
  // With a cold tier, full checkpoint chunks live in the warm tier and overflow to RocksDB, so
  // host memory stays within the warm budget. Without one, overflow would be lost: they stay in
  // engine memory.
  if (!m->options_.data_dir.empty()) {
    RSD_ASSIGN_OR_RETURN(m->cold_, ColdStore::Open(m->options_.data_dir, m->options_.cold));
    m->tiers_->Add(std::make_unique<ColdTier>(m->cold_.get()));
    engine->set_checkpoint_store(m.get());
    RSD_RETURN_IF_ERROR(m->Recover());
  }
  return m;
}

SessionManager::~SessionManager() {
  for (auto& [id, s] : sessions_) {
    if (s.seq >= 0) engine_->DestroySequence(s.seq);
  }
  engine_->set_checkpoint_store(nullptr);
  tiers_.reset();  // before the warm region goes
}

SessionManager::Session* SessionManager::BySeq(int32_t seq) {
  for (auto& [id, s] : sessions_) {
    if (s.seq == seq) return &s;
  }
  // A sequence being imported (Restore) has no session yet: it is the one restoring.
  return restoring_;
}

absl::Status SessionManager::Put(int32_t seq, int32_t chunk, int layer, bool kv,
                                 std::span<const float> data) {
  Session* s = BySeq(seq);
  if (s == nullptr) return absl::InternalError(absl::StrCat("no session holds sequence ", seq));
  RSD_ASSIGN_OR_RETURN(
      std::string value,
      EncodeBlock(Header(kv ? SpillForm::kKv : SpillForm::kResidual, layer, chunk),
                  std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()),
                                           data.size() * sizeof(float)),
                  Compression::kNone));
  return PutCheckpoint(BlockKey{s->id, static_cast<uint32_t>(layer), static_cast<uint32_t>(chunk)},
                       std::move(value));
}

absl::StatusOr<std::vector<float>> SessionManager::Get(int32_t seq, int32_t chunk, int layer,
                                                       bool kv) {
  Session* s = BySeq(seq);
  if (s == nullptr) return absl::InternalError(absl::StrCat("no session holds sequence ", seq));
  bool from_cold = false;
  RSD_ASSIGN_OR_RETURN(std::string value,
                       GetCheckpoint(BlockKey{s->id, static_cast<uint32_t>(layer),
                                              static_cast<uint32_t>(chunk)},
                                     &from_cold));
  RSD_ASSIGN_OR_RETURN(DecodedBlock block, DecodeBlock(value));
  if (!(block.header == Header(kv ? SpillForm::kKv : SpillForm::kResidual, layer, chunk))) {
    return absl::DataLossError(absl::StrCat("checkpoint of chunk ", chunk, " layer ", layer,
                                            " does not describe that block"));
  }
  std::vector<float> out(block.payload.size() / sizeof(float));
  std::memcpy(out.data(), block.payload.data(), out.size() * sizeof(float));
  return out;
}

absl::Status SessionManager::Truncate(int32_t seq, int32_t from_chunk) {
  Session* s = BySeq(seq);
  if (s == nullptr) return absl::OkStatus();
  return tiers_->EvictSession(s->id, static_cast<uint32_t>(std::max(0, from_chunk)));
}

absl::Status SessionManager::Recover() {
  RSD_ASSIGN_OR_RETURN(std::vector<SessionId> ids, cold_->ListSessions());
  for (const SessionId& id : ids) {
    Session s;
    s.id = id;
    s.name = id.ToHex();
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
        const bool same_layout =
            j.value("model", "") == engine_->model_fingerprint() &&
            j.value("numerics", "") == engine_->numerics_fingerprint();
        auto form = ParseSpillForm(j.value("spilled", "tokens"));
        s.spilled = form.ok() && same_layout ? *form : SpillForm::kTokens;
        s.spilled_chunks = same_layout ? j.value("spilled_chunks", 0) : 0;
        for (char ch : j.value("layer_forms", std::string())) s.layer_kv.push_back(ch == 'k');
        if (!same_layout) {
          std::fprintf(stderr, "session %s: stored with another model or numerics fingerprint; "
                               "it will be rebuilt from its token log\n", s.name.c_str());
        }
      }
    }
    RSD_ASSIGN_OR_RETURN(std::vector<TokenRecord> log, cold_->ReadTokenLog(id));
    for (const TokenRecord& r : log) {
      s.log.insert(s.log.end(), r.tokens.begin(), r.tokens.end());
      s.turn_ends.push_back(static_cast<int64_t>(s.log.size()));
    }
    if (s.spilled == SpillForm::kNone) s.spilled = SpillForm::kTokens;
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
  j["spilled_chunks"] = s.spilled_chunks;
  std::string plan;
  for (uint8_t k : s.layer_kv) plan += k ? 'k' : 'r';
  j["layer_forms"] = plan;
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
  RSD_RETURN_IF_ERROR(SaveMeta(s));
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
  info.token_count = static_cast<int64_t>(s.log.size());
  info.resident = s.seq >= 0;
  info.spilled = s.spilled;
  info.attrs = s.attrs;
  info.hot_blocks = s.seq >= 0 ? engine_->SequenceMemoryUse(s.seq).hot_blocks : 0;
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
  if (s->seq >= 0) engine_->DestroySequence(s->seq);
  RSD_RETURN_IF_ERROR(tiers_->EvictSession(id));
  if (cold_) RSD_RETURN_IF_ERROR(cold_->DeleteSession(id));  // metadata and token log
  sessions_.erase(id);
  return absl::OkStatus();
}

int32_t SessionManager::HotBlocks(const SessionId& id) const {
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second.seq < 0) return 0;
  return engine_->SequenceMemoryUse(it->second.seq).hot_blocks;
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
  const int64_t history = it == sessions_.end() ? 0 : static_cast<int64_t>(it->second.log.size());
  const int64_t bt = engine_->model().block_tokens();
  const int64_t all = (history + new_tokens + bt - 1) / bt;
  const int64_t budget = engine_->hot_budget_blocks();
  return budget > 0 ? std::min(all, budget + 1) : all;  // bounded: the budget plus one scratch
}

size_t SessionManager::WarmBytes(const SessionId& id) const {
  return warm_->SessionBytes(id).value_or(0);
}

CheckpointHeader SessionManager::Header(SpillForm form, int layer, int32_t chunk) const {
  CheckpointHeader h;
  const int bt = engine_->model().block_tokens();
  h.form = form == SpillForm::kKv ? StateForm::kKv : StateForm::kResidual;
  h.dtype = ElementType::kF32;
  h.layer = static_cast<uint32_t>(layer);
  h.first_position = static_cast<uint32_t>(chunk * bt);
  h.n_tokens = static_cast<uint32_t>(bt);
  h.row_elements = static_cast<uint32_t>(form == SpillForm::kKv ? engine_->model().kv_dim()
                                                                 : engine_->config().d_model);
  h.model_fingerprint = engine_->model_fingerprint();
  h.numerics_fingerprint = engine_->numerics_fingerprint();
  return h;
}

absl::Status SessionManager::PutCheckpoint(const BlockKey& key, std::string value) {
  // Without a cold tier, what overflows the warm tier is dropped (the token log remains).
  return tiers_->Offload(key, std::move(value));
}

absl::StatusOr<std::string> SessionManager::GetCheckpoint(const BlockKey& key, bool* from_cold) {
  const char* from = "";
  absl::StatusOr<std::string> v = tiers_->Onboard(key, &from);
  if (v.ok() && std::string_view(from) == "cold") *from_cold = true;
  return v;
}

absl::Status SessionManager::Spill(const SessionId& id, SpillForm form) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return absl::NotFoundError(absl::StrCat("unknown session ", id.ToHex()));
  Session& s = it->second;
  if (form == SpillForm::kNone || s.seq < 0) return absl::OkStatus();
  int32_t n = 0;
  if (form == SpillForm::kResidual || form == SpillForm::kKv || form == SpillForm::kAuto) {
    // kAuto: each layer in the sequence's planned form (the engine's per-layer plan).
    const std::vector<uint8_t>& plan = engine_->SequenceLayerPlan(s.seq);
    s.layer_kv.assign(plan.size(), form == SpillForm::kKv ? 1 : 0);
    if (form == SpillForm::kAuto) s.layer_kv = plan;
    n = engine_->FullChunks(s.seq);
    for (int32_t c = 0; c < n; ++c) {
      for (int l = 0; l < engine_->config().n_layers; ++l) {
        const bool kv = s.layer_kv[l] != 0;
        if (!kv && l == 0) continue;  // layer 0's residual is the token embedding
        RSD_ASSIGN_OR_RETURN(std::vector<float> payload, engine_->ChunkPayload(s.seq, c, l, kv));
        const SpillForm lf = kv ? SpillForm::kKv : SpillForm::kResidual;
        RSD_ASSIGN_OR_RETURN(std::string value,
                             EncodeBlock(Header(lf, l, c), AsBytes(payload), Compression::kNone));
        RSD_RETURN_IF_ERROR(PutCheckpoint(BlockKey{id, static_cast<uint32_t>(l),
                                                   static_cast<uint32_t>(c)},
                                          std::move(value)));
      }
    }
  }
  engine_->DestroySequence(s.seq);
  s.seq = -1;
  s.spilled = form;
  s.spilled_chunks = n;
  return SaveMeta(s);
}

absl::StatusOr<SessionState> SessionManager::ExportState(const SessionId& id, SpillForm form) {
  Session* sp = Find(id);
  if (sp == nullptr) return NotFound(id);
  if (form == SpillForm::kNone) form = SpillForm::kAuto;
  const bool wants_blocks = form != SpillForm::kTokens;
  const bool has_blocks = sp->seq < 0 && (sp->spilled == SpillForm::kResidual ||
                                          sp->spilled == SpillForm::kKv ||
                                          sp->spilled == SpillForm::kAuto);
  if (wants_blocks && sp->seq < 0 && !(has_blocks && sp->spilled == form) && !sp->log.empty()) {
    // Spilled in another form (or as tokens): back to hot, then out in the form asked for.
    std::string from;
    RSD_RETURN_IF_ERROR(Restore(*sp, &from));
    RSD_RETURN_IF_ERROR(engine_->FlushPending(sp->seq));
  }
  if (sp->seq >= 0) {
    // Pending tokens (the last turn's end) get their K/V first, so the blocks cover them too.
    if (wants_blocks) RSD_RETURN_IF_ERROR(engine_->FlushPending(sp->seq));
    absl::Status st = Spill(id, form);
    if (st.code() == absl::StatusCode::kFailedPrecondition && form == SpillForm::kAuto) {
      st = Spill(id, SpillForm::kTokens);  // the residuals the plan needs were not kept
    }
    RSD_RETURN_IF_ERROR(st);
  }
  Session& s = *sp;
  SessionState out;
  out.id = id;
  out.attrs = s.attrs;
  out.model_fingerprint = engine_->model_fingerprint();
  out.numerics_fingerprint = engine_->numerics_fingerprint();
  out.block_tokens = engine_->model().block_tokens();
  out.tokens = s.log;
  out.turn_ends = s.turn_ends;
  const bool blocks = wants_blocks && s.spilled != SpillForm::kTokens && s.spilled_chunks > 0;
  out.form = blocks ? s.spilled : SpillForm::kTokens;
  if (!blocks) return out;
  out.n_chunks = s.spilled_chunks;
  for (uint8_t k : s.layer_kv) out.layer_forms += k ? 'k' : 'r';
  for (int32_t c = 0; c < s.spilled_chunks; ++c) {
    for (int l = 0; l < engine_->config().n_layers; ++l) {
      if (!s.layer_kv[l] && l == 0) continue;  // layer 0's residual is the token embedding
      const BlockKey key{id, static_cast<uint32_t>(l), static_cast<uint32_t>(c)};
      bool from_cold = false;
      RSD_ASSIGN_OR_RETURN(std::string value, GetCheckpoint(key, &from_cold));
      out.blocks.push_back({key.layer, key.block, std::move(value)});
    }
  }
  return out;
}

absl::StatusOr<ImportReport> SessionManager::ImportState(const SessionState& state) {
  if (state.version != SessionState::kVersion) {
    return absl::FailedPreconditionError(absl::StrCat("session state version ", state.version,
                                                      " is not ", SessionState::kVersion));
  }
  if (state.model_fingerprint != engine_->model_fingerprint()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session ", state.id.ToHex(), " was built with model ", state.model_fingerprint,
        "; this worker runs ", engine_->model_fingerprint()));
  }
  if (Session* existing = Find(state.id)) {
    if (existing->attrs.epoch >= state.attrs.epoch) {
      return absl::FailedPreconditionError(absl::StrCat(
          "session ", state.id.ToHex(), " is here already at epoch ", existing->attrs.epoch,
          " (import at epoch ", state.attrs.epoch, ")"));
    }
    RSD_RETURN_IF_ERROR(Close(state.id));  // a stale copy from an older ownership
  }
  int64_t end = 0;
  for (int64_t e : state.turn_ends) {
    if (e < end || e > static_cast<int64_t>(state.tokens.size())) {
      return absl::InvalidArgumentError("session state: turn ends are not ascending within the log");
    }
    end = e;
  }
  if (end != static_cast<int64_t>(state.tokens.size())) {
    return absl::InvalidArgumentError("session state: the token log does not end at a turn end");
  }
  const int32_t vocab = engine_->tokenizer().vocab_size();
  for (size_t i = 0; i < state.tokens.size(); ++i) {
    if (state.tokens[i] < 0 || state.tokens[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("session state: token ", i, " of the log is ",
                                                     state.tokens[i],
                                                     ", outside the vocabulary of ", vocab));
    }
  }
  ImportReport report;
  const int n_layers = engine_->config().n_layers;
  const int bt = engine_->model().block_tokens();
  bool use_blocks = state.form != SpillForm::kTokens && state.n_chunks > 0;
  if (use_blocks && (state.numerics_fingerprint != engine_->numerics_fingerprint() ||
                     state.block_tokens != bt)) {
    use_blocks = false;
    report.note = absl::StrCat("numerics fingerprint ", state.numerics_fingerprint, " / block size ",
                               state.block_tokens, " differ from this worker's ",
                               engine_->numerics_fingerprint(), " / ", bt,
                               ": the session rebuilds from its token log");
  }
  std::vector<uint8_t> layer_kv;
  if (use_blocks) {
    if (static_cast<int>(state.layer_forms.size()) != n_layers ||
        static_cast<int64_t>(state.n_chunks) * bt > static_cast<int64_t>(state.tokens.size())) {
      return absl::InvalidArgumentError("session state: layer forms or chunk count do not fit the model");
    }
    for (char ch : state.layer_forms) layer_kv.push_back(ch == 'k');
    // Every block present exactly once, checksummed, describing its place.
    std::map<std::pair<uint32_t, uint32_t>, const SessionState::Block*> seen;
    for (const SessionState::Block& b : state.blocks) {
      absl::StatusOr<BlockInfo> info = InspectBlock(b.value);
      if (!info.ok()) {
        return absl::DataLossError(absl::StrCat("block of layer ", b.layer, " chunk ", b.chunk,
                                                ": ", info.status().message()));
      }
      const CheckpointHeader want = Header(
          b.layer < layer_kv.size() && layer_kv[b.layer] ? SpillForm::kKv : SpillForm::kResidual,
          static_cast<int>(b.layer), static_cast<int32_t>(b.chunk));
      if (!(info->header == want) || !seen.emplace(std::make_pair(b.layer, b.chunk), &b).second) {
        return absl::DataLossError(absl::StrCat("block of layer ", b.layer, " chunk ", b.chunk,
                                                " does not describe that place (or repeats)"));
      }
      report.blocks++;
      report.payload_bytes += static_cast<int64_t>(info->payload_size);
      report.framing_bytes += static_cast<int64_t>(b.value.size() - info->payload_size);
    }
    for (int32_t c = 0; c < state.n_chunks; ++c) {
      for (int l = 0; l < n_layers; ++l) {
        if (!layer_kv[l] && l == 0) continue;
        if (!seen.count({static_cast<uint32_t>(l), static_cast<uint32_t>(c)})) {
          return absl::DataLossError(absl::StrCat("session state lacks the block of layer ", l,
                                                  " chunk ", c));
        }
      }
    }
  }
  Session s;
  s.id = state.id;
  s.name = state.id.ToHex();
  s.attrs = state.attrs;
  s.log = state.tokens;
  s.turn_ends = state.turn_ends;
  s.last_active = MonotonicSeconds();
  s.last_used = ++clock_;
  s.spilled = use_blocks ? state.form : SpillForm::kTokens;
  s.spilled_chunks = use_blocks ? state.n_chunks : 0;
  s.layer_kv = layer_kv;
  absl::Status st = [&]() -> absl::Status {
    if (cold_) {
      RSD_RETURN_IF_ERROR(cold_->DeleteSession(s.id));
      int64_t begin = 0;
      for (size_t t = 0; t < s.turn_ends.size(); ++t) {
        RSD_RETURN_IF_ERROR(cold_->AppendTokens(
            s.id, static_cast<uint32_t>(t),
            std::span<const int32_t>(s.log.data() + begin, s.turn_ends[t] - begin)));
        begin = s.turn_ends[t];
      }
    }
    if (use_blocks) {
      for (const SessionState::Block& b : state.blocks) {
        RSD_RETURN_IF_ERROR(PutCheckpoint(BlockKey{s.id, b.layer, b.chunk}, b.value));
      }
    }
    return SaveMeta(s);
  }();
  if (!st.ok()) {
    tiers_->EvictSession(s.id).IgnoreError();
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
  const bool checkpoints = s.spilled == SpillForm::kResidual || s.spilled == SpillForm::kKv ||
                           s.spilled == SpillForm::kAuto;
  if (checkpoints && s.spilled_chunks > 0 &&
      static_cast<int>(s.layer_kv.size()) == engine_->config().n_layers) {
    bool from_cold = false;
    auto load = [&](int32_t chunk, int layer) -> absl::StatusOr<std::vector<float>> {
      BlockKey key{s.id, static_cast<uint32_t>(layer), static_cast<uint32_t>(chunk)};
      RSD_ASSIGN_OR_RETURN(std::string value, GetCheckpoint(key, &from_cold));
      RSD_ASSIGN_OR_RETURN(DecodedBlock block, DecodeBlock(value));
      const CheckpointHeader want =
          Header(s.layer_kv[layer] ? SpillForm::kKv : SpillForm::kResidual, layer, chunk);
      if (!(block.header == want)) {
        return absl::DataLossError(absl::StrCat("checkpoint of chunk ", chunk, " layer ", layer,
                                                " does not describe that block"));
      }
      std::vector<float> out(block.payload.size() / sizeof(float));
      std::memcpy(out.data(), block.payload.data(), out.size() * sizeof(float));
      return out;
    };
    restoring_ = &s;
    absl::StatusOr<int32_t> seq = engine_->ImportSequence(s.log, s.spilled_chunks, s.layer_kv, load);
    restoring_ = nullptr;
    if (seq.ok()) {
      s.seq = *seq;
      *restored_from = from_cold ? "cold" : "warm";
      return absl::OkStatus();
    }
    if (seq.status().code() == absl::StatusCode::kResourceExhausted) return seq.status();
    // A checkpoint that cannot be read is never served: rebuild from the token log instead.
    std::fprintf(stderr, "session %s: %s checkpoints unusable (%s); rebuilding from tokens\n",
                 s.name.c_str(), SpillFormName(s.spilled), seq.status().ToString().c_str());
  }
  s.seq = engine_->CreateSequence();
  engine_->AppendPending(s.seq, s.log);
  *restored_from = s.log.empty() ? "new" : "tokens";
  return absl::OkStatus();
}

absl::StatusOr<TurnResult> SessionManager::Chat(const SessionId& id, const std::string& user_text,
                                                const GenerateParams& params) {
  bool reset = false;
  for (;;) {
    absl::StatusOr<PendingTurn> turn = BeginTurn(id, user_text, params, /*flush=*/true);
    absl::Status st = turn.status();
    if (turn.ok()) {
      absl::StatusOr<GenerateResult> g = engine_->Generate(turn->seq, turn->user_tokens, params);
      if (g.ok()) return CommitTurn(*turn, *std::move(g));
      RSD_RETURN_IF_ERROR(AbortTurn(*turn));
      st = g.status();
    }
    if (st.code() == absl::StatusCode::kDataLoss && !reset) {
      // A checkpoint could not be read back intact: never served stale, never fatal. The turn
      // runs again on the session rebuilt from its token log (deterministic, so it produces
      // what it would have).
      RSD_RETURN_IF_ERROR(ResetToTokens(id, st));
      reset = true;
      continue;
    }
    if (st.code() != absl::StatusCode::kResourceExhausted) return st;
    // The pool is full: make room by spilling an idle session, then run the turn again (it is
    // deterministic, so the retry produces what the first attempt would have).
    RSD_ASSIGN_OR_RETURN(bool spilled, SpillIdle({id}));
    if (!spilled) return st;
  }
}

absl::Status SessionManager::ResetToTokens(const SessionId& id, const absl::Status& why) {
  Session* s = Find(id);
  if (s == nullptr) return NotFound(id);
  std::fprintf(stderr,
               "session %s: a checkpoint failed to load (%s); dropping its checkpoints "
               "and rebuilding it from the token log\n",
               s->name.c_str(), why.ToString().c_str());
  if (s->seq >= 0) {
    engine_->DestroySequence(s->seq);
    s->seq = -1;
  }
  RSD_RETURN_IF_ERROR(tiers_->EvictSession(id));
  s->spilled = SpillForm::kTokens;
  s->spilled_chunks = 0;
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
  const int64_t history = static_cast<int64_t>(s.log.size());
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
  t.turn = s.turns();
  t.before = static_cast<int64_t>(s.log.size());
  t.user_tokens = engine_->chat_template().UserTurn(user_text, s.turns() == 0);
  const double t0 = MonotonicSeconds();
  if (s.seq < 0) {
    RSD_RETURN_IF_ERROR(Restore(s, &t.restored_from));
  } else {
    t.restored_from = "hot";
  }
  if (flush) {
    absl::Status st = engine_->FlushPending(s.seq);
    if (!st.ok()) {
      RSD_RETURN_IF_ERROR(engine_->TruncateSequence(s.seq, t.before));
      return st;
    }
  }
  t.seq = s.seq;
  t.restore_seconds = MonotonicSeconds() - t0;
  return t;
}

absl::Status SessionManager::AbortTurn(const PendingTurn& turn) {
  Session* s = Find(turn.id);
  if (s == nullptr) return NotFound(turn.id);
  s->last_active = MonotonicSeconds();
  if (s->seq < 0) return absl::OkStatus();
  return engine_->TruncateSequence(s->seq, turn.before);
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
  engine_->AppendPending(s.seq, end);
  TurnResult r;
  r.turn = turn.turn;
  r.restored_from = turn.restored_from;
  r.restore_seconds = turn.restore_seconds;
  const std::vector<int32_t>& all = engine_->SequenceTokens(s.seq);
  r.turn_tokens.assign(all.begin() + turn.before, all.end());
  if (cold_) {
    absl::Status st = cold_->AppendTokens(s.id, s.turns(), r.turn_tokens);
    if (!st.ok()) {
      RSD_RETURN_IF_ERROR(engine_->TruncateSequence(s.seq, turn.before));
      return st;
    }
  }
  s.log.insert(s.log.end(), r.turn_tokens.begin(), r.turn_tokens.end());
  s.turn_ends.push_back(static_cast<int64_t>(s.log.size()));
  s.spilled = SpillForm::kNone;
  s.spilled_chunks = 0;
  r.history_tokens = static_cast<int64_t>(s.log.size());
  RSD_RETURN_IF_ERROR(SaveMeta(s));
  generated.prompt_tokens = static_cast<int64_t>(turn.user_tokens.size());
  r.generation = std::move(generated);
  return r;
}

absl::Status SessionManager::Undo(const SessionId& id) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return absl::NotFoundError(absl::StrCat("unknown session ", id.ToHex()));
  Session& s = it->second;
  if (s.turns() == 0) {
    return absl::FailedPreconditionError(absl::StrCat("session ", s.name, " has no turn to undo"));
  }
  const int64_t keep = s.turns() >= 2 ? s.turn_ends[s.turns() - 2] : 0;
  if (cold_) RSD_RETURN_IF_ERROR(cold_->TruncateTokenLog(s.id, s.turns() - 1));
  if (s.seq >= 0) RSD_RETURN_IF_ERROR(engine_->TruncateSequence(s.seq, keep));
  s.log.resize(static_cast<size_t>(keep));
  s.turn_ends.pop_back();
  if (s.seq < 0) {
    // Spilled checkpoints may cover tokens of the removed turn: restore from the token log.
    s.spilled = SpillForm::kTokens;
    s.spilled_chunks = 0;
    RSD_RETURN_IF_ERROR(tiers_->EvictSession(s.id));
  }
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
    if (s.seq < 0 || std::find(busy.begin(), busy.end(), id) != busy.end()) continue;
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
    } else if (idle > s.attrs.ttl_seconds && s.seq >= 0) {
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
