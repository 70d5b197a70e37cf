// A session's exact state moving between two workers' session managers (separate engines and data
// dirs, same model): after the move, every token and per-step logit hash of the following turns
// equals the run that never moved, for each form; the payload per token of each form equals the
// bytes-per-token table; and imports that must not happen (another model, a flipped bit, a missing
// block, an older epoch) are refused, leaving nothing behind.
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/common/status.h"
#include "tests/support/synthetic_model.h"
#include "tests/support/test_util.h"
#include "tests/support/test_worker.h"
#include "worker/engine/session_manager.h"

namespace rsd {
namespace {

using ::testing::HasSubstr;

const std::vector<std::string> kScript = {"hi", "a cat story", "and then?", "why", "more", "bye"};

GenerateParams ParamsForTurn(size_t turn) {
  GenerateParams p;
  p.max_tokens = 8;
  p.record_logit_hashes = true;
  if (turn % 2 == 1) {
    p.sampling.temperature = 0.8f;
    p.sampling.top_k = 30;
    p.sampling.seed = 1000 + turn;
  }
  return p;
}

struct Worker {
  std::unique_ptr<Engine> engine;
  std::unique_ptr<SessionManager> sessions;
};

Worker MakeWorker(const std::string& model, int block_tokens = 4) {
  EngineOptions o;
  o.model_path = model;
  o.block_tokens = block_tokens;
  o.keep_residuals = true;
  o.poison_freed_blocks = true;
  o.spill_form = "residual";  // residuals captured: every form can be exported
  auto e = Engine::Create(o);
  testing::OkOrFail(e.status(), "Engine::Create");
  Worker w;
  w.engine = std::move(e).value();
  SessionManagerOptions so;
  so.data_dir = testing::MakeTempDir("rsd-migrate");
  auto m = SessionManager::Create(w.engine.get(), so);
  testing::OkOrFail(m.status(), "SessionManager::Create");
  w.sessions = std::move(m).value();
  return w;
}

struct TurnOut {
  std::vector<int32_t> tokens;
  std::vector<uint64_t> hashes;
};

TurnOut RunTurn(SessionManager& m, const SessionId& id, size_t t) {
  auto r = testing::RunTurn(m, id, kScript[t], ParamsForTurn(t));
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return {};
  return {r->generation.tokens, r->generation.logit_hashes};
}

class Migration : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name : {"gqa", "mha"}) {
      const auto* entry = testing::FindSyntheticModel(name);
      ASSERT_NE(entry, nullptr);
      testing::SyntheticModel model(entry->options);
      const std::string path = testing::MakeTempDir("rsd-migrate-model") + "/" + name + ".gguf";
      ASSERT_TRUE(model.WriteGguf(path).ok());
      models_[name] = path;
    }
    Worker ref = MakeWorker(models_["gqa"]);
    const SessionId id = SessionId::Random();
    ASSERT_TRUE(ref.sessions->Create(id, {}).ok());
    for (size_t t = 0; t < kScript.size(); ++t) reference_.push_back(RunTurn(*ref.sessions, id, t));
  }
  std::map<std::string, std::string> models_;
  std::vector<TurnOut> reference_;
};

TEST_F(Migration, EveryFormContinuesBitIdenticallyOnTheTarget) {
  for (SpillForm form :
       {SpillForm::kResidual, SpillForm::kKv, SpillForm::kAuto, SpillForm::kTokens}) {
    SCOPED_TRACE(SpillFormName(form));
    Worker source = MakeWorker(models_["gqa"]), target = MakeWorker(models_["gqa"]);
    const SessionId id = SessionId::Random();
    SessionAttrs attrs;
    attrs.epoch = 1;
    ASSERT_TRUE(source.sessions->Create(id, attrs).ok());
    constexpr size_t kMoveAfter = 3;
    for (size_t t = 0; t < kMoveAfter; ++t) {
      TurnOut o = RunTurn(*source.sessions, id, t);
      EXPECT_EQ(o.tokens, reference_[t].tokens);
    }
    auto state = source.sessions->ExportState(id, form);
    ASSERT_TRUE(state.ok()) << state.status();
    SessionState moved = *state;
    moved.attrs.epoch = 2;
    auto report = target.sessions->ImportState(moved);
    ASSERT_TRUE(report.ok()) << report.status();
    // Payload per token covered equals `info`'s bytes per token of the form, per layer plan.
    const auto& cfg = source.engine->config();
    const int64_t kvd = source.engine->model().kv_dim();
    int64_t per_token = 0;
    for (char f : state->plan.ToString())
      per_token += f == 'k' ? 2 * kvd * 2 : cfg.d_model * 4;  // F16 K/V, F32 residuals
    if (!state->plan.ToString().empty() && state->plan.ToString()[0] == 'r')
      per_token -= cfg.d_model * 4;
    if (form == SpillForm::kTokens) {
      EXPECT_EQ(report->blocks, 0);
      EXPECT_EQ(report->form, SpillForm::kTokens);
    } else {
      const int64_t covered = static_cast<int64_t>(state->n_chunks) * state->block_tokens;
      ASSERT_GT(covered, 0);
      EXPECT_EQ(report->payload_bytes, per_token * covered);
      const StateBytesPerToken table = source.engine->model().state_bytes_per_token();
      if (form == SpillForm::kKv) {
        EXPECT_EQ(per_token, table.kv);
      }
      if (form == SpillForm::kResidual) {
        EXPECT_EQ(per_token, table.residual);
      }
      std::printf(
          "%s: %lld blocks, payload %lld B (%lld B/token over %lld tokens), framing %lld B\n",
          SpillFormName(form), static_cast<long long>(report->blocks),
          static_cast<long long>(report->payload_bytes), static_cast<long long>(per_token),
          static_cast<long long>(covered), static_cast<long long>(report->framing_bytes));
    }
    for (size_t t = kMoveAfter; t < kScript.size(); ++t) {
      TurnOut o = RunTurn(*target.sessions, id, t);
      EXPECT_EQ(o.tokens, reference_[t].tokens) << "turn " << t;
      EXPECT_EQ(o.hashes, reference_[t].hashes) << "turn " << t;
    }
    auto info = target.sessions->Describe(id);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->attrs.epoch, 2u);
    EXPECT_EQ(info->turns, kScript.size());
  }
}

