// The cold tier on a real RocksDB in a temp dir: blocks, key order, token log, metadata,
// sessions, reopen, corruption and data-dir errors.
#include "storage/cold_store.h"

#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/cold_store_internal.h"
#include "storage/state_codec.h"
#include "storage/testing/sst_damage.h"
#include "tests/support/test_util.h"

namespace rsd {
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

std::string EncodedBlock(uint32_t layer, uint32_t first_position, uint32_t seed) {
  CheckpointHeader h;
  h.form = StateForm::kResidual;
  h.layer = layer;
  h.first_position = first_position;
  h.n_tokens = 16;
  h.row_elements = 64;
  h.model_fingerprint = "model";
  h.numerics_fingerprint = "numerics";
  std::vector<uint8_t> payload(h.PayloadBytes());
  std::mt19937 rng(seed);
  for (uint8_t& b : payload) b = static_cast<uint8_t>(rng());
  return *EncodeBlock(h, payload, Compression::kNone);
}

class ColdStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { root_ = rsd::testing::MakeTempDir("cold_store_test"); }
  void TearDown() override {
    store_.reset();
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }
  std::string Dir() const { return root_ + "/db"; }
  void OpenStore() {
    store_.reset();
    absl::StatusOr<std::unique_ptr<ColdStore>> s = ColdStore::Open(Dir());
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }

  std::string root_;
  std::unique_ptr<ColdStore> store_;
};

TEST_F(ColdStoreTest, PutGetDeleteBlock) {
  OpenStore();
  SessionId s = SessionId::Random();
  BlockKey key{s, 3, 9};
  std::string value = EncodedBlock(3, 144, 1);
  ASSERT_TRUE(store_->PutBlock(key, value).ok());
  absl::StatusOr<std::string> got = store_->GetBlock(key);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, value);
  absl::StatusOr<DecodedBlock> dec = DecodeBlock(*got);
  ASSERT_TRUE(dec.ok()) << dec.status();
  EXPECT_EQ(dec->header.first_position, 144u);

  EXPECT_THAT(store_->GetBlock(BlockKey{s, 3, 10}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(s.ToHex() + "/L3/B10")));
  ASSERT_TRUE(store_->DeleteBlock(key).ok());
  EXPECT_THAT(store_->GetBlock(key), StatusIs(absl::StatusCode::kNotFound, HasSubstr("block")));
  EXPECT_TRUE(store_->DeleteBlock(key).ok());  // absent: still OK
}

TEST_F(ColdStoreTest, SessionBlocksAreOneSortedRange) {
  OpenStore();
  // Neighbouring ids, and the all-ones id at the top of the key space.
  std::vector<SessionId> sessions = {IdWithLastByte(0x10), IdWithLastByte(0x11),
                                     IdWithLastByte(0x12), IdWithLastByte(0xff, 0xff)};
  std::vector<BlockKey> keys;
  for (const SessionId& s : sessions) {
    for (uint32_t layer : {0u, 1u, 2u, 255u, 256u, BlockKey::kNoLayer}) {
      for (uint32_t block : {0u, 1u, 2u, 255u, 256u, 70000u}) keys.push_back({s, layer, block});
    }
  }
  std::vector<BlockKey> shuffled = keys;
  std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(4));
  for (const BlockKey& k : shuffled) {
    ASSERT_TRUE(store_->PutBlock(k, std::string(k.block % 97 + 1, 'v')).ok());
  }
  ASSERT_TRUE(store_->Flush().ok());
  for (const SessionId& s : sessions) {
    std::vector<BlockKey> seen;
    size_t bytes = 0;
    ASSERT_TRUE(store_
                    ->ForEachBlock(s,
                                   [&](const BlockKey& k, std::string_view v) {
                                     seen.push_back(k);
                                     bytes += v.size();
                                     EXPECT_EQ(v.size(), k.block % 97 + 1);
                                     return absl::OkStatus();
                                   })
                    .ok());
    std::vector<BlockKey> want;
    for (const BlockKey& k : keys) {
      if (k.session == s) want.push_back(k);
    }
    std::sort(want.begin(), want.end());  // layer, then block
    EXPECT_EQ(seen, want);
    EXPECT_GT(bytes, 0u);
  }
  // The callback's error stops the walk and comes back.
  int calls = 0;
  EXPECT_THAT(store_->ForEachBlock(sessions[0],
                                   [&](const BlockKey&, std::string_view) {
                                     return ++calls == 3 ? absl::AbortedError("stop")
                                                         : absl::OkStatus();
                                   }),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("stop")));
  EXPECT_EQ(calls, 3);
}

