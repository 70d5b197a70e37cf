// The router's journal when the power fails at every point of its writes in turn
// (DropUnsyncedFs::FailFrom: before the 1st, 2nd, ... mutation of the disk): after the restart the
// journal holds exactly what it held after the last acknowledged write, or that write as well
// (durable but not acknowledged), never anything in between: each write is atomic and every
// acknowledged one survives. The writes are those a router makes: sessions, pending turns, turn
// commits, a change of owner, an undo, a close, API keys created and revoked.
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "router/api_keys.h"
#include "router/journal.h"
#include "storage/testing/drop_unsynced_fs.h"
#include "tests/support/test_util.h"

namespace rsd::router {
namespace {

// Everything the journal holds, comparable across runs (API keys by what is not random in them).
struct Snapshot {
  std::vector<SessionRecord> sessions;
  std::vector<std::vector<TurnRecord>> turns;
  std::vector<std::optional<PendingRecord>> pending;
  std::vector<std::tuple<std::string, int, bool>> keys;  // tenant, role, revoked
  friend bool operator==(const Snapshot&, const Snapshot&) = default;
};

std::string Describe(const Snapshot& s) {
  std::string out;
  for (size_t i = 0; i < s.sessions.size(); ++i) {
    out += s.sessions[i].id.ToHex().substr(0, 4) + "@" + s.sessions[i].worker + " turns " +
           std::to_string(s.turns[i].size()) + (s.pending[i] ? " pending; " : "; ");
  }
  return out + std::to_string(s.keys.size()) + " keys";
}

Snapshot Take(Journal& j) {
  Snapshot s;
  absl::StatusOr<std::vector<SessionRecord>> sessions = j.ListSessions();
  EXPECT_TRUE(sessions.ok()) << sessions.status();
  if (!sessions.ok()) return s;
  s.sessions = *sessions;
  for (const SessionRecord& r : s.sessions) {
    s.turns.push_back(j.ListTurns(r.id).value_or(std::vector<TurnRecord>{}));
    s.pending.push_back(j.GetPending(r.id).value_or(std::nullopt));
  }
  KeyStore keys(j.rocks());
  for (const KeyRecord& k : keys.List().value_or(std::vector<KeyRecord>{})) {
    s.keys.emplace_back(k.tenant, static_cast<int>(k.role), k.revoked_unix_ms != 0);
  }
  return s;
}

SessionRecord Session(uint8_t n) {
  SessionRecord s;
  std::array<uint8_t, 16> b;
  b.fill(n);
  s.id = SessionId(b);
  s.tenant = "acme";
  s.model = "smollm2";
  s.worker = "w1";
  s.epoch = 1;
  s.created_unix_ms = 1700000000000 + n;
  return s;
}

TurnRecord Turn(uint32_t n, const std::string& turn_id) {
  TurnRecord t;
  t.turn = n;
  t.turn_id = turn_id;
  t.message = std::string(200 * n, 'm');  // turns of different sizes
  t.seed = 77 + n;
  t.tokens = {1, 2, static_cast<int32_t>(n)};
  t.text = "reply " + std::to_string(n);
  t.finish_reason = "stop";
  t.log_tokens = std::vector<int32_t>(50 * n, 9);
  t.worker = "w1";
  return t;
}

PendingRecord Pending(const std::string& turn_id) {
  PendingRecord p;
  p.turn_id = turn_id;
  p.message = "message of " + turn_id;
  p.seed = 5;
  return p;
}

// The writes, in order; each returns its status.
std::vector<std::function<absl::Status(Journal&)>> Script() {
  const SessionRecord a = Session(1), b = Session(2);
  std::vector<std::function<absl::Status(Journal&)>> steps;
  steps.push_back([=](Journal& j) { return j.PutSession(a); });
  steps.push_back([=](Journal& j) { return j.PutPending(a.id, Pending("a1")); });
  steps.push_back([=](Journal& j) { return j.CommitTurn(a.id, Turn(1, "a1")); });
  steps.push_back([](Journal& j) {
    KeyStore keys(j.rocks());
    KeyRecord r;
    return keys.Create("acme", Role::kTenant, &r).status();
  });
  steps.push_back([=](Journal& j) { return j.PutSession(b); });
  steps.push_back([=](Journal& j) { return j.PutPending(a.id, Pending("a2")); });
  steps.push_back([=](Journal& j) { return j.CommitTurn(a.id, Turn(2, "a2")); });
  steps.push_back([=](Journal& j) { return j.CommitTurn(b.id, Turn(1, "b1")); });
  steps.push_back([=](Journal& j) { return j.SetOwner(a.id, "w2", 2, 1).status(); });
  steps.push_back([=](Journal& j) { return j.CommitTurn(b.id, Turn(2, "b2")); });
  steps.push_back([=](Journal& j) { return j.RemoveLastTurn(b.id).status(); });
  steps.push_back([](Journal& j) {
    KeyStore keys(j.rocks());
    absl::StatusOr<std::vector<KeyRecord>> all = keys.List();
    if (!all.ok()) return all.status();
    return keys.Revoke(all->at(0).id).status();
  });
  steps.push_back([=](Journal& j) { return j.PutPending(a.id, Pending("a3")); });
  steps.push_back([=](Journal& j) { return j.DeleteSession(b.id); });
  steps.push_back([=](Journal& j) { return j.CommitTurn(a.id, Turn(3, "a3")); });
  return steps;
}

TEST(JournalCrash, EveryWriteIsAtomicAndEveryAcknowledgedOneSurvives) {
  const auto steps = Script();
  // The undisturbed run: the journal after each number of steps.
  std::vector<Snapshot> after;
  int64_t total = 0;
  {
    auto fs = std::make_shared<DropUnsyncedFs>();
    absl::StatusOr<std::unique_ptr<Journal>> j =
        Journal::Open(testing::MakeTempDir("journal-crash") + "/j", fs);
    ASSERT_TRUE(j.ok()) << j.status();
    after.push_back(Take(**j));
    for (const auto& step : steps) {
      ASSERT_TRUE(step(**j).ok());
      after.push_back(Take(**j));
    }
    total = fs->mutations();
  }
  ASSERT_GT(total, static_cast<int64_t>(steps.size()));
  std::map<std::string, int> outcomes;
  for (int64_t point = 1; point <= total + 1; ++point) {
    auto fs = std::make_shared<DropUnsyncedFs>();
    const std::string dir = testing::MakeTempDir("journal-crash") + "/j";
    fs->FailFrom(point);
    size_t acked = 0;  // steps acknowledged before the power failed
    {
      absl::StatusOr<std::unique_ptr<Journal>> j = Journal::Open(dir, fs);
      if (j.ok()) {
        while (acked < steps.size() && steps[acked](**j).ok()) ++acked;
      }
    }  // the process dies
    ASSERT_TRUE(fs->DropUnsyncedData().ok());
    fs->Reactivate();
    absl::StatusOr<std::unique_ptr<Journal>> j = Journal::Open(dir, fs);
    ASSERT_TRUE(j.ok()) << "crash point " << point << ": " << j.status();
    const Snapshot now = Take(**j);
    const bool before = now == after[acked];
    const bool also_next = acked < steps.size() && now == after[acked + 1];
    EXPECT_TRUE(before || also_next)
        << "crash point " << point << " of " << total << " in step " << acked
        << ": the journal holds " << Describe(now) << "; acknowledged: " << Describe(after[acked]);
    ++outcomes[before ? "as acknowledged" : "one more write durable, not acknowledged"];
    if (::testing::Test::HasFailure()) break;
  }
  std::printf("%lld mutations in %zu journal writes; power failed before each in turn:\n",
              static_cast<long long>(total), steps.size());
  for (const auto& [what, n] : outcomes) std::printf("  %s: %d\n", what.c_str(), n);
}

}  // namespace
}  // namespace rsd::router
