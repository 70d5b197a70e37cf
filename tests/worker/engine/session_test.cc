// Multi-turn sessions with their state leaving the hot pool between turns (residual, kv or
// tokens), restored from the warm tier, the cold tier (RocksDB) or after a process restart on the
// same data dir: every generated token and every logit hash equals the never-spilled run's, also
// under a one-block hot budget within turns. Stored bytes are counted from the stored values.
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "storage/common/status.h"
#include "tests/support/synthetic_model.h"
#include "tests/support/test_util.h"
#include "tests/support/test_worker.h"
#include "worker/engine/session_manager.h"

namespace rsd {
namespace {

// Short turns: the synthetic models have a 256-token context and a byte-level vocabulary.
const std::vector<std::string> kScript = {"hi", "a cat story", "and then?", "why", "more", "bye"};

struct Turn {
  std::vector<int32_t> tokens;
  std::vector<uint64_t> hashes;
  std::string restored_from;
};

struct Harness {
  std::string model, dir;
  int budget_tokens = 0;
  std::string engine_form = "residual";
  std::string layer_forms;
  size_t warm_budget_bytes = SessionManagerOptions{}.warm_budget_bytes;
  std::unique_ptr<testing::TestWorker> worker;
  Engine* engine = nullptr;
  SessionManager* sessions = nullptr;

  void Start() {
    Stop();
    EngineOptions o;
    o.model_path = model;
    o.block_tokens = 4;
    o.hot_budget_tokens = budget_tokens;
    o.spill_form = engine_form;
    o.layer_forms = layer_forms;
    o.keep_residuals = true;
    o.poison_freed_blocks = true;
    SessionManagerOptions so;
    so.data_dir = dir;
    so.warm_budget_bytes = warm_budget_bytes;
    worker = std::make_unique<testing::TestWorker>(o, so);
    const absl::Status st = worker->Start();
    ASSERT_TRUE(st.ok()) << st;
    engine = &worker->engine();
    sessions = &worker->sessions();
  }
  void Stop() {
    worker.reset();
    engine = nullptr;
    sessions = nullptr;
  }
  // A turn through the scheduler, as a worker runs it.
  absl::StatusOr<TurnResult> Chat(const SessionId& id, const std::string& text,
                                  const GenerateParams& p) {
    return worker->Chat(id, text, p);
  }
};

GenerateParams ParamsForTurn(size_t turn) {
  GenerateParams p;
  p.max_tokens = 8;
  p.record_logit_hashes = true;
  if (turn % 2 == 1) {  // seeded sampling on odd turns
    p.sampling.temperature = 0.8f;
    p.sampling.top_k = 30;
    p.sampling.seed = 1000 + turn;
  }
  return p;
}

// Runs the script; after each turn the session spills in `form` and comes back from `where`.
std::vector<Turn> RunScript(Harness& h, SpillForm form, const std::string& where) {
  h.Start();
  std::vector<Turn> out;
  auto id = h.sessions->OpenOrCreate("s");
  EXPECT_TRUE(id.ok());
  for (size_t t = 0; t < kScript.size(); ++t) {
    auto r = h.Chat(*id, kScript[t], ParamsForTurn(t));
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return out;
    out.push_back(Turn{r->generation.tokens, r->generation.logit_hashes, r->restored_from});
    EXPECT_TRUE(h.sessions->Spill(*id, form).ok());
    // "restart": the warm tier is process memory, so it is lost; what was demoted to RocksDB
    // survives (a crash without demotion falls back to the token log, tested below).
    if (where != "warm") {
      EXPECT_TRUE(h.sessions->DemoteToCold(*id).ok());
    }
    if (where == "restart") {
      h.Start();  // a new engine and session manager on the same data dir
      auto again = h.sessions->OpenOrCreate("s");
      EXPECT_TRUE(again.ok());
      EXPECT_EQ(*again, *id) << "the restarted process finds the session";
    }
  }
  return out;
}

class Sessions : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* entry = testing::FindSyntheticModel("gqa");
    ASSERT_NE(entry, nullptr);
    testing::SyntheticModel model(entry->options);
    model_ = testing::MakeTempDir("rsd-sessions") + "/gqa.gguf";
    ASSERT_TRUE(model.WriteGguf(model_).ok());
  }
  std::string model_;
};