TEST_F(ColdStoreTest, TokenLogAppendReadTruncate) {
  OpenStore();
  SessionId s = SessionId::Random(), other = SessionId::Random();
  std::vector<std::vector<int32_t>> turns = {{1, 2, 3}, {}, {-1, 0, 2147483647}, {42}};
  EXPECT_THAT(*store_->ReadTokenLog(s), IsEmpty());
  EXPECT_EQ(*store_->TokenLogTurns(s), 0u);
  for (uint32_t t = 0; t < turns.size(); ++t) {
    ASSERT_TRUE(store_->AppendTokens(s, t, turns[t]).ok());
  }
  ASSERT_TRUE(store_->AppendTokens(other, 0, std::vector<int32_t>{7}).ok());
  EXPECT_EQ(*store_->TokenLogTurns(s), 4u);
  absl::StatusOr<std::vector<TokenRecord>> log = store_->ReadTokenLog(s);
  ASSERT_TRUE(log.ok()) << log.status();
  ASSERT_EQ(log->size(), 4u);
  for (uint32_t t = 0; t < turns.size(); ++t) EXPECT_EQ((*log)[t], (TokenRecord{t, turns[t]}));

  // A retried turn with the same tokens is fine; different tokens or a gap are refused.
  EXPECT_TRUE(store_->AppendTokens(s, 2, turns[2]).ok());
  EXPECT_THAT(store_->AppendTokens(s, 2, std::vector<int32_t>{9}),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("turn 2")));
  EXPECT_THAT(store_->AppendTokens(s, 6, std::vector<int32_t>{9}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("has 4 turns")));

  ASSERT_TRUE(store_->TruncateTokenLog(s, 2).ok());
  log = store_->ReadTokenLog(s);
  ASSERT_TRUE(log.ok());
  EXPECT_THAT(*log, ElementsAre(TokenRecord{0, turns[0]}, TokenRecord{1, turns[1]}));
  ASSERT_TRUE(store_->AppendTokens(s, 2, std::vector<int32_t>{5, 5}).ok());
  EXPECT_EQ(store_->ReadTokenLog(s)->back(), (TokenRecord{2, {5, 5}}));
  ASSERT_TRUE(store_->TruncateTokenLog(s, 10).ok());
  EXPECT_EQ(*store_->TokenLogTurns(s), 3u);
  ASSERT_TRUE(store_->TruncateTokenLog(s, 0).ok());
  EXPECT_THAT(*store_->ReadTokenLog(s), IsEmpty());
  EXPECT_EQ(store_->ReadTokenLog(other)->size(), 1u);
}

TEST_F(ColdStoreTest, ReopenFindsEverything) {
  SessionId s = SessionId::Random();
  const std::string block = EncodedBlock(1, 0, 5);
  for (bool flush : {false, true}) {
    SCOPED_TRACE(flush ? "from table files" : "from the WAL");
    OpenStore();
    ASSERT_TRUE(store_->DeleteSession(s).ok());
    ASSERT_TRUE(store_->PutMeta(s, R"({"tenant":"default"})").ok());
    ASSERT_TRUE(store_->AppendTokens(s, 0, std::vector<int32_t>{1, 2}).ok());
    ASSERT_TRUE(store_->AppendTokens(s, 1, std::vector<int32_t>{3}).ok());
    ASSERT_TRUE(store_->PutBlock({s, 1, 0}, block).ok());
    if (flush) {
      ASSERT_TRUE(store_->Flush().ok());
    }
    OpenStore();  // closes the old one first
    EXPECT_EQ(*store_->GetMeta(s), R"({"tenant":"default"})");
    EXPECT_THAT(*store_->ReadTokenLog(s), ElementsAre(TokenRecord{0, {1, 2}}, TokenRecord{1, {3}}));
    EXPECT_EQ(*store_->GetBlock({s, 1, 0}), block);
    EXPECT_THAT(*store_->ListSessions(), ElementsAre(s));
  }
}

