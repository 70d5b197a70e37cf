#include "worker/service/worker_metrics.h"

#include "storage/common/metrics.h"

namespace rsd {
WorkerMetrics::WorkerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      queue_(prometheus::BuildHistogram()
                 .Name("rsd_worker_queue_seconds")
                 .Help("Time a turn waited for admission")
                 .Register(*registry_)
                 .Add({}, LatencyBuckets())),
      ttft_(prometheus::BuildHistogram()
                .Name("rsd_worker_time_to_first_token_seconds")
                .Help("Admission to first generated token (restore and prefill included)")
                .Register(*registry_)
                .Add({}, LatencyBuckets())),
      tpot_(prometheus::BuildHistogram()
                .Name("rsd_worker_time_per_output_token_seconds")
                .Help("A turn's decode time per generated token after the first")
                .Register(*registry_)
                .Add({}, LatencyBuckets())),
      restored_(prometheus::BuildCounter()
                    .Name("rsd_worker_turn_restores_total")
                    .Help("Committed turns by where their session's state came from")
                    .Register(*registry_)),
      prompt_tokens_(prometheus::BuildCounter()
                         .Name("rsd_worker_prompt_tokens_total")
                         .Help("Tokens committed turns appended before generation")
                         .Register(*registry_)
                         .Add({})),
      generation_tokens_(prometheus::BuildCounter()
                             .Name("rsd_worker_generation_tokens_total")
                             .Help("Tokens committed turns generated")
                             .Register(*registry_)
                             .Add({})) {}

void WorkerMetrics::Turn(const v1::TurnDone& done) {
  queue_.Observe(done.queue_seconds());
  ttft_.Observe(done.prefill_seconds());
  const int64_t n = done.usage().completion_tokens();
  if (n > 1) tpot_.Observe(done.decode_seconds() / static_cast<double>(n - 1));
  restored_.Add({{"source", done.restored_from().empty() ? "new" : done.restored_from()}})
      .Increment();
  prompt_tokens_.Increment(static_cast<double>(done.usage().prompt_tokens()));
  generation_tokens_.Increment(static_cast<double>(n));
}

void WorkerMetrics::CounterTo(const std::string& name, const std::string& help, double value) {
  LabelledCounterTo(name, help, {}, value);
}

void WorkerMetrics::LabelledCounterTo(const std::string& name, const std::string& help,
                                      const std::map<std::string, std::string>& labels,
                                      double value) {
  prometheus::Family<prometheus::Counter>*& f = counters_[name];
  if (f == nullptr) f = &prometheus::BuildCounter().Name(name).Help(help).Register(*registry_);
  prometheus::Counter& c = f->Add(labels);
  if (value > c.Value()) c.Increment(value - c.Value());
}

void WorkerMetrics::GaugeTo(const std::string& name, const std::string& help,
                            const std::map<std::string, std::string>& labels, double value) {
  prometheus::Family<prometheus::Gauge>*& f = gauges_[name];
  if (f == nullptr) f = &prometheus::BuildGauge().Name(name).Help(help).Register(*registry_);
  f->Add(labels).Set(value);
}

void WorkerMetrics::RefreshMoves(const std::map<std::string, SessionManager::MoveTotals>& moves) {
  for (const auto& [key, m] : moves) {
    const size_t slash = key.find('/');
    const std::map<std::string, std::string> labels = {
        {"op", key.substr(0, slash)},
        {"form", slash == std::string::npos ? "" : key.substr(slash + 1)}};
    LabelledCounterTo(
        "rsd_worker_state_moves_total",
        "Between-turn spills (by the form spilled to), restores (by source) and prefix reuses",
        labels, static_cast<double>(m.count));
    LabelledCounterTo(
        "rsd_worker_state_move_bytes_total",
        "Checkpoint bytes spills wrote, restores read (4 a token from the log) and reuses copied",
        labels, static_cast<double>(m.bytes));
    LabelledCounterTo("rsd_worker_state_move_seconds_total", "Time spills and restores took",
                      labels, m.seconds);
  }
}

void WorkerMetrics::Refresh(const v1::WorkerStatus& st,
                            const std::map<std::string, SessionManager::MoveTotals>& moves) {
  std::lock_guard<std::mutex> lock(mu_);
  RefreshMoves(moves);
  const v1::WorkerLoad& l = st.load();
  const v1::SchedulerCounters& c = st.counters();
  GaugeTo("rsd_worker_turns", "Turns waiting for admission and running in the batch",
          {{"state", "waiting"}}, l.queue_depth());
  GaugeTo("rsd_worker_turns", "", {{"state", "running"}}, l.running());
  GaugeTo("rsd_worker_queue_limit", "Turns that may wait before new ones are refused", {},
          l.queue_limit());
  GaugeTo("rsd_worker_sessions", "Sessions on this worker", {}, l.sessions());
  GaugeTo("rsd_worker_state_bytes", "State bytes by tier: used and capacity",
          {{"tier", "hot"}, {"kind", "used"}}, l.hot_bytes_total() - l.hot_bytes_free());
  GaugeTo("rsd_worker_state_bytes", "", {{"tier", "hot"}, {"kind", "capacity"}},
          l.hot_bytes_total());
  GaugeTo("rsd_worker_state_bytes", "", {{"tier", "hot"}, {"kind", "shared"}}, l.shared_bytes());
  GaugeTo("rsd_worker_state_bytes", "", {{"tier", "hot"}, {"kind", "saved"}}, l.saved_bytes());
  GaugeTo("rsd_worker_state_bytes", "", {{"tier", "warm"}, {"kind", "used"}},
          l.warm_bytes_total() - l.warm_bytes_free());
  GaugeTo("rsd_worker_state_bytes", "", {{"tier", "warm"}, {"kind", "capacity"}},
          l.warm_bytes_total());
  GaugeTo("rsd_worker_state_bytes", "", {{"tier", "cold"}, {"kind", "used"}}, l.cold_bytes());
  GaugeTo("rsd_worker_state_bytes", "", {{"tier", "cold"}, {"kind", "saved"}},
          l.cold_saved_bytes());
  GaugeTo("rsd_worker_device_memory_used_bytes", "Bytes the backend holds on its device", {},
          st.device().memory_used());
  // Only the rates the worker knows (0 in the status: not measured or configured).
  const char* rate_help = "Restore rate of each source form the worker measured, tokens per second";
  for (const auto& [form, rate] :
       {std::pair<const char*, double>{"tokens", st.rates().prefill_tokens_per_s()},
        {"residual", st.rates().residual_tokens_per_s()},
        {"kv", st.rates().kv_copy_tokens_per_s()}}) {
    if (rate > 0)
      GaugeTo("rsd_worker_rebuild_tokens_per_second", rate_help, {{"form", form}}, rate);
  }
  CounterTo("rsd_worker_steps_total", "Engine steps run", c.steps());
  CounterTo("rsd_worker_decode_rows_total",
            "Decode rows over all steps (rows per step: divide "
            "by rsd_worker_decode_steps_total)",
            c.decode_rows());
  CounterTo("rsd_worker_decode_steps_total", "Steps with at least one decode row",
            c.decode_steps());
  CounterTo("rsd_worker_prefill_tokens_total", "Prompt tokens computed", c.prefill_tokens());
  CounterTo("rsd_worker_turns_committed_total", "Turns committed", c.turns_committed());
  CounterTo("rsd_worker_commit_groups_total",
            "Group commits: one synced write of the turns that ended in one step (turns per "
            "fsync: divide rsd_worker_turns_committed_total by this)",
            c.commit_groups());
  CounterTo("rsd_worker_turns_cancelled_total", "Turns cancelled", c.turns_cancelled());
  CounterTo("rsd_worker_turns_failed_total", "Turns failed", c.turns_failed());
  CounterTo("rsd_worker_turns_refused_total", "Turns refused (queue full)", c.turns_refused());
  CounterTo("rsd_worker_spills_total", "Idle sessions spilled to make room", c.spills());
  CounterTo("rsd_worker_restores_total", "Sessions restored to the hot pool", c.restores());
  CounterTo("rsd_worker_paused_steps_total",
            "Session-steps skipped because a client's stream was full", c.paused_steps());
}

}  // namespace rsd
