// What a worker process holds, without gRPC: an engine, its session manager and a caller-driven
// scheduler (the one turn driver), for tests that run turns in process. Restart() builds a new
// engine and session manager on the same data dir, as a restarted process would.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/engine/engine.h"
#include "worker/engine/scheduler.h"
#include "worker/engine/session_manager.h"

namespace rsd::testing {

class TestWorker {
 public:
  TestWorker(EngineOptions engine, SessionManagerOptions sessions, SchedulerOptions scheduler = {});
  ~TestWorker();

  // Starts it, or starts it again (the old engine, sessions and scheduler go first). The error
  // names what failed; a test asserts on it rather than aborting the binary.
  absl::Status Start();
  absl::Status Restart() { return Start(); }
  // Stops it (the data dir is free for another process or store).
  void Stop();

  Engine& engine() { return *engine_; }
  SessionManager& sessions() { return *sessions_; }
  Scheduler& scheduler() { return *scheduler_; }
  EngineOptions& engine_options() { return engine_options_; }
  SessionManagerOptions& session_options() { return session_options_; }

  // One turn through the scheduler on this thread (as a worker runs it): its retry and
  // make-room policies included. The committed turn or its error.
  absl::StatusOr<TurnResult> Chat(const SessionId& id, const std::string& user_text,
                                  const GenerateParams& params);

 private:
  EngineOptions engine_options_;
  SessionManagerOptions session_options_;
  SchedulerOptions scheduler_options_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<SessionManager> sessions_;
  std::unique_ptr<Scheduler> scheduler_;
};

// One turn through a caller-driven scheduler made for it over `sessions` (and its engine), for
// tests that hold an engine and a session manager of their own.
absl::StatusOr<TurnResult> RunTurn(SessionManager& sessions, const SessionId& id,
                                   const std::string& user_text, const GenerateParams& params);

// The logits of every position of `tokens`, one forward pass of a fresh sequence that is then
// destroyed (teacher forcing).
std::vector<float> AllPositionLogits(Engine& e, const std::vector<int32_t>& tokens);

}  // namespace rsd::testing