TEST_F(ColdStoreTest, ListAndDeleteSessions) {
  OpenStore();
  SessionId meta_only = IdWithLastByte(1), tokens_only = IdWithLastByte(2),
            blocks_only = IdWithLastByte(3), all = IdWithLastByte(4);
  ASSERT_TRUE(store_->PutMeta(meta_only, "m").ok());
  ASSERT_TRUE(store_->AppendTokens(tokens_only, 0, std::vector<int32_t>{1}).ok());
  ASSERT_TRUE(store_->PutBlock({blocks_only, 0, 0}, "b").ok());
  ASSERT_TRUE(store_->PutMeta(all, "m").ok());
  ASSERT_TRUE(store_->AppendTokens(all, 0, std::vector<int32_t>{1}).ok());
  for (uint32_t b = 0; b < 10; ++b) ASSERT_TRUE(store_->PutBlock({all, 2, b}, "b").ok());
  EXPECT_THAT(*store_->ListSessions(), ElementsAre(meta_only, tokens_only, blocks_only, all));

  ASSERT_TRUE(store_->DeleteSession(all).ok());
  ASSERT_TRUE(store_->DeleteSession(tokens_only).ok());
  EXPECT_THAT(*store_->ListSessions(), ElementsAre(meta_only, blocks_only));
  EXPECT_THAT(store_->GetMeta(all), StatusIs(absl::StatusCode::kNotFound, HasSubstr(all.ToHex())));
  EXPECT_THAT(*store_->ReadTokenLog(all), IsEmpty());
  EXPECT_THAT(store_->GetBlock({all, 2, 3}), StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  EXPECT_EQ(*store_->GetMeta(meta_only), "m");
  EXPECT_EQ(*store_->GetBlock({blocks_only, 0, 0}), "b");
  // A deleted session can start again.
  ASSERT_TRUE(store_->AppendTokens(all, 0, std::vector<int32_t>{8}).ok());
  EXPECT_THAT(*store_->ReadTokenLog(all), ElementsAre(TokenRecord{0, {8}}));
}

TEST_F(ColdStoreTest, CorruptedBlockIsDataLossWhenDecoded) {
  OpenStore();
  SessionId s = SessionId::Random();
  BlockKey key{s, 0, 4};
  std::string block = EncodedBlock(0, 64, 2);
  block[block.size() / 2] ^= 0x10;
  ASSERT_TRUE(store_->RawPutForTest(ColdStore::Table::kBlocks, key.Encode(), block).ok());
  absl::StatusOr<std::string> got = store_->GetBlock(key);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(DecodeBlock(*got), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("checksum")));
}

TEST_F(ColdStoreTest, PutTokenLogWritesEveryTurnAtOnce) {
  OpenStore();
  const SessionId id = SessionId::Random();
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6};
  const std::vector<int64_t> ends = {2, 3, 6};
  ASSERT_TRUE(store_->PutTokenLog(id, tokens, ends).ok());
  absl::StatusOr<std::vector<TokenRecord>> log = store_->ReadTokenLog(id);
  ASSERT_TRUE(log.ok()) << log.status();
  ASSERT_EQ(log->size(), 3u);
  EXPECT_EQ((*log)[0].tokens, std::vector<int32_t>({1, 2}));
  EXPECT_EQ((*log)[1].tokens, std::vector<int32_t>({3}));
  EXPECT_EQ((*log)[2].tokens, std::vector<int32_t>({4, 5, 6}));
  EXPECT_THAT(store_->PutTokenLog(id, tokens, ends),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("already has")));
  const SessionId other = SessionId::Random();
  const std::vector<int64_t> empty_turn = {2, 2, 6};
  EXPECT_THAT(store_->PutTokenLog(other, tokens, empty_turn),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("turn 1 ends at 2")));
  const std::vector<int64_t> short_log = {2, 3};
  EXPECT_THAT(store_->PutTokenLog(other, tokens, short_log),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not end")));
  absl::StatusOr<uint32_t> turns = store_->TokenLogTurns(other);
  ASSERT_TRUE(turns.ok());
  EXPECT_EQ(*turns, 0u);  // nothing of a refused log is written
}