TEST_F(Migration, RefusedImportsLeaveNothingBehind) {
  Worker source = MakeWorker(models_["gqa"]);
  const SessionId id = SessionId::Random();
  SessionAttrs attrs;
  attrs.epoch = 1;
  ASSERT_TRUE(source.sessions->Create(id, attrs).ok());
  for (size_t t = 0; t < 3; ++t) RunTurn(*source.sessions, id, t);
  auto state = source.sessions->ExportState(id, SpillForm::kKv);
  ASSERT_TRUE(state.ok());
  ASSERT_GT(state->blocks.size(), 2u);
  state->attrs.epoch = 2;

  Worker other_model = MakeWorker(models_["mha"]);
  EXPECT_THAT(other_model.sessions->ImportState(*state).status(),
              testing::StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("model")));
  EXPECT_FALSE(other_model.sessions->Contains(id));

  Worker target = MakeWorker(models_["gqa"]);
  SessionState flipped = *state;
  flipped.blocks[1].value[flipped.blocks[1].value.size() / 2] ^= 0x10;
  EXPECT_THAT(target.sessions->ImportState(flipped).status(),
              testing::StatusIs(absl::StatusCode::kDataLoss, HasSubstr("layer")));
  SessionState truncated = *state;
  truncated.blocks.pop_back();
  EXPECT_THAT(target.sessions->ImportState(truncated).status(),
              testing::StatusIs(absl::StatusCode::kDataLoss, HasSubstr("lacks")));
  SessionState cut = *state;
  cut.blocks[0].value.resize(cut.blocks[0].value.size() - 7);
  EXPECT_THAT(target.sessions->ImportState(cut).status(),
              testing::StatusIs(absl::StatusCode::kDataLoss, HasSubstr("layer")));
  SessionState bad_token = *state;
  bad_token.tokens[1] = 1 << 30;
  EXPECT_THAT(target.sessions->ImportState(bad_token).status(),
              testing::StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("vocabulary")));
  EXPECT_FALSE(target.sessions->Contains(id));
  auto cold = target.sessions->ColdBytes(id);
  ASSERT_TRUE(cold.ok());
  EXPECT_EQ(*cold, 0);

  // The source still serves the session, exactly.
  TurnOut o = RunTurn(*source.sessions, id, 3);
  EXPECT_EQ(o.tokens, reference_[3].tokens);

  // A good import, then the same epoch again (or an older one) is refused.
  ASSERT_TRUE(target.sessions->ImportState(*state).ok());
  EXPECT_THAT(target.sessions->ImportState(*state).status(),
              testing::StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("epoch")));
}

TEST_F(Migration, AnotherNumericsFingerprintRebuildsFromTokensAndSaysSo) {
  Worker source = MakeWorker(models_["gqa"]);
  Worker target = MakeWorker(models_["gqa"], /*block_tokens=*/8);
  ASSERT_NE(source.engine->numerics_fingerprint(), target.engine->numerics_fingerprint());
  const SessionId id = SessionId::Random();
  ASSERT_TRUE(source.sessions->Create(id, {}).ok());
  for (size_t t = 0; t < 3; ++t) RunTurn(*source.sessions, id, t);
  auto state = source.sessions->ExportState(id, SpillForm::kResidual);
  ASSERT_TRUE(state.ok());
  state->attrs.epoch = 1;
  auto report = target.sessions->ImportState(*state);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->form, SpillForm::kTokens);
  EXPECT_THAT(report->note, HasSubstr("token log"));
  auto r = testing::RunTurn(*target.sessions, id, kScript[3], ParamsForTurn(3));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->restored_from, "tokens");
}

}  // namespace
}  // namespace rsd
