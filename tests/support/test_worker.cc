#include "tests/support/test_worker.h"

#include <span>
#include <utility>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace rsd::testing {

TestWorker::TestWorker(EngineOptions engine, SessionManagerOptions sessions,
                       SchedulerOptions scheduler)
    : engine_options_(std::move(engine)),
      session_options_(std::move(sessions)),
      scheduler_options_(scheduler) {
  scheduler_options_.own_thread = false;
}

TestWorker::~TestWorker() { Stop(); }

void TestWorker::Stop() {
  scheduler_.reset();
  sessions_.reset();  // before the engine it uses; closes the cold tier
  engine_.reset();
}

absl::Status TestWorker::Start() {
  Stop();
  absl::StatusOr<std::unique_ptr<Engine>> e = Engine::Create(engine_options_);
  if (!e.ok())
    return absl::Status(e.status().code(), absl::StrCat("engine: ", e.status().message()));
  engine_ = *std::move(e);
  absl::StatusOr<std::unique_ptr<SessionManager>> m =
      SessionManager::Create(engine_.get(), session_options_);
  if (!m.ok()) {
    return absl::Status(m.status().code(), absl::StrCat("sessions: ", m.status().message()));
  }
  sessions_ = *std::move(m);
  scheduler_ = std::make_unique<Scheduler>(engine_.get(), sessions_.get(), scheduler_options_);
  return absl::OkStatus();
}

namespace {

TurnSpec Spec(const SessionId& id, const std::string& user_text, const GenerateParams& params) {
  TurnSpec spec;
  spec.id = id;
  spec.input.user_text = user_text;
  spec.params = params;
  return spec;
}

}  // namespace

absl::StatusOr<TurnResult> TestWorker::Chat(const SessionId& id, const std::string& user_text,
                                            const GenerateParams& params) {
  return scheduler_->RunTurn(Spec(id, user_text, params));
}

absl::StatusOr<TurnResult> RunTurn(SessionManager& sessions, const SessionId& id,
                                   const std::string& user_text, const GenerateParams& params) {
  SchedulerOptions o;
  o.own_thread = false;
  Scheduler scheduler(&sessions.engine(), &sessions, o);
  return scheduler.RunTurn(Spec(id, user_text, params));
}

std::vector<float> AllPositionLogits(Engine& e, const std::vector<int32_t>& tokens) {
  const SessionId seq = e.CreateSequence();
  const Engine::Work w{seq, tokens, true};
  ForwardResult r;
  const absl::Status st = e.Step(std::span<const Engine::Work>(&w, 1), false, &r);
  e.DestroySequence(seq);
  EXPECT_TRUE(st.ok()) << st;
  return r.logits;
}

}  // namespace rsd::testing