TEST_F(Sessions, SpilledAndRestoredTurnsAreBitIdentical) {
  Harness ref_h{model_, testing::MakeTempDir("rsd-sessions-ref")};
  const std::vector<Turn> ref = RunScript(ref_h, SpillForm::kNone, "hot");
  ASSERT_EQ(ref.size(), kScript.size());
  for (int budget : {0, 1}) {
    for (SpillForm form : {SpillForm::kResidual, SpillForm::kKv, SpillForm::kTokens}) {
      for (const char* where : {"warm", "cold", "restart"}) {
        SCOPED_TRACE(std::string(SpillFormName(form)) + " from " + where + " budget " +
                     std::to_string(budget));
        Harness h{model_, testing::MakeTempDir("rsd-sessions"), budget,
                  form == SpillForm::kKv ? "kv" : "residual"};
        const std::vector<Turn> got = RunScript(h, form, where);
        ASSERT_EQ(got.size(), ref.size());
        for (size_t t = 0; t < ref.size(); ++t) {
          EXPECT_EQ(got[t].tokens, ref[t].tokens) << "turn " << t;
          EXPECT_EQ(got[t].hashes, ref[t].hashes) << "turn " << t;
        }
        // Where turn 2 onwards was restored from.
        const std::string want = form == SpillForm::kTokens     ? "tokens"
                                 : std::string(where) == "warm" ? "warm"
                                                                : "cold";
        for (size_t t = 1; t < got.size(); ++t) EXPECT_EQ(got[t].restored_from, want) << t;
      }
    }
  }
}

TEST_F(Sessions, PerLayerFormsSpillAndRestoreBitIdentically) {
  Harness ref_h{model_, testing::MakeTempDir("rsd-sessions-ref")};
  const std::vector<Turn> ref = RunScript(ref_h, SpillForm::kNone, "hot");
  for (int budget : {0, 1}) {
    for (const char* where : {"warm", "restart"}) {
      SCOPED_TRACE(std::string("plan krk from ") + where + " budget " + std::to_string(budget));
      Harness h{model_, testing::MakeTempDir("rsd-sessions-auto"), budget, "residual", "krk"};
      const std::vector<Turn> got = RunScript(h, SpillForm::kAuto, where);
      ASSERT_EQ(got.size(), ref.size());
      for (size_t t = 0; t < ref.size(); ++t) {
        EXPECT_EQ(got[t].tokens, ref[t].tokens) << "turn " << t;
        EXPECT_EQ(got[t].hashes, ref[t].hashes) << "turn " << t;
        if (t > 0) {
          EXPECT_NE(got[t].restored_from, "tokens") << "turn " << t;
        }
      }
    }
  }
}

TEST_F(Sessions, StoredPayloadPerTokenEqualsTheByteTable) {
  for (SpillForm form : {SpillForm::kResidual, SpillForm::kKv}) {
    Harness h{model_, testing::MakeTempDir("rsd-sessions-bytes"), 0,
              form == SpillForm::kKv ? "kv" : "residual"};
    h.Start();
    auto id = h.sessions->OpenOrCreate("bytes");
    ASSERT_TRUE(id.ok());
    for (size_t t = 0; t < 3; ++t) ASSERT_TRUE(h.Chat(*id, kScript[t], ParamsForTurn(t)).ok());
    ASSERT_TRUE(h.sessions->Spill(*id, form).ok());
    auto stored = h.sessions->Stored(*id);
    ASSERT_TRUE(stored.ok()) << stored.status();
    ASSERT_GT(stored->tokens_covered, 0);
    const StateBytesPerToken table = h.engine->model().state_bytes_per_token();
    const int64_t want = form == SpillForm::kKv ? table.kv : table.residual;
    EXPECT_EQ(stored->payload / stored->tokens_covered, want);
    EXPECT_EQ(stored->payload % stored->tokens_covered, 0);
    std::printf(
        "[ bytes ] %s: %lld payload bytes for %lld tokens (%lld/token, table %lld), "
        "framing %lld, keys %lld, %lld blocks\n",
        SpillFormName(form), static_cast<long long>(stored->payload),
        static_cast<long long>(stored->tokens_covered),
        static_cast<long long>(stored->payload / stored->tokens_covered),
        static_cast<long long>(want), static_cast<long long>(stored->framing),
        static_cast<long long>(stored->keys), static_cast<long long>(stored->blocks));
  }
}

