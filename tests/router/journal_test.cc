// The router's session journal on a real RocksDB in a temp dir: sessions, turn commits, undo,
// close, reopen, key order, record codecs and data-dir errors.
#include "router/journal.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/test_util.h"

namespace rsd::router {
namespace {

using ::rsd::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

SessionId IdWithLastByte(uint8_t last, uint8_t fill = 0x42) {
  std::array<uint8_t, 16> b;
  b.fill(fill);
  b[15] = last;
  return SessionId(b);
}

SessionRecord Session(const SessionId& id, const std::string& worker = "w1") {
  SessionRecord s;
  s.id = id;
  s.tenant = "acme";
  s.model = "smollm2";
  s.worker = worker;
  s.epoch = 3;
  s.ttl_seconds = 60;
  s.pin = true;
  s.priority = -2;
  s.created_unix_ms = 1700000000123;
  return s;
}

TurnRecord Turn(uint32_t n, const std::string& turn_id = "") {
  TurnRecord t;
  t.turn = n;
  t.turn_id = turn_id;
  t.message = "message " + std::to_string(n);
  t.seed = 0xfedcba9876543210ull + n;
  t.temperature = 0.7f;
  t.top_k = 40;
  t.top_p = 0.9f;
  t.max_tokens = 16;
  t.stop = {"\n\n", std::string("\xff\xfe", 2)};
  t.tokens = {1, 2, 3, static_cast<int32_t>(n)};
  t.text = std::string("text \xe2\x82", 7);  // a truncated UTF-8 sequence stays bytes
  t.finish_reason = "length";
  t.prompt_tokens = 10;
  t.completion_tokens = 4;
  t.history_tokens = 14 * n;
  t.reused_tokens = n == 1 ? 8 : 0;  // a first turn that reused a prefix
  t.worker = "w1";
  t.committed_unix_ms = 1700000001000 + n;
  return t;
}

class JournalTest : public ::testing::Test {
 protected:
  void SetUp() override { root_ = rsd::testing::MakeTempDir("journal_test"); }
  void TearDown() override {
    journal_.reset();
    std::error_code ec;
    std::filesystem::permissions(root_, std::filesystem::perms::owner_all, ec);
    std::filesystem::remove_all(root_, ec);
  }
  std::string Dir() const { return root_ + "/journal"; }
  void Open() {
    journal_.reset();
    absl::StatusOr<std::unique_ptr<Journal>> j = Journal::Open(Dir());
    ASSERT_TRUE(j.ok()) << j.status();
    journal_ = std::move(*j);
  }

  std::string root_;
  std::unique_ptr<Journal> journal_;
};

TEST_F(JournalTest, SessionRoundTripAndUnknownSession) {
  Open();
  const SessionRecord s = Session(IdWithLastByte(1));
  ASSERT_TRUE(journal_->PutSession(s).ok());
  absl::StatusOr<SessionRecord> got = journal_->GetSession(s.id);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, s);
  EXPECT_THAT(journal_->GetSession(IdWithLastByte(2)),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("unknown session " + IdWithLastByte(2).ToHex())));
}

TEST_F(JournalTest, TurnsCommitInOrderAndFindByTurnId) {
  Open();
  const SessionId id = IdWithLastByte(1);
  ASSERT_TRUE(journal_->PutSession(Session(id)).ok());
  for (uint32_t n = 1; n <= 3; ++n) {
    ASSERT_TRUE(journal_->CommitTurn(id, Turn(n, "t" + std::to_string(n))).ok());
  }
  absl::StatusOr<std::vector<TurnRecord>> turns = journal_->ListTurns(id);
  ASSERT_TRUE(turns.ok()) << turns.status();
  ASSERT_EQ(turns->size(), 3u);
  for (uint32_t n = 1; n <= 3; ++n) EXPECT_EQ((*turns)[n - 1], Turn(n, "t" + std::to_string(n)));

  absl::StatusOr<std::optional<TurnRecord>> found = journal_->FindTurn(id, "t2");
  ASSERT_TRUE(found.ok());
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ((*found)->turn, 2u);
  found = journal_->FindTurn(id, "nope");
  ASSERT_TRUE(found.ok());
  EXPECT_FALSE(found->has_value());
  found = journal_->FindTurn(id, "");
  ASSERT_TRUE(found.ok());
  EXPECT_FALSE(found->has_value());

  absl::StatusOr<std::optional<TurnRecord>> last = journal_->LastTurn(id);
  ASSERT_TRUE(last.ok());
  ASSERT_TRUE(last->has_value());
  EXPECT_EQ((*last)->turn, 3u);
  EXPECT_EQ(*journal_->TurnCount(id), 3u);  // the same number, from the key alone
}

