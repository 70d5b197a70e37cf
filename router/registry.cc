#include "router/registry.h"

#include <algorithm>
#include <optional>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace rsd::router {

const char* WorkerStateName(WorkerState s) {
  switch (s) {
    case WorkerState::kReady:
      return "ready";
    case WorkerState::kCordoned:
      return "cordoned";
    case WorkerState::kDraining:
      return "draining";
    case WorkerState::kDead:
      return "dead";
    case WorkerState::kUnhealthy:
      return "unhealthy";
  }
  return "?";
}

namespace {

// Free hot+warm bytes of the last heartbeat less the worker's mean bytes per session for each
// session placed since (registry.h).
int64_t EstimatedFree(const WorkerSnapshot& w) {
  const WorkerLoadInfo& l = w.desc.load;
  const int64_t total = l.hot_bytes_total + l.warm_bytes_total;
  const int64_t free_bytes = l.hot_bytes_free + l.warm_bytes_free;
  const int64_t per_session =
      l.sessions > 0 ? std::max<int64_t>(0, total - free_bytes) / l.sessions : total / 64;
  return free_bytes - w.placed_since_heartbeat * std::max<int64_t>(1, per_session);
}

// Placement's order (registry.h): estimated free bytes, busy turns, placed sessions, id.
auto PlacementKey(const WorkerSnapshot& w) {
  const WorkerLoadInfo& l = w.desc.load;
  const int64_t busy = int64_t{l.queue_depth} + l.running;
  return std::make_tuple(-EstimatedFree(w), busy, w.sessions_placed, w.desc.id);
}

}  // namespace

Registry::Registry(Clock* clock, absl::Duration heartbeat_timeout)
    : clock_(clock), heartbeat_timeout_(heartbeat_timeout), started_(clock->Now()) {}

std::vector<std::string> Registry::Missing() {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> out;
  if (clock_->Now() - started_ <= heartbeat_timeout_) return out;
  for (const auto& [id, n] : placed_) {
    if (n > 0 && workers_.count(id) == 0) out.push_back(id);
  }
  return out;
}

absl::Status Registry::Register(const WorkerDescriptor& desc) {
  if (desc.id.empty()) return absl::InvalidArgumentError("worker registration without an id");
  if (desc.address.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker '", desc.id, "' registered without an address"));
  }
  absl::MutexLock lock(&mu_);
  Entry& e = workers_[desc.id];
  e.desc = desc;
  TakeKeys(e);
  e.last_heartbeat = clock_->Now();
  e.placed_since_heartbeat = 0;
  if (!desc.model.empty() &&
      std::find(models_seen_.begin(), models_seen_.end(), desc.model) == models_seen_.end()) {
    models_seen_.push_back(desc.model);
  }
  return absl::OkStatus();
}

bool Registry::Heartbeat(const WorkerDescriptor& desc) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(desc.id);
  if (it == workers_.end()) return false;
  // A heartbeat carries the full status; an address or model change is a re-registration.
  if (desc.address != it->second.desc.address || desc.model != it->second.desc.model) return false;
  // A worker declared dead may have lost sessions to failover meanwhile: it registers again and
  // is told which to drop.
  if (clock_->Now() - it->second.last_heartbeat > heartbeat_timeout_) return false;
  it->second.desc = desc;
  TakeKeys(it->second);
  it->second.last_heartbeat = clock_->Now();
  it->second.placed_since_heartbeat = 0;
  return true;
}

void Registry::TakeKeys(Entry& e) {
  e.prefix_keys.clear();
  for (std::string& k : e.desc.prefix_keys) e.prefix_keys.insert(std::move(k));
  e.desc.prefix_keys.clear();
}

int64_t Registry::MatchedLocked(const Entry& e, const PrefixHint& hint) {
  const absl::Time now = clock_->Now();
  for (auto it = hint.keys.rbegin(); it != hint.keys.rend(); ++it) {
    if (e.prefix_keys.contains(it->first)) return it->second;
    auto recent = recent_.find(it->first);
    if (recent != recent_.end() && recent->second.worker == e.desc.id &&
        now - recent->second.at <= absl::Seconds(kRecentPrefixSeconds)) {
      return it->second;
    }
  }
  return 0;
}