// A checkpoint block corrupted in RocksDB (one flipped bit) is caught by its checksum; the session
// comes back from its token log instead, still exact. Warm state lost in a crash: the same.
TEST_F(Sessions, CorruptOrLostCheckpointsFallBackToTheTokenLogExactly) {
  Harness ref_h{model_, testing::MakeTempDir("rsd-sessions-ref")};
  const std::vector<Turn> ref = RunScript(ref_h, SpillForm::kNone, "hot");
  for (const bool corrupt : {true, false}) {
    SCOPED_TRACE(corrupt ? "flipped bit in a cold block" : "warm tier lost in a crash");
    Harness h{model_, testing::MakeTempDir("rsd-sessions-faults")};
    h.Start();
    auto id = h.sessions->OpenOrCreate("f");
    ASSERT_TRUE(id.ok());
    for (size_t t = 0; t < 3; ++t) ASSERT_TRUE(h.Chat(*id, kScript[t], ParamsForTurn(t)).ok());
    ASSERT_TRUE(h.sessions->Spill(*id, SpillForm::kResidual).ok());
    if (corrupt) {
      ASSERT_TRUE(h.sessions->DemoteToCold(*id).ok());
    }
    h.Stop();
    if (corrupt) {
      auto cold = ColdStore::Open(h.dir);
      ASSERT_TRUE(cold.ok()) << cold.status();
      const BlockKey key{*id, 2, 1};
      auto raw = (*cold)->RawGetForTest(ColdStore::Table::kBlocks, key.Encode());
      ASSERT_TRUE(raw.ok()) << raw.status();
      std::string bad = *raw;
      bad[bad.size() / 2] ^= 0x10;
      ASSERT_TRUE((*cold)->RawPutForTest(ColdStore::Table::kBlocks, key.Encode(), bad).ok());
    }
    h.Start();
    auto again = h.sessions->OpenOrCreate("f");
    ASSERT_TRUE(again.ok());
    for (size_t t = 3; t < kScript.size(); ++t) {
      auto r = h.Chat(*again, kScript[t], ParamsForTurn(t));
      ASSERT_TRUE(r.ok()) << r.status();
      if (t == 3) {
        EXPECT_EQ(r->restored_from, "tokens");
      }
      EXPECT_EQ(r->generation.tokens, ref[t].tokens) << "turn " << t;
      EXPECT_EQ(r->generation.logit_hashes, ref[t].hashes) << "turn " << t;
    }
  }
}

// Three sessions take turns on an engine whose pool holds little more than one of them: idle
// sessions spill whole (least recently used first) to make room, and every session's output
// equals what it produces with a pool big enough for all.
TEST_F(Sessions, ACheckpointCorruptedMidSessionRebuildsFromTheTokenLogExactly) {
  // Reference: the script unbounded, never spilled.
  Harness ref_h{model_, testing::MakeTempDir("rsd-sessions-ref2")};
  const std::vector<Turn> ref = RunScript(ref_h, SpillForm::kNone, "hot");
  ASSERT_EQ(ref.size(), kScript.size());
  // A resident session at a two-block hot budget whose within-turn checkpoints all live in
  // RocksDB (a warm tier of 1 KiB): between turns one of them gets a flipped bit.
  Harness h{model_, testing::MakeTempDir("rsd-sessions-midcorrupt")};
  h.budget_tokens = 8;
  h.warm_budget_bytes = 1024;
  h.Start();
  ASSERT_NE(h.sessions, nullptr);
  SessionManager* m = h.sessions;
  auto id = m->OpenOrCreate("c");
  ASSERT_TRUE(id.ok());
  for (size_t t = 0; t < kScript.size(); ++t) {
    if (t == 2) {
      ColdStore* cold = m->cold_for_test();
      std::vector<std::pair<BlockKey, std::string>> blocks;
      ASSERT_TRUE(cold->ForEachBlock(*id,
                                     [&](const BlockKey& k, std::string_view v) {
                                       blocks.emplace_back(k, std::string(v));
                                       return absl::OkStatus();
                                     })
                      .ok());
      ASSERT_FALSE(blocks.empty()) << "no checkpoint reached RocksDB: the test proves nothing";
      auto [key, value] = blocks.front();  // chunk 0: evicted, read by every later step
      value[value.size() / 2] ^= 0x01;
      ASSERT_TRUE(cold->PutBlock(key, value).ok());
    }
    auto r = h.Chat(*id, kScript[t], ParamsForTurn(t));
    ASSERT_TRUE(r.ok()) << "turn " << t << ": " << r.status();
    EXPECT_EQ(r->generation.tokens, ref[t].tokens) << "turn " << t;
    EXPECT_EQ(r->generation.logit_hashes, ref[t].hashes) << "turn " << t;
    if (t == 2) {
      EXPECT_EQ(r->restored_from, "tokens") << "the corrupted session was not rebuilt";
    }
  }
}