// A group commit: each turn AppendTokens would refuse fails alone (a gap, different tokens, a
// second turn of one session); the rest, an idempotent retry included, are written.
TEST_F(ColdStoreTest, GroupCommitRefusesEachBadTurnAloneAndWritesTheRest) {
  OpenStore();
  const SessionId a = SessionId::Random(), b = SessionId::Random(), c = SessionId::Random();
  const std::vector<int32_t> t0 = {1, 2}, t1 = {3}, other = {9, 9};
  ASSERT_TRUE(store_->AppendTokens(b, 0, t0).ok());
  std::vector<ColdStore::TurnCommit> group = {
      {a, 0, t0, "a0"},     // new
      {b, 0, t0, "b0'"},    // an idempotent retry: only the metadata is written
      {c, 1, t1, "c1"},     // a gap: c has no turn 0
      {a, 1, t1, "a1"},     // a second turn of `a` in the same group
      {b, 0, other, "bx"},  // b's turn 0 with other tokens (after b's retry above)
  };
  std::vector<absl::Status> got = store_->CommitTurns(group);
  ASSERT_EQ(got.size(), group.size());
  EXPECT_TRUE(got[0].ok()) << got[0];
  EXPECT_TRUE(got[1].ok()) << got[1];
  EXPECT_THAT(got[2], StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("cannot append")));
  EXPECT_THAT(got[3], StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("two turns")));
  EXPECT_THAT(got[4], StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("two turns")));
  EXPECT_THAT(*store_->ReadTokenLog(a), ElementsAre(TokenRecord{0, t0}));
  EXPECT_THAT(*store_->ReadTokenLog(b), ElementsAre(TokenRecord{0, t0}));
  EXPECT_EQ(*store_->TokenLogTurns(c), 0u);
  EXPECT_EQ(*store_->GetMeta(a), "a0");
  EXPECT_EQ(*store_->GetMeta(b), "b0'");
  EXPECT_THAT(store_->GetMeta(c), StatusIs(absl::StatusCode::kNotFound, HasSubstr("metadata")));
  // Different tokens for a stored turn, alone in its group.
  std::vector<ColdStore::TurnCommit> conflict = {{b, 0, other, "bx"}};
  EXPECT_THAT(store_->CommitTurns(conflict)[0],
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("different tokens")));
  EXPECT_EQ(*store_->GetMeta(b), "b0'");
  EXPECT_TRUE(store_->CommitTurns({}).empty());
}

// Issue #14: a damaged block of one column family costs only the sessions whose keys it holds:
// every session is still listed (from the other families) and the others read as before.
TEST_F(ColdStoreTest, ADamagedTableBlockCostsOnlyItsSessions) {
  OpenStore();
  std::vector<SessionId> ids;
  for (int i = 0; i < 3; ++i) {
    ids.push_back(SessionId::Random());
    ASSERT_TRUE(store_->PutMeta(ids.back(), "{}").ok());
    ASSERT_TRUE(store_->AppendTokens(ids.back(), 0, std::vector<int32_t>{i, i + 1}).ok());
    ASSERT_TRUE(store_->Flush().ok());  // each session's keys in table files of their own
  }
  store_.reset();
  absl::StatusOr<std::vector<std::string>> files = testing::SstFilesOfFamily(Dir(), "tokens");
  ASSERT_TRUE(files.ok()) << files.status();
  ASSERT_EQ(files->size(), 3u);
  ASSERT_TRUE(testing::FlipByte((*files)[1], 5).ok());  // inside the first data block
  OpenStore();
  absl::StatusOr<std::vector<SessionId>> listed = store_->ListSessions();
  ASSERT_TRUE(listed.ok()) << listed.status();
  std::vector<SessionId> want = ids;
  std::sort(want.begin(), want.end());
  EXPECT_EQ(*listed, want);
  // Point lookups read only the files that hold their keys (bloom filters skip the others); a
  // range scan reads every level-0 file it overlaps, which is why a damaged store is salvaged
  // by point lookups (worker/engine/session_salvage.cc).
  EXPECT_THAT(store_->ReadTokenLogByKeys(ids[1]),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("turn 0")));
  for (int i : {0, 2}) {
    absl::StatusOr<std::vector<TokenRecord>> log = store_->ReadTokenLogByKeys(ids[i]);
    ASSERT_TRUE(log.ok()) << log.status();
    ASSERT_EQ(log->size(), 1u);
    EXPECT_EQ((*log)[0].tokens, std::vector<int32_t>({i, i + 1}));
  }
}