void Registry::RememberLocked(const std::string& worker, const PrefixHint& hint) {
  const absl::Time now = clock_->Now();
  if (recent_.size() > 4096) {
    for (auto it = recent_.begin(); it != recent_.end();) {
      if (now - it->second.at > absl::Seconds(kRecentPrefixSeconds)) {
        recent_.erase(it++);
      } else {
        ++it;
      }
    }
  }
  for (const auto& [key, tokens] : hint.keys) recent_[key] = RecentPrefix{worker, now};
}

WorkerSnapshot Registry::SnapshotLocked(const Entry& e) const {
  WorkerSnapshot s;
  s.desc = e.desc;
  const absl::Duration since = clock_->Now() - e.last_heartbeat;
  s.seconds_since_heartbeat = absl::ToDoubleSeconds(since);
  if (since > heartbeat_timeout_) {
    s.state = WorkerState::kDead;
  } else if (e.draining) {
    s.state = WorkerState::kDraining;
  } else if (e.cordoned) {
    s.state = WorkerState::kCordoned;
  } else if (!e.desc.serving) {
    s.state = WorkerState::kUnhealthy;
  } else {
    s.state = WorkerState::kReady;
  }
  auto placed = placed_.find(e.desc.id);
  s.sessions_placed = placed == placed_.end() ? 0 : placed->second;
  s.placed_since_heartbeat = e.placed_since_heartbeat;
  return s;
}

std::string Registry::DefaultModelLocked() const {
  // The first registered model with a ready worker; else the first registered model (for the
  // error message).
  for (const std::string& m : models_seen_) {
    for (const auto& [id, e] : workers_) {
      if (e.desc.model == m && SnapshotLocked(e).state == WorkerState::kReady) return m;
    }
  }
  return models_seen_.empty() ? std::string() : models_seen_.front();
}

std::string Registry::KnownWorkersLocked() const {
  if (workers_.empty()) return "none registered";
  std::vector<std::string> ids;
  for (const auto& [id, e] : workers_) ids.push_back(id);
  return absl::StrJoin(ids, ", ");
}

absl::StatusOr<WorkerSnapshot> Registry::Get(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(id);
  if (it == workers_.end()) {
    return absl::NotFoundError(
        absl::StrCat("unknown worker '", id, "'; known: ", KnownWorkersLocked()));
  }
  return SnapshotLocked(it->second);
}

std::vector<WorkerSnapshot> Registry::List() {
  absl::MutexLock lock(&mu_);
  std::vector<WorkerSnapshot> out;
  for (const auto& [id, e] : workers_) out.push_back(SnapshotLocked(e));
  return out;
}

absl::StatusOr<WorkerSnapshot> Registry::Place(const std::string& model_in,
                                               const std::vector<std::string>& exclude,
                                               const PrefixHint* hint, int64_t* prefix_tokens) {
  absl::MutexLock lock(&mu_);
  if (workers_.empty()) {
    return absl::UnavailableError(absl::StrCat(
        "no ready worker serves ",
        model_in.empty() ? std::string("any model") : absl::StrCat("model '", model_in, "'"),
        " (no worker has registered)"));
  }
  std::vector<WorkerSnapshot> all;
  for (const auto& [id, e] : workers_) all.push_back(SnapshotLocked(e));

  const std::string model = model_in.empty() ? DefaultModelLocked() : model_in;
  if (!model_in.empty() &&
      std::find(models_seen_.begin(), models_seen_.end(), model) == models_seen_.end()) {
    return absl::NotFoundError(absl::StrCat("unknown model '", model, "'; known: ",
                                            models_seen_.empty() ? std::string("none")
                                                                 : absl::StrJoin(models_seen_, ", ")));
  }

  const WorkerSnapshot* best = nullptr;
  double best_cost = 0;
  int64_t best_matched = 0;
  int cordoned = 0, dead = 0, unhealthy = 0;
  for (const WorkerSnapshot& w : all) {
    if (w.desc.model != model) continue;
    if (w.state == WorkerState::kCordoned || w.state == WorkerState::kDraining) ++cordoned;
    if (w.state == WorkerState::kDead) ++dead;
    if (w.state == WorkerState::kUnhealthy) ++unhealthy;
    if (w.state != WorkerState::kReady) continue;
    if (std::find(exclude.begin(), exclude.end(), w.desc.id) != exclude.end()) continue;
    // Cache-aware: a matched prefix lowers the cost (registry.h); without a hint all costs tie.
    const int64_t matched =
        hint != nullptr && EstimatedFree(w) > 0 ? MatchedLocked(workers_.at(w.desc.id), *hint) : 0;
    const double cost = w.desc.load.queue_depth + 0.5 * w.desc.load.running -
                        static_cast<double>(matched) / kReuseTokensPerTurn;
    const bool cheaper =
        best == nullptr || (hint != nullptr && cost < best_cost) ||
        ((hint == nullptr || cost == best_cost) && PlacementKey(w) < PlacementKey(*best));
    if (cheaper) {
      best = &w;
      best_cost = cost;
      best_matched = matched;
    }
  }
  if (best == nullptr) {
    return absl::UnavailableError(absl::StrCat("no ready worker serves model '", model, "' (", dead,
                                               " dead, ", cordoned, " cordoned, ", unhealthy,
                                               " not serving)"));
  }
  WorkerSnapshot chosen = *best;
  if (hint != nullptr) RememberLocked(chosen.desc.id, *hint);
  if (prefix_tokens != nullptr) *prefix_tokens = best_matched;
  ++placed_[chosen.desc.id];
  ++workers_[chosen.desc.id].placed_since_heartbeat;
  ++chosen.sessions_placed;
  ++chosen.placed_since_heartbeat;
  return chosen;
}

