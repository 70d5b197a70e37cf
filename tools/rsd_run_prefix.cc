// rsd-run prefix-bench: what prefix reuse (issue #15) saves. N sessions whose first turns share a
// long system prompt (about --bench-prompt-tokens tokens) and differ in the question run one after
// another through a session manager and a scheduler, as a worker runs them, once with reuse off
// and once on, in the same process: the time of each first turn that generates one token (its
// time to first token), the prompt tokens reused, the hot pool blocks held afterwards, and
// whether both runs generated the same tokens. Printed, not asserted. The reusing sessions share
// the prompt's hot blocks, so the pool holds them once.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "storage/common/clock.h"
#include "storage/common/status.h"
#include "tools/rsd_run.h"
#include "worker/engine/scheduler.h"
#include "worker/engine/session_manager.h"

ABSL_FLAG(int, bench_sessions, 16, "prefix-bench: sessions sharing the system prompt");

namespace rsd {
namespace {

// A system prompt of about `tokens` tokens: numbered rules, no two lines alike.
std::string SystemPrompt(int tokens) {
  std::string out = "You are a careful assistant. Follow these rules.\n";
  for (int i = 1; static_cast<int>(out.size()) < tokens * 4; ++i) {
    out += absl::StrCat("Rule ", i, ": answer question ", i * 7 % 13, " only after checking fact ",
                        i * 11 % 17, " twice.\n");
  }
  return out;
}

struct Run {
  std::vector<double> seconds;  // per session's first turn
  std::vector<int64_t> reused;
  std::vector<std::vector<int32_t>> tokens;
  int64_t prompt_tokens = 0;
  int64_t hot_blocks = 0, shared_blocks = 0;
  size_t block_bytes = 0;
};

absl::StatusOr<Run> RunSessions(bool reuse, int sessions, const std::string& system,
                                size_t pool_bytes) {
  RSD_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine,
                       MakeEngine(absl::GetFlag(FLAGS_threads), pool_bytes));
  SessionManagerOptions so;
  so.prefix_reuse = reuse;
  RSD_ASSIGN_OR_RETURN(std::unique_ptr<SessionManager> manager,
                       SessionManager::Create(engine.get(), so));
  SchedulerOptions o;
  o.own_thread = false;
  Scheduler scheduler(engine.get(), manager.get(), o);
  Run run;
  for (int i = 0; i < sessions; ++i) {
    const SessionId id = SessionId::Random();
    RSD_RETURN_IF_ERROR(manager->Create(id, {}));
    TurnSpec spec;
    spec.id = id;
    spec.input.context.push_back(ChatMessage{"system", system});
    spec.input.user_text = absl::StrCat("Which rule mentions fact ", i, "?");
    spec.params.max_tokens = 1;
    const double t0 = MonotonicSeconds();
    RSD_ASSIGN_OR_RETURN(TurnResult r, scheduler.RunTurn(spec));
    run.seconds.push_back(MonotonicSeconds() - t0);
    run.reused.push_back(r.reused_tokens);
    run.tokens.push_back(r.generation.tokens);
    run.prompt_tokens = r.generation.prompt_tokens;
  }
  run.hot_blocks = engine->pool().used();
  run.shared_blocks = engine->pool().shared();
  run.block_bytes = engine->pool().block_bytes();
  return run;
}

double MiB(int64_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

absl::Status PrefixBench() {
  const int sessions = std::max(2, absl::GetFlag(FLAGS_bench_sessions));
  const std::string system = SystemPrompt(absl::GetFlag(FLAGS_bench_prompt_tokens));
  // Room for every session's prompt in the hot pool (F16 K/V of SmolLM2: 23,040 B a token).
  const size_t pool = static_cast<size_t>(sessions) *
                      (static_cast<size_t>(absl::GetFlag(FLAGS_bench_prompt_tokens)) * 2 + 256) *
                      32768;
  RSD_ASSIGN_OR_RETURN(Run off, RunSessions(false, sessions, system, pool));
  RSD_ASSIGN_OR_RETURN(Run on, RunSessions(true, sessions, system, pool));
  const std::vector<double> off_rest(off.seconds.begin() + 1, off.seconds.end());
  const std::vector<double> on_rest(on.seconds.begin() + 1, on.seconds.end());
  const double off_ttft = Median(off_rest), on_ttft = Median(on_rest);
  std::printf(
      "%d sessions, first turns of %lld prompt tokens sharing a system prompt, %d thread(s):\n"
      "  reuse off: first session %.3f s, the others' TTFT p50 %.3f s\n"
      "  reuse on:  first session %.3f s, the others' TTFT p50 %.3f s (%lld prompt tokens "
      "reused each)\n"
      "  TTFT ratio off/on %.1fx; hot pool after: %lld blocks (%.1f MiB) off, %lld blocks "
      "(%.1f MiB) on, %lld of them shared by all (%.1fx less); same tokens: %s\n",
      sessions, static_cast<long long>(on.prompt_tokens), absl::GetFlag(FLAGS_threads),
      off.seconds[0], off_ttft, on.seconds[0], on_ttft, static_cast<long long>(on.reused[1]),
      on_ttft > 0 ? off_ttft / on_ttft : 0.0, static_cast<long long>(off.hot_blocks),
      MiB(off.hot_blocks * off.block_bytes), static_cast<long long>(on.hot_blocks),
      MiB(on.hot_blocks * on.block_bytes), static_cast<long long>(on.shared_blocks),
      on.hot_blocks > 0 ? static_cast<double>(off.hot_blocks) / on.hot_blocks : 0.0,
      off.tokens == on.tokens ? "yes" : "NO");
  if (off.tokens != on.tokens) {
    return absl::InternalError("prefix reuse changed a generated token");
  }
  return absl::OkStatus();
}

}  // namespace rsd
