// The client's session calls in the core: create, get, close and undo. Chat is in chat.cc.
#include <algorithm>
#include <cstdio>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "router/request_limits.h"
#include "router/router_core.h"
#include "storage/common/log.h"
#include "storage/common/status.h"

namespace rsd::router {

absl::StatusOr<v1::SessionInfo> RouterCore::CreateSession(const Caller& caller,
                                                          const v1::CreateSessionRequest& req) {
  RSD_RETURN_IF_ERROR(CheckCreateRequest(caller, req));
  const bool pin = req.options().pin();
  RSD_RETURN_IF_ERROR(quotas_.ReserveSession(caller.tenant, pin));
  absl::StatusOr<v1::SessionInfo> created = PlaceAndOpen(caller, req);
  if (!created.ok()) quotas_.ReleaseSession(caller.tenant, pin);
  return created;
}

absl::StatusOr<v1::SessionInfo> RouterCore::PlaceAndOpen(const Caller& caller,
                                                         const v1::CreateSessionRequest& req) {
  // A worker that cannot be reached (down but not yet timed out) costs this create one attempt:
  // the next best ready worker gets it. Any other refusal is the caller's to see.
  std::vector<std::string> unreachable;
  absl::Status first_error;
  const std::optional<PrefixHint> hint = PrefixHintFor(caller, req);
  for (;;) {
    int64_t matched = 0;
    absl::StatusOr<WorkerSnapshot> placed =
        registry_->Place(req.model(), unreachable, hint ? &*hint : nullptr, &matched);
    if (!placed.ok()) return first_error.ok() ? placed.status() : first_error;
    const WorkerSnapshot& worker = *placed;
    SessionRecord rec;
    rec.id = SessionId::Random();
    rec.tenant = caller.tenant;
    rec.model = worker.desc.model;
    rec.worker = worker.desc.id;
    rec.model_fingerprint = worker.desc.model_fingerprint;
    rec.epoch = 1;
    rec.ttl_seconds = req.options().ttl_seconds();
    rec.pin = req.options().pin();
    rec.priority = req.options().priority();
    rec.created_unix_ms = absl::ToUnixMillis(absl::Now());
    v1::OpenSessionRequest open;
    *open.mutable_ref() = RefOf(rec);
    open.set_model(rec.model);
    *open.mutable_options() = req.options();
    std::shared_ptr<WorkerClient> client = Worker(worker);
    absl::StatusOr<v1::SessionInfo> info =
        client->OpenSession(open, UnaryDeadline(caller.deadline));
    if (!info.ok()) {
      registry_->AddPlaced(worker.desc.id, -1);
      const absl::Status err = WorkerError(info.status(), worker.desc.id, worker.desc.address);
      if (!absl::IsUnavailable(info.status()) || absl::Now() >= caller.deadline) return err;
      if (first_error.ok()) first_error = err;
      unreachable.push_back(worker.desc.id);
      continue;
    }
    absl::StatusOr<v1::SessionInfo> opened =
        JournalNewSession(caller, rec, *std::move(info), client);
    if (opened.ok()) metrics_.Placed(!hint ? "none" : matched > 0 ? "matched" : "unmatched");
    return opened;
  }
}

std::optional<PrefixHint> RouterCore::PrefixHintFor(const Caller& caller,
                                                    const v1::CreateSessionRequest& req) {
  if (!options_.prefix_routing || !req.has_first_turn()) return std::nullopt;
  // Any worker of the model tokenizes the same way: ask the one placement would pick anyway.
  absl::StatusOr<WorkerSnapshot> asked = registry_->PickTarget(req.model(), "", "");
  if (!asked.ok()) return std::nullopt;
  v1::PromptKeysRequest ask;
  ask.set_tenant(caller.tenant);
  *ask.mutable_turn() = req.first_turn();
  absl::StatusOr<v1::PromptKeysResponse> keys =
      Worker(*asked)->PromptKeys(ask, std::min(caller.deadline, absl::Now() + absl::Seconds(2)));
  if (!keys.ok()) {
    // Only a hint: placement goes by load alone.
    log::Warn("no prompt keys for placement",
              {{"worker", asked->desc.id}, {"error", keys.status().ToString()}});
    return std::nullopt;
  }
  PrefixHint hint;
  for (const v1::PrefixKey& k : keys->keys()) hint.keys.emplace_back(k.key(), k.tokens());
  if (hint.keys.empty()) return std::nullopt;
  return hint;
}

absl::StatusOr<v1::SessionInfo> RouterCore::JournalNewSession(
    const Caller& caller, const SessionRecord& rec, v1::SessionInfo info,
    const std::shared_ptr<WorkerClient>& client) {
  absl::Status journaled = journal_->PutSession(rec);
  if (!journaled.ok()) {
    // Best effort: do not leave a session on the worker that the router does not know.
    (void)client->CloseSession(RefOf(rec), UnaryDeadline(caller.deadline));
    registry_->AddPlaced(rec.worker, -1);
    return journaled;
  }
  FillOwnership(rec, &info);
  return info;
}

absl::StatusOr<v1::SessionInfo> RouterCore::GetSession(const Caller& caller,
                                                       const std::string& hex) {
  RSD_ASSIGN_OR_RETURN(SessionRecord rec, LoadSession(hex, &caller.tenant));
  return Describe(rec, caller.deadline);
}

absl::Status RouterCore::CloseSession(const Caller& caller, const std::string& hex) {
  RSD_ASSIGN_OR_RETURN(SessionRecord rec, LoadSession(hex, &caller.tenant));
  // Not in the middle of a turn or a move; the owner as the journal has it then.
  RSD_ASSIGN_OR_RETURN(SessionGates::Lock gate, gates_.Acquire(rec.id, "close", caller.deadline));
  RSD_ASSIGN_OR_RETURN(rec, LoadSession(hex, &caller.tenant));
  return CloseLocked(rec, caller.deadline);
}

absl::Status RouterCore::CloseLocked(const SessionRecord& rec, absl::Time deadline) {
  absl::StatusOr<WorkerSnapshot> owner = Owner(rec);
  if (owner.ok()) {
    absl::Status s = Worker(*owner)->CloseSession(RefOf(rec), UnaryDeadline(deadline)).status();
    // A worker that cannot be reached, or no longer has the session, does not keep the session
    // alive in the journal; any other refusal (e.g. a running turn) is the caller's to see.
    if (!s.ok() && !absl::IsUnavailable(s) && !absl::IsDeadlineExceeded(s) &&
        !absl::IsNotFound(s)) {
      return WorkerError(s, owner->desc.id, owner->desc.address);
    }
  }
  RSD_ASSIGN_OR_RETURN(std::optional<TurnRecord> last, journal_->LastTurn(rec.id));
  RSD_RETURN_IF_ERROR(journal_->DeleteSession(rec.id));
  registry_->AddPlaced(rec.worker, -1);
  quotas_.ReleaseSession(rec.tenant, rec.pin, last.has_value() ? last->history_tokens : 0);
  return absl::OkStatus();
}

absl::StatusOr<v1::SessionInfo> RouterCore::UndoTurn(const Caller& caller, const std::string& hex) {
  RSD_ASSIGN_OR_RETURN(SessionRecord rec, LoadSession(hex, &caller.tenant));
  RSD_ASSIGN_OR_RETURN(SessionGates::Lock gate, gates_.Acquire(rec.id, "undo", caller.deadline));
  RSD_ASSIGN_OR_RETURN(rec, LoadSession(hex, &caller.tenant));
  RSD_ASSIGN_OR_RETURN(WorkerSnapshot owner, Owner(rec));
  absl::StatusOr<v1::SessionInfo> info =
      Worker(owner)->UndoTurn(RefOf(rec), UnaryDeadline(caller.deadline));
  if (!info.ok()) return WorkerError(info.status(), owner.desc.id, owner.desc.address);
  RSD_ASSIGN_OR_RETURN(std::optional<TurnRecord> removed, journal_->LastTurn(rec.id));
  RSD_RETURN_IF_ERROR(journal_->RemoveLastTurn(rec.id).status());
  RSD_ASSIGN_OR_RETURN(std::optional<TurnRecord> last, journal_->LastTurn(rec.id));
  quotas_.AddHistory(rec.tenant, (last.has_value() ? last->history_tokens : 0) -
                                     (removed.has_value() ? removed->history_tokens : 0));
  FillOwnership(rec, &*info);
  return info;
}

}  // namespace rsd::router