TEST_F(Sessions, IdleSessionsSpillWhenThePoolIsFull) {
  auto run = [&](size_t pool_bytes, int* spills_seen) {
    EngineOptions o;
    o.model_path = model_;
    o.block_tokens = 4;
    o.kv_budget_bytes = pool_bytes;
    o.keep_residuals = true;
    SessionManagerOptions so;
    so.data_dir = testing::MakeTempDir("rsd-sessions-admission");
    testing::TestWorker w(o, so);
    std::vector<std::vector<int32_t>> out;
    const absl::Status started = w.Start();
    EXPECT_TRUE(started.ok()) << started;
    if (!started.ok()) return out;
    std::vector<SessionId> ids;
    for (const char* n : {"a", "b", "c"}) ids.push_back(*w.sessions().OpenOrCreate(n));
    out.resize(ids.size());
    for (size_t t = 0; t < kScript.size(); ++t) {
      for (size_t i = 0; i < ids.size(); ++i) {
        auto r = w.Chat(ids[i], kScript[(t + i) % kScript.size()], ParamsForTurn(t));
        EXPECT_TRUE(r.ok()) << r.status();
        if (!r.ok()) return out;
        if (r->restored_from != "hot" && r->restored_from != "new") ++*spills_seen;
        out[i].insert(out[i].end(), r->generation.tokens.begin(), r->generation.tokens.end());
      }
    }
    return out;
  };
  int big_spills = 0, small_spills = 0;
  const auto big = run(64ull << 20, &big_spills);
  const size_t block = 3 * 2 * 4 * 64 * kKvElementBytes;  // gqa: 3 layers, kv_dim 64, 4 tokens
  const auto small = run(70 * block, &small_spills);
  EXPECT_EQ(big_spills, 0);
  EXPECT_GT(small_spills, 0) << "the small pool never forced a spill: the test proves nothing";
  EXPECT_EQ(small, big);
}

// Undo removes the last committed turn: the next turn with the same message and seed reproduces
// it exactly (regenerate), also after a spill and a restart; and a full session is refused.
TEST_F(Sessions, UndoRegeneratesExactlyAndAFullSessionIsRefused) {
  for (const bool spill_and_restart : {false, true}) {
    Harness h{model_, testing::MakeTempDir("rsd-sessions-undo")};
    h.Start();
    auto id = h.sessions->OpenOrCreate("u");
    ASSERT_TRUE(id.ok());
    std::vector<std::vector<int32_t>> first;
    for (size_t t = 0; t < 3; ++t) {
      auto r = h.Chat(*id, kScript[t], ParamsForTurn(t));
      ASSERT_TRUE(r.ok());
      first.push_back(r->generation.tokens);
    }
    if (spill_and_restart) {
      ASSERT_TRUE(h.sessions->Spill(*id, SpillForm::kResidual).ok());
      ASSERT_TRUE(h.sessions->DemoteToCold(*id).ok());
      h.Start();
    }
    ASSERT_TRUE(h.sessions->Undo(*id).ok());
    auto info = h.sessions->Describe(*id);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->turns, 2u);
    auto again = h.Chat(*id, kScript[2], ParamsForTurn(2));
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->generation.tokens, first[2]);
  }
  // Undo of a session with no turn.
  Harness h{model_, testing::MakeTempDir("rsd-sessions-undo")};
  h.Start();
  auto id = h.sessions->OpenOrCreate("empty");
  EXPECT_THAT(h.sessions->Undo(*id), testing::StatusIs(absl::StatusCode::kFailedPrecondition,
                                                       ::testing::HasSubstr("no turn")));
  // Fill the 256-token context: the request that does not fit is INVALID_ARGUMENT with the
  // numbers; once nothing fits at all, FAILED_PRECONDITION.
  GenerateParams big;
  big.max_tokens = 300;
  EXPECT_THAT(h.Chat(*id, "hi", big),
              testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                ::testing::HasSubstr("exceeds the context length 256")));
  GenerateParams fill;
  fill.max_tokens = 200;
  fill.stop_at_eos = false;
  auto r = h.Chat(*id, "hi", fill);
  ASSERT_TRUE(r.ok()) << r.status();
  GenerateParams none;
  none.max_tokens = 0;  // appends the message, generates nothing
  EXPECT_THAT(h.Chat(*id, std::string(40, 'x'), none),
              testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                ::testing::HasSubstr("exceeds the context length")));
  absl::Status last = absl::OkStatus();
  for (int i = 0; i < 20 && last.ok(); ++i) last = h.Chat(*id, "", none).status();
  EXPECT_THAT(last, testing::StatusIs(absl::StatusCode::kFailedPrecondition,
                                      ::testing::HasSubstr("no room left")));
}

TEST_F(Sessions, MissingOrUnusableDataDirIsAClearError) {
  Harness h{model_, "/dev/null/rsd-data"};
  EngineOptions o;
  o.model_path = model_;
  auto e = Engine::Create(o);
  ASSERT_TRUE(e.ok());
  SessionManagerOptions so;
  so.data_dir = "/dev/null/rsd-data";
  EXPECT_THAT(
      SessionManager::Create(e->get(), so),
      testing::StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::HasSubstr("/dev/null")));
}

}  // namespace
}  // namespace rsd