TEST_F(JournalTest, CommitTurnErrors) {
  Open();
  const SessionId id = IdWithLastByte(1);
  EXPECT_THAT(journal_->CommitTurn(id, Turn(1)),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(id.ToHex())));
  ASSERT_TRUE(journal_->PutSession(Session(id)).ok());
  EXPECT_THAT(journal_->CommitTurn(id, Turn(0)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("1-based")));
}

TEST_F(JournalTest, TurnsOfNeighbouringSessionsStaySeparate) {
  Open();
  // Ids that differ only in the last byte: adjacent key ranges.
  const SessionId a = IdWithLastByte(1), b = IdWithLastByte(2), c = IdWithLastByte(0);
  for (const SessionId& id : {a, b, c}) ASSERT_TRUE(journal_->PutSession(Session(id)).ok());
  ASSERT_TRUE(journal_->CommitTurn(a, Turn(1)).ok());
  ASSERT_TRUE(journal_->CommitTurn(a, Turn(2)).ok());
  ASSERT_TRUE(journal_->CommitTurn(b, Turn(1)).ok());
  EXPECT_EQ(journal_->ListTurns(a)->size(), 2u);
  EXPECT_EQ(journal_->ListTurns(b)->size(), 1u);
  EXPECT_THAT(*journal_->ListTurns(c), IsEmpty());
  // The last turn of c must not be a's or b's.
  EXPECT_FALSE(journal_->LastTurn(c)->has_value());
  EXPECT_EQ(*journal_->TurnCount(c), 0u);
  EXPECT_EQ(*journal_->TurnCount(a), 2u);
  EXPECT_EQ(*journal_->RemoveLastTurn(c), 0u);
  EXPECT_EQ(journal_->ListTurns(a)->size(), 2u);
}

TEST_F(JournalTest, UndoRemovesOnlyTheLastTurn) {
  Open();
  const SessionId id = IdWithLastByte(7);
  ASSERT_TRUE(journal_->PutSession(Session(id)).ok());
  ASSERT_TRUE(journal_->CommitTurn(id, Turn(1, "a")).ok());
  ASSERT_TRUE(journal_->CommitTurn(id, Turn(2, "b")).ok());
  EXPECT_EQ(*journal_->RemoveLastTurn(id), 2u);
  EXPECT_THAT(*journal_->ListTurns(id), ElementsAre(Turn(1, "a")));
  // The undone turn's id no longer replays.
  EXPECT_FALSE(journal_->FindTurn(id, "b")->has_value());
  // Regenerate: turn 2 again.
  ASSERT_TRUE(journal_->CommitTurn(id, Turn(2, "c")).ok());
  EXPECT_EQ((*journal_->LastTurn(id))->turn_id, "c");
  EXPECT_EQ(*journal_->RemoveLastTurn(id), 2u);
  EXPECT_EQ(*journal_->RemoveLastTurn(id), 1u);
  EXPECT_EQ(*journal_->RemoveLastTurn(id), 0u);
}

TEST_F(JournalTest, CloseDeletesSessionAndTurns) {
  Open();
  const SessionId a = IdWithLastByte(1), b = IdWithLastByte(2);
  ASSERT_TRUE(journal_->PutSession(Session(a)).ok());
  ASSERT_TRUE(journal_->PutSession(Session(b)).ok());
  ASSERT_TRUE(journal_->CommitTurn(a, Turn(1)).ok());
  ASSERT_TRUE(journal_->CommitTurn(b, Turn(1)).ok());
  ASSERT_TRUE(journal_->DeleteSession(a).ok());
  EXPECT_THAT(journal_->GetSession(a), StatusIs(absl::StatusCode::kNotFound, HasSubstr("unknown")));
  EXPECT_THAT(*journal_->ListTurns(a), IsEmpty());
  EXPECT_EQ(journal_->ListTurns(b)->size(), 1u);
  EXPECT_TRUE(journal_->DeleteSession(a).ok());  // deleting twice is fine
  absl::StatusOr<std::vector<SessionRecord>> all = journal_->ListSessions();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].id, b);
}