void Registry::AddPlaced(const std::string& id, int64_t delta) {
  absl::MutexLock lock(&mu_);
  int64_t& n = placed_[id];
  n = std::max<int64_t>(0, n + delta);
}

absl::StatusOr<WorkerSnapshot> Registry::SetCordoned(const std::string& id, bool cordoned) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(id);
  if (it == workers_.end()) {
    return absl::NotFoundError(
        absl::StrCat("unknown worker '", id, "'; known: ", KnownWorkersLocked()));
  }
  it->second.cordoned = cordoned;
  if (!cordoned) it->second.draining = false;
  return SnapshotLocked(it->second);
}

absl::StatusOr<WorkerSnapshot> Registry::SetDraining(const std::string& id, bool draining) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(id);
  if (it == workers_.end()) {
    return absl::NotFoundError(
        absl::StrCat("unknown worker '", id, "'; known: ", KnownWorkersLocked()));
  }
  it->second.draining = draining;
  return SnapshotLocked(it->second);
}

absl::StatusOr<WorkerSnapshot> Registry::PickTarget(const std::string& model_in,
                                                    const std::string& model_fingerprint,
                                                    const std::string& exclude) {
  absl::MutexLock lock(&mu_);
  const std::string model = model_in.empty() ? DefaultModelLocked() : model_in;
  std::optional<WorkerSnapshot> best;
  int candidates = 0, other_fingerprint = 0;
  for (const auto& [id, e] : workers_) {
    if (id == exclude || e.desc.model != model) continue;
    ++candidates;
    WorkerSnapshot w = SnapshotLocked(e);
    if (w.state != WorkerState::kReady) continue;
    if (!model_fingerprint.empty() && w.desc.model_fingerprint != model_fingerprint) {
      ++other_fingerprint;
      continue;
    }
    if (!best.has_value() || PlacementKey(w) < PlacementKey(*best)) best = std::move(w);
  }
  if (!best.has_value()) {
    return absl::UnavailableError(absl::StrCat(
        "no other ready worker serves model '", model, "'",
        exclude.empty() ? std::string() : absl::StrCat(" besides '", exclude, "'"), " (",
        candidates, " other workers of the model, ", other_fingerprint,
        " ready ones with another model fingerprint than '", model_fingerprint, "')"));
  }
  return *best;
}

std::vector<ModelSummary> Registry::Models() {
  absl::MutexLock lock(&mu_);
  std::map<std::string, ModelSummary> by_name;
  for (const auto& [id, e] : workers_) {
    WorkerSnapshot w = SnapshotLocked(e);
    if (w.state == WorkerState::kDead || w.desc.model.empty()) continue;
    ModelSummary& m = by_name[w.desc.model];
    if (m.name.empty()) {
      m.name = w.desc.model;
      m.fingerprint = w.desc.model_fingerprint;
      m.context_length = w.desc.context_length;
    }
    m.workers.push_back(id);
  }
  std::vector<ModelSummary> out;
  for (auto& [name, m] : by_name) out.push_back(std::move(m));
  return out;
}

}  // namespace rsd::router
