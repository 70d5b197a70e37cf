// Migration and drain (DESIGN.md section 5, "Migration"): the owner exports the session's state at
// a turn boundary (its gate held), the target imports it at epoch + 1, the journal switches the
// owner (synced), and only then is the source's copy dropped. Any failure before the switch leaves
// the journal as it was, so the source keeps serving the session.
#include <cstdio>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "router/dedup_pipe.h"
#include "router/router_core.h"
#include "storage/common/crash_point.h"
#include "storage/common/log.h"
#include "storage/common/status.h"

namespace rsd::router {
namespace {

const std::set<std::string>& Forms() {
  static const std::set<std::string> forms = {"auto", "residual", "kv", "tokens"};
  return forms;
}

// `s` with `what` in front of its message, code kept.
absl::Status Prefixed(const absl::Status& s, const std::string& what) {
  return absl::Status(s.code(), absl::StrCat(what, ": ", s.message()));
}

absl::Time Sooner(absl::Time a, absl::Time b) { return a < b ? a : b; }

// After its deadline, how long an import that had received its whole stream may still take to
// commit (one synced RocksDB write): a copy is checked for once this has passed too.
constexpr absl::Duration kImportSettles = absl::Seconds(10);

}  // namespace

absl::StatusOr<v1::ImportSessionResponse> RouterCore::Import(
    const WorkerSnapshot& target, absl::Time deadline,
    const std::function<absl::StatusOr<bool>(v1::StateChunk*)>& next) {
  std::unique_ptr<ImportStream> writer = Worker(target)->ImportSession(deadline);
  v1::StateChunk chunk;
  for (;;) {
    absl::StatusOr<bool> more = next(&chunk);
    if (!more.ok()) {
      // The target sees a cancelled stream and keeps nothing.
      writer->Cancel();
      (void)writer->Finish();
      return more.status();
    }
    if (!*more) break;
    if (!writer->Write(chunk)) break;  // the target stopped reading: Finish says why
  }
  absl::StatusOr<v1::ImportSessionResponse> resp = writer->Finish();
  if (!resp.ok()) {
    return Prefixed(WorkerError(resp.status(), target.desc.id, target.desc.address),
                    absl::StrCat("import into worker '", target.desc.id, "'"));
  }
  return resp;
}

absl::StatusOr<v1::MigrateResponse> RouterCore::Switch(const SessionRecord& session,
                                                       const WorkerSnapshot& target,
                                                       const v1::ImportSessionResponse& imported,
                                                       const std::string& route,
                                                       absl::Time deadline, absl::Time started) {
  const uint64_t new_epoch = session.epoch + 1;
  CrashPoint("migrate:imported");  // the target holds the session; the journal names the source
  absl::StatusOr<SessionRecord> moved =
      journal_->SetOwner(session.id, target.desc.id, new_epoch, session.epoch);
  v1::SessionRef new_ref = RefOf(session);
  new_ref.set_epoch(new_epoch);
  if (!moved.ok()) {
    // The journal still names the old owner: the target's copy must not survive.
    CloseCopy(target.desc.id, new_ref, deadline);
    return Prefixed(moved.status(), absl::StrCat("worker '", target.desc.id,
                                                 "' imported the session but the journal did "
                                                 "not switch its owner"));
  }
  CrashPoint("migrate:switched");  // the journal names the target; the source's copy is not dropped
  registry_->AddPlaced(session.worker, -1);
  registry_->AddPlaced(target.desc.id, 1);
  // A session rebuilt on the worker that reported it damaged has no old copy to drop.
  if (session.worker != target.desc.id) CloseCopy(session.worker, RefOf(session), deadline);

  v1::MigrateResponse out;
  *out.mutable_session() = imported.session();
  FillOwnership(*moved, out.mutable_session());
  out.set_from_worker(session.worker);
  out.set_from_epoch(session.epoch);
  out.set_form(imported.form());
  out.set_note(imported.note());
  out.set_blocks(imported.blocks());
  out.set_payload_bytes(imported.payload_bytes());
  out.set_framing_bytes(imported.framing_bytes());
  out.set_token_bytes(imported.token_bytes());
  out.set_wire_bytes(imported.wire_bytes());
  out.set_shared_tokens(imported.shared_tokens());
  out.set_route(route);
  out.set_seconds(absl::ToDoubleSeconds(absl::Now() - started));
  log::Info("session moved", {{"session", session.id.ToHex()},
                              {"from", session.worker},
                              {"from_epoch", std::to_string(session.epoch)},
                              {"to", target.desc.id},
                              {"epoch", std::to_string(new_epoch)},
                              {"route", route},
                              {"form", imported.form()},
                              {"blocks", std::to_string(imported.blocks())},
                              {"payload_bytes", std::to_string(imported.payload_bytes())},
                              {"framing_bytes", std::to_string(imported.framing_bytes())},
                              {"token_bytes", std::to_string(imported.token_bytes())},
                              {"wire_bytes", std::to_string(imported.wire_bytes())},
                              {"shared_tokens", std::to_string(imported.shared_tokens())},
                              {"seconds", absl::StrFormat("%.3f", out.seconds())},
                              {"note", imported.note()}});
  return out;
}

absl::StatusOr<v1::MigrateResponse> RouterCore::MoveLocked(const SessionRecord& session,
                                                           const WorkerSnapshot& target,
                                                           const std::string& form,
                                                           absl::Time deadline,
                                                           absl::Time started) {
  const std::string what =
      absl::StrCat("migrate session ", session.id.ToHex(), " from worker '", session.worker,
                   "' (epoch ", session.epoch, ") to worker '", target.desc.id, "'");
  absl::StatusOr<WorkerSnapshot> source = Owner(session);
  if (!source.ok()) {
    return Prefixed(source.status(), absl::StrCat(what, " (use failover for a dead worker)"));
  }
  v1::ExportSessionRequest req;
  *req.mutable_ref() = RefOf(session);
  req.set_form(form);
  req.set_target_epoch(session.epoch + 1);
  // Worker to worker first; through the router if the source cannot reach the target (or does
  // not speak SendSession). Any other refusal is final: the piped stream would meet it too.
  v1::SendSessionRequest send;
  *send.mutable_source() = req;
  send.set_target_address(target.desc.address);
  send.set_target_worker(target.desc.id);
  absl::StatusOr<v1::ImportSessionResponse> direct = Worker(*source)->SendSession(send, deadline);
  if (direct.ok()) {
    absl::StatusOr<v1::MigrateResponse> out =
        Switch(session, target, *direct, "direct", deadline, started);
    if (!out.ok()) return Prefixed(out.status(), what);
    return out;
  }
  if (!absl::IsUnimplemented(direct.status())) {
    // Should the target have taken the session after all (an answer lost on the way back), its
    // copy must neither outlive a failed migration nor block the piped import.
    v1::SessionRef new_ref = RefOf(session);
    new_ref.set_epoch(session.epoch + 1);
    CloseCopy(target.desc.id, new_ref, deadline);
    // The transfer may still commit there after this close, until its deadline.
    CloseCopyLater(target.desc.id, new_ref,
                   Sooner(deadline, started + options_.move_timeout) + kImportSettles);
  }
  if (!absl::IsUnavailable(direct.status()) && !absl::IsUnimplemented(direct.status())) {
    return Prefixed(WorkerError(direct.status(), source->desc.id, source->desc.address), what);
  }
  if (absl::IsUnavailable(direct.status())) {
    log::Warn("worker to worker transfer failed; piping through the router",
              {{"what", what}, {"error", std::string(direct.status().message())}});
  }
  return PipeLocked(session, *source, target, req, deadline, started);
}

absl::StatusOr<v1::MigrateResponse> RouterCore::PipeLocked(
    const SessionRecord& session, const WorkerSnapshot& source, const WorkerSnapshot& target,
    const v1::ExportSessionRequest& req, absl::Time deadline, absl::Time started, bool dedup) {
  const std::string what =
      absl::StrCat("migrate session ", session.id.ToHex(), " from worker '", session.worker,
                   "' (epoch ", session.epoch, ") to worker '", target.desc.id, "'");
  std::unique_ptr<ReadStream<v1::StateChunk>> reader = Worker(source)->ExportSession(req, deadline);
  bool export_finished = false;
  auto next = [&](v1::StateChunk* chunk) -> absl::StatusOr<bool> {
    if (reader->Read(chunk)) return true;
    export_finished = true;
    const absl::Status s = reader->Finish();
    if (!s.ok()) {
      return Prefixed(WorkerError(s, source.desc.id, source.desc.address),
                      absl::StrCat("export from worker '", source.desc.id, "'"));
    }
    return false;
  };
  DedupPipe pipe(next, [&](const v1::StateHeader& header) -> int32_t {
    const std::optional<v1::HeldPrefixRequest> offer =
        dedup ? HeldPrefixOffer(header) : std::nullopt;
    if (!offer) return 0;
    absl::StatusOr<v1::HeldPrefixResponse> held =
        Worker(target)->HeldPrefix(*offer, Sooner(deadline, absl::Now() + absl::Seconds(5)));
    return held.ok() ? held->chunks() : 0;  // an older worker, or none: everything travels
  });
  absl::StatusOr<v1::ImportSessionResponse> imported =
      Import(target, deadline, [&](v1::StateChunk* chunk) { return pipe.Next(chunk); });
  if (!export_finished) {
    // The target refused before the end: stop the source's stream.
    reader->Cancel();
    v1::StateChunk drained;
    while (reader->Read(&drained)) {
    }
    (void)reader->Finish();
  }
  if (absl::IsAborted(imported.status()) && pipe.shared_chunks() > 0) {
    log::Info("the target no longer holds the shared chunks: piping the session whole",
              {{"what", what}, {"error", std::string(imported.status().message())}});
    return PipeLocked(session, source, target, req, deadline, started, /*dedup=*/false);
  }
  if (!imported.ok()) return Prefixed(imported.status(), what);
  absl::StatusOr<v1::MigrateResponse> out =
      Switch(session, target, *imported, "router", deadline, started);
  if (!out.ok()) return Prefixed(out.status(), what);
  return out;
}

absl::StatusOr<v1::MigrateResponse> RouterCore::Recorded(const std::string& kind,
                                                         absl::StatusOr<v1::MigrateResponse> moved,
                                                         absl::Time started) {
  const double seconds = absl::ToDoubleSeconds(absl::Now() - started);
  if (moved.ok()) {
    metrics_.Move(kind, moved->route(), true, moved->wire_bytes(), seconds);
  } else {
    metrics_.Move(kind, "", false, 0, seconds);
  }
  return moved;
}

absl::StatusOr<v1::MigrateResponse> RouterCore::Migrate(const std::string& hex,
                                                        const std::string& to,
                                                        const std::string& form_in,
                                                        absl::Time deadline_in) {
  const absl::Time started = absl::Now();
  const absl::Time deadline = Sooner(deadline_in, started + options_.move_timeout);
  const std::string form = form_in.empty() ? "auto" : form_in;
  if (Forms().count(form) == 0) {
    return absl::InvalidArgumentError(absl::StrCat("migrate session ", hex, ": unknown form '",
                                                   form, "' (auto, residual, kv or tokens)"));
  }
  RSD_ASSIGN_OR_RETURN(SessionRecord rec, LoadSession(hex, nullptr));
  RSD_ASSIGN_OR_RETURN(WorkerSnapshot target, registry_->Get(to));
  RSD_ASSIGN_OR_RETURN(
      SessionGates::Lock gate,
      gates_.Acquire(rec.id, absl::StrCat("migration to worker '", to, "'"), deadline));
  // The owner may have changed while we waited.
  RSD_ASSIGN_OR_RETURN(rec, journal_->GetSession(rec.id));
  const std::string what = absl::StrCat("migrate session ", rec.id.ToHex(), " to worker '", to,
                                        "'");
  if (rec.worker == to) {
    return absl::FailedPreconditionError(absl::StrCat(what, ": it is already there (epoch ",
                                                      rec.epoch, ")"));
  }
  RSD_ASSIGN_OR_RETURN(target, registry_->Get(to));
  if (target.state != WorkerState::kReady) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, ": the worker is ", WorkerStateName(target.state), ", not ready"));
  }
  if (target.desc.model != rec.model) {
    return absl::FailedPreconditionError(absl::StrCat(what, ": the session is of model '",
                                                      rec.model, "', the worker serves '",
                                                      target.desc.model, "'"));
  }
  if (!rec.model_fingerprint.empty() && target.desc.model_fingerprint != rec.model_fingerprint) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, ": the session's model fingerprint is '", rec.model_fingerprint,
        "', the worker's is '", target.desc.model_fingerprint, "'"));
  }
  return Recorded("migrate", MoveLocked(rec, target, form, deadline, started), started);
}