TEST_F(JournalTest, ReopenFindsEverything) {
  Open();
  const SessionId a = IdWithLastByte(9), b = IdWithLastByte(3);
  ASSERT_TRUE(journal_->PutSession(Session(a, "w1")).ok());
  ASSERT_TRUE(journal_->PutSession(Session(b, "w2")).ok());
  ASSERT_TRUE(journal_->CommitTurn(a, Turn(1, "x")).ok());
  ASSERT_TRUE(journal_->CommitTurn(a, Turn(2, "y")).ok());
  ASSERT_TRUE(journal_->RemoveLastTurn(a).ok());
  Open();
  absl::StatusOr<std::vector<SessionRecord>> all = journal_->ListSessions();
  ASSERT_TRUE(all.ok()) << all.status();
  // In id order.
  EXPECT_THAT(*all, ElementsAre(Session(b, "w2"), Session(a, "w1")));
  EXPECT_THAT(*journal_->ListTurns(a), ElementsAre(Turn(1, "x")));
}

TEST_F(JournalTest, KeysAreBigEndianSoTurnsSortNumerically) {
  const SessionId id = IdWithLastByte(1);
  EXPECT_EQ(Journal::SessionKey(id), std::string(id.AsStringView()));
  const std::string k = Journal::TurnKey(id, 0x01020304);
  ASSERT_EQ(k.size(), 20u);
  EXPECT_EQ(k.substr(16), std::string("\x01\x02\x03\x04", 4));
  EXPECT_LT(Journal::TurnKey(id, 255), Journal::TurnKey(id, 256));
  EXPECT_LT(Journal::TurnKey(id, 0xffffffff), Journal::SessionKey(IdWithLastByte(2)));

  // 300 turns come back in numeric order (a little-endian key would interleave them).
  Open();
  ASSERT_TRUE(journal_->PutSession(Session(id)).ok());
  for (uint32_t n : {256u, 1u, 255u, 2u, 300u}) ASSERT_TRUE(journal_->CommitTurn(id, Turn(n)).ok());
  absl::StatusOr<std::vector<TurnRecord>> turns = journal_->ListTurns(id);
  ASSERT_TRUE(turns.ok()) << turns.status();
  std::vector<uint32_t> order;
  for (const TurnRecord& t : *turns) order.push_back(t.turn);
  EXPECT_THAT(order, ElementsAre(1u, 2u, 255u, 256u, 300u));
  EXPECT_EQ((*journal_->LastTurn(id))->turn, 300u);
}

TEST_F(JournalTest, CodecsRejectGarbage) {
  EXPECT_THAT(DecodeSessionRecord("not cbor", "record X"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("record X")));
  EXPECT_THAT(DecodeTurnRecord("", "turn Y"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("turn Y")));
  TurnRecord t = Turn(1);
  t.top_p.reset();
  t.max_tokens.reset();
  absl::StatusOr<TurnRecord> back = DecodeTurnRecord(EncodeTurnRecord(t), "t");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, t);
}

TEST_F(JournalTest, ModelFingerprintAndLogTokensRoundTrip) {
  Open();
  SessionRecord s = Session(IdWithLastByte(1));
  s.model_fingerprint = "fp-123";
  ASSERT_TRUE(journal_->PutSession(s).ok());
  TurnRecord t = Turn(1, "a");
  t.log_tokens = {5, 6, 7, -1};
  ASSERT_TRUE(journal_->CommitTurn(s.id, t).ok());
  Open();  // from disk
  EXPECT_EQ(*journal_->GetSession(s.id), s);
  EXPECT_EQ((*journal_->LastTurn(s.id))->log_tokens, t.log_tokens);
  // Records written before these fields decode with them empty.
  SessionRecord old = s;
  old.model_fingerprint.clear();
  EXPECT_EQ(*DecodeSessionRecord(EncodeSessionRecord(old), "x"), old);
}

