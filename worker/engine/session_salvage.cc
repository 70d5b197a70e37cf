// SessionManager's salvage of a damaged cold store (issue #14). RocksDB's range scans read every
// level-0 table file that overlaps them, so one damaged block would fail the reads (and the turn
// commits) of sessions that merely share a level with it. At start, a store in which some session
// cannot be read whole is therefore rebuilt: every readable session's metadata and token log are
// copied, by point lookups, into a fresh store; the damaged directory is set aside, not deleted;
// the unreadable sessions are quarantined (reported to the router, which rebuilds them from its
// journal). Copied sessions keep no checkpoints: they restore from their token logs, exactly.
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "storage/common/log.h"
#include "storage/common/status.h"
#include "worker/engine/session_manager.h"

namespace rsd {

// Whether every listed session's metadata and token log read whole; what was read goes to `out`.
bool SessionManager::ReadsWhole(ColdStore& store, std::map<SessionId, StoredSession>* out) {
  bool complete = true;
  absl::StatusOr<std::vector<SessionId>> ids = store.ListSessions(&complete);
  if (!ids.ok() || !complete) return false;
  for (const SessionId& id : *ids) {
    StoredSession& s = (*out)[id];
    s.meta = store.GetMeta(id);
    if (!s.meta.ok() && !absl::IsNotFound(s.meta.status())) return false;
    absl::StatusOr<std::vector<TokenRecord>> log = store.ReadTokenLog(id);
    if (!log.ok()) return false;
    s.log = *std::move(log);
  }
  return true;
}

absl::Status SessionManager::CopySession(ColdStore& from, ColdStore& to, const SessionId& id,
                                         Quarantined* seen) {
  absl::StatusOr<std::string> meta = from.GetMeta(id);
  if (!meta.ok() && !absl::IsNotFound(meta.status())) return meta.status();
  nlohmann::json j;
  if (meta.ok()) {
    j = nlohmann::json::parse(*meta, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) return absl::DataLossError("its metadata is not a JSON object");
    seen->tenant = j.value("tenant", std::string());
    seen->epoch = j.value("epoch", uint64_t{0});
  }
  RSD_ASSIGN_OR_RETURN(std::vector<TokenRecord> log, from.ReadTokenLogByKeys(id));
  if (meta.ok()) {
    j["spilled"] = "tokens";  // its checkpoints stay behind
    j["spilled_chunks"] = 0;
    RSD_RETURN_IF_ERROR(to.PutMeta(id, j.dump()));
  }
  for (const TokenRecord& r : log) RSD_RETURN_IF_ERROR(to.AppendTokens(id, r.turn, r.tokens));
  return absl::OkStatus();
}

absl::Status SessionManager::SalvageIfDamaged() {
  if (ReadsWhole(*cold_, &read_at_start_)) return absl::OkStatus();
  read_at_start_.clear();  // the salvaged store is read again by Recover
  const std::string dir = options_.data_dir;
  const std::string fresh_dir = dir + ".salvage";
  const std::string aside = absl::StrCat(dir, ".damaged-", absl::ToUnixMillis(absl::Now()));
  std::error_code ec;
  std::filesystem::remove_all(fresh_dir, ec);
  RSD_ASSIGN_OR_RETURN(std::unique_ptr<ColdStore> fresh, ColdStore::Open(fresh_dir, options_.cold));
  RSD_ASSIGN_OR_RETURN(std::vector<SessionId> ids, cold_->ListSessions());
  int copied = 0;
  for (const SessionId& id : ids) {
    Quarantined seen;
    seen.id = id;
    absl::Status st = CopySession(*cold_, *fresh, id, &seen);
    if (st.ok()) {
      ++copied;
      continue;
    }
    fresh->DeleteSession(id).IgnoreError();
    Quarantine(std::move(seen), st);
  }
  fresh.reset();
  cold_.reset();
  std::filesystem::rename(dir, aside, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot set ", dir, " aside: ", ec.message()));
  std::filesystem::rename(fresh_dir, dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot move the salvaged store ", fresh_dir, " to ",
                                            dir, ": ", ec.message()));
  }
  log::Error("cold store damaged: salvaged what could be read",
             {{"dir", dir},
              {"sessions_copied", std::to_string(copied)},
              {"sessions_quarantined", std::to_string(ids.size() - copied)},
              {"damaged_files_kept_in", aside}});
  RSD_ASSIGN_OR_RETURN(cold_, ColdStore::Open(dir, options_.cold));
  return absl::OkStatus();
}

}  // namespace rsd