TEST_F(ColdStoreTest, CorruptedTokenRecordIsDataLossNamingSessionAndTurn) {
  OpenStore();
  SessionId s = SessionId::Random();
  for (uint32_t t = 0; t < 3; ++t) {
    ASSERT_TRUE(store_->AppendTokens(s, t, std::vector<int32_t>{1, 2, 3}).ok());
  }
  const std::string key = ColdStore::TokenLogKey(s, 1);
  std::string raw = *store_->RawGetForTest(ColdStore::Table::kTokens, key);
  raw[5] ^= 0x01;
  ASSERT_TRUE(store_->RawPutForTest(ColdStore::Table::kTokens, key, raw).ok());
  EXPECT_THAT(store_->ReadTokenLog(s),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr(s.ToHex() + " turn 1: checksum")));
  // A record moved under another turn's key fails too (the key is part of the checksum).
  std::string turn2 =
      *store_->RawGetForTest(ColdStore::Table::kTokens, ColdStore::TokenLogKey(s, 2));
  ASSERT_TRUE(store_->RawPutForTest(ColdStore::Table::kTokens, key, turn2).ok());
  EXPECT_THAT(store_->ReadTokenLog(s),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("turn 1: checksum")));
  // A truncated record, and a missing turn.
  ASSERT_TRUE(store_->RawPutForTest(ColdStore::Table::kTokens, key, raw.substr(0, 9)).ok());
  EXPECT_THAT(store_->ReadTokenLog(s), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("turn 1")));
  const std::string key5 = ColdStore::TokenLogKey(s, 5);
  ASSERT_TRUE(store_->TruncateTokenLog(s, 1).ok());
  ASSERT_TRUE(store_
                  ->RawPutForTest(ColdStore::Table::kTokens, key5,
                                  cold_internal::EncodeTokenRecord(key5, std::vector<int32_t>{1}))
                  .ok());
  EXPECT_THAT(store_->ReadTokenLog(s),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("turn 1 is missing")));
}

TEST_F(ColdStoreTest, MissingDirAndItsMissingParentsAreCreated) {
  absl::StatusOr<std::unique_ptr<ColdStore>> s = ColdStore::Open(root_ + "/new");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(std::filesystem::is_directory(root_ + "/new"));
  // As `mkdir -p`: README commands use --data-dir /tmp/rsd/... on a fresh machine.
  const std::string deep = root_ + "/missing/parent/db";
  absl::StatusOr<std::unique_ptr<ColdStore>> d = ColdStore::Open(deep);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(std::filesystem::is_directory(deep));
}

TEST_F(ColdStoreTest, FileWhereTheDirShouldBe) {
  const std::string file = root_ + "/a_file";
  std::FILE* f = std::fopen(file.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fclose(f);
  EXPECT_THAT(ColdStore::Open(file), StatusIs(absl::StatusCode::kFailedPrecondition,
                                              HasSubstr(file + " exists and is not a directory")));
  EXPECT_THAT(ColdStore::Open(file + "/db"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(file)));
}

TEST_F(ColdStoreTest, UnwritableDirIsPermissionDenied) {
  if (geteuid() == 0) {
    GTEST_SKIP() << "running as root: permission bits do not apply";
  }
  const std::string dir = root_ + "/locked";
  ASSERT_EQ(mkdir(dir.c_str(), 0500), 0);
  EXPECT_THAT(ColdStore::Open(dir), StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr(dir)));
  EXPECT_THAT(ColdStore::Open(dir + "/db"),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr(dir + "/db")));
  chmod(dir.c_str(), 0700);
}

TEST_F(ColdStoreTest, SecondOpenOfTheSameDirIsRefused) {
  OpenStore();
  EXPECT_THAT(ColdStore::Open(Dir()),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("already open")));
}

// Measured in the calling thread's CPU time (what PutBlock/GetBlock cost, whatever else shares
// the machine); wall time is printed alongside.
double ThreadCpuMicros() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

TEST_F(ColdStoreTest, HundredKilobyteBlockPutAndGetTakeWellUnderAMillisecond) {
  OpenStore();
  SessionId s = SessionId::Random();
  std::string value(100 * 1024, '\0');
  std::mt19937 rng(8);
  for (char& c : value) c = static_cast<char>(rng());
  constexpr int kN = 200;
  auto w0 = std::chrono::steady_clock::now();
  double c0 = ThreadCpuMicros();
  for (uint32_t i = 0; i < kN; ++i) ASSERT_TRUE(store_->PutBlock({s, 0, i}, value).ok());
  auto w1 = std::chrono::steady_clock::now();
  double c1 = ThreadCpuMicros();
  for (uint32_t i = 0; i < kN; ++i) ASSERT_EQ(store_->GetBlock({s, 0, i})->size(), value.size());
  auto w2 = std::chrono::steady_clock::now();
  double c2 = ThreadCpuMicros();
  const double put_us = (c1 - c0) / kN, get_us = (c2 - c1) / kN;
  std::printf(
      "100 KB block, mean of %d: put %.1f us CPU (%.1f us wall), get %.1f us CPU (%.1f us wall)\n",
      kN, put_us, std::chrono::duration<double, std::micro>(w1 - w0).count() / kN, get_us,
      std::chrono::duration<double, std::micro>(w2 - w1).count() / kN);
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "timings are not meaningful under the sanitizers";
#endif
  EXPECT_LT(put_us, 1000.0);
  EXPECT_LT(get_us, 1000.0);
}

}  // namespace
}  // namespace rsd