TEST_F(JournalTest, PendingTurnIsClearedByTheCommitOfItsTurnIdOnly) {
  Open();
  const SessionId id = IdWithLastByte(1);
  PendingRecord p;
  p.turn_id = "t2";
  p.message = std::string("hi ÿ", 4);
  p.seed = 0x1234567890abcdefull;
  p.temperature = 0.8f;
  p.top_k = 20;
  p.top_p = 0.5f;
  p.max_tokens = 9;
  p.stop = {"x"};
  p.started_unix_ms = 1700000000999;
  EXPECT_THAT(journal_->PutPending(id, p), StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  ASSERT_TRUE(journal_->PutSession(Session(id)).ok());
  EXPECT_FALSE(journal_->GetPending(id)->has_value());
  ASSERT_TRUE(journal_->PutPending(id, p).ok());
  Open();
  ASSERT_TRUE(journal_->GetPending(id)->has_value());
  EXPECT_EQ(**journal_->GetPending(id), p);
  ASSERT_TRUE(journal_->CommitTurn(id, Turn(1, "t1")).ok());
  EXPECT_TRUE(journal_->GetPending(id)->has_value());  // another turn id
  ASSERT_TRUE(journal_->CommitTurn(id, Turn(2, "t2")).ok());
  EXPECT_FALSE(journal_->GetPending(id)->has_value());
  ASSERT_TRUE(journal_->PutPending(id, p).ok());
  ASSERT_TRUE(journal_->DeleteSession(id).ok());
  EXPECT_FALSE(journal_->GetPending(id)->has_value());
  EXPECT_THAT(DecodePendingTurn("garbage", "pending of x"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("pending of x")));
}

TEST_F(JournalTest, SetOwnerIsACompareAndSetOnTheEpoch) {
  Open();
  const SessionRecord s = Session(IdWithLastByte(1));  // epoch 3 on w1
  ASSERT_TRUE(journal_->PutSession(s).ok());
  absl::StatusOr<SessionRecord> moved = journal_->SetOwner(s.id, "w2", 4, 3);
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(moved->worker, "w2");
  EXPECT_EQ(moved->epoch, 4u);
  EXPECT_EQ(moved->tenant, "acme");
  Open();
  EXPECT_EQ(journal_->GetSession(s.id)->worker, "w2");
  EXPECT_THAT(journal_->SetOwner(s.id, "w3", 4, 3),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("at epoch 4 on worker 'w2', not at epoch 3")));
  EXPECT_THAT(journal_->SetOwner(s.id, "w3", 4, 4), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(journal_->SetOwner(IdWithLastByte(9), "w3", 2, 1),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  EXPECT_EQ(journal_->GetSession(s.id)->worker, "w2");
}

TEST_F(JournalTest, MissingParentsAreCreated) {
  const std::string dir = root_ + "/no/such/parent";
  auto j = Journal::Open(dir);
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_TRUE(std::filesystem::is_directory(dir));
}

TEST_F(JournalTest, UnusableParentIsFailedPreconditionNamingThePath) {
  EXPECT_THAT(Journal::Open("/dev/null/journal"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("/dev/null")));
}

TEST_F(JournalTest, FileInsteadOfDirIsFailedPrecondition) {
  const std::string file = root_ + "/file";
  FILE* f = std::fopen(file.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fclose(f);
  EXPECT_THAT(Journal::Open(file),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not a directory")));
}

TEST_F(JournalTest, UnwritableDirIsPermissionDenied) {
  if (geteuid() == 0) GTEST_SKIP() << "root ignores directory permissions";
  const std::string dir = root_ + "/ro";
  ASSERT_EQ(mkdir(dir.c_str(), 0500), 0);
  EXPECT_THAT(Journal::Open(dir),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr(dir)));
  EXPECT_THAT(Journal::Open(dir + "/sub"),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr(dir)));
}

TEST_F(JournalTest, SecondOpenOfTheSameDirIsFailedPrecondition) {
  Open();
  EXPECT_THAT(Journal::Open(Dir()),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("already open")));
}

}  // namespace
}  // namespace rsd::router