std::vector<SessionId> RouterCore::SessionsOwnedBy(const std::string& worker) {
  std::vector<SessionId> out;
  absl::StatusOr<std::vector<SessionRecord>> all = journal_->ListSessions();
  if (!all.ok()) {
    log::Error("cannot list the worker's sessions",
               {{"worker", worker}, {"error", all.status().ToString()}});
    return out;
  }
  for (const SessionRecord& s : *all) {
    if (s.worker == worker) out.push_back(s.id);
  }
  return out;
}

absl::StatusOr<std::vector<v1::MigrateResponse>> RouterCore::Drain(const std::string& worker,
                                                                   absl::Time deadline) {
  RSD_RETURN_IF_ERROR(registry_->SetDraining(worker, true).status());
  std::vector<v1::MigrateResponse> moved;
  std::vector<absl::Status> failed;
  // A second pass catches a session moved onto the worker while it was being drained (it was
  // ready then); nothing new is placed there once it is draining.
  for (int pass = 0; pass < 2; ++pass) {
    failed.clear();
    for (const SessionId& id : SessionsOwnedBy(worker)) {
      const absl::Time started = absl::Now();
      const absl::Time until = Sooner(deadline, started + options_.move_timeout);
      using Moved = std::optional<v1::MigrateResponse>;  // nullopt: closed or moved meanwhile
      absl::StatusOr<Moved> one = [&]() -> absl::StatusOr<Moved> {
        RSD_ASSIGN_OR_RETURN(SessionGates::Lock gate,
                             gates_.Acquire(id, absl::StrCat("drain of worker '", worker, "'"),
                                            until));
        absl::StatusOr<SessionRecord> rec = journal_->GetSession(id);
        if (absl::IsNotFound(rec.status())) return Moved();
        RSD_RETURN_IF_ERROR(rec.status());
        if (rec->worker != worker) return Moved();
        absl::StatusOr<WorkerSnapshot> target =
            registry_->PickTarget(rec->model, rec->model_fingerprint, worker);
        if (!target.ok()) {
          return Prefixed(target.status(), absl::StrCat("drain session ", id.ToHex()));
        }
        RSD_ASSIGN_OR_RETURN(
            v1::MigrateResponse m,
            Recorded("drain", MoveLocked(*rec, *target, "auto", until, started), started));
        return Moved(std::move(m));
      }();
      if (!one.ok()) {
        failed.push_back(one.status());
      } else if (one->has_value()) {
        moved.push_back(std::move(**one));
      }
    }
    if (!failed.empty()) break;
  }
  if (!failed.empty()) {
    std::vector<std::string> messages;
    for (const absl::Status& f : failed) messages.push_back(std::string(f.message()));
    return absl::Status(failed.front().code(),
                        absl::StrCat("drain of worker '", worker, "': moved ", moved.size(),
                                     " sessions, ", failed.size(), " could not be moved (the "
                                     "worker stays draining): ",
                                     absl::StrJoin(messages, "; ")));
  }
  return moved;
}

}  // namespace rsd::router
