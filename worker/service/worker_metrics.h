// The worker's Prometheus metrics (names in README "Metrics"): per-turn latencies recorded as
// turns commit, and the scheduler's counters and the tiers' bytes read from the worker's status
// at scrape time. Served at /metrics by main.cc.
//
// Thread safety: every method may run concurrently.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "rsd/v1/common.pb.h"
#include "rsd/v1/worker.pb.h"
#include "worker/engine/session_manager.h"

namespace rsd {

class WorkerMetrics {
 public:
  WorkerMetrics();
  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

  // A committed turn: queue wait, time to first token, time per output token, where its state
  // came from, tokens.
  void Turn(const v1::TurnDone& done);
  // Gauges and counters from the worker's status (WorkerService::Status) and its sessions' state
  // moves (SessionManager::StateMoves: "spill/<form>", "restore/<source>" or "reuse/prefix" ->
  // count, bytes, seconds).
  void Refresh(const v1::WorkerStatus& status,
               const std::map<std::string, SessionManager::MoveTotals>& moves);

 private:
  // Raises the counter `name` to `value` (counters only go up; the scheduler's totals do too).
  void CounterTo(const std::string& name, const std::string& help, double value);
  void RefreshMoves(const std::map<std::string, SessionManager::MoveTotals>& moves);  // mu_ held
  // The same for a labelled counter.
  void LabelledCounterTo(const std::string& name, const std::string& help,
                         const std::map<std::string, std::string>& labels, double value);
  void GaugeTo(const std::string& name, const std::string& help,
               const std::map<std::string, std::string>& labels, double value);

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Histogram& queue_;
  prometheus::Histogram& ttft_;
  prometheus::Histogram& tpot_;
  prometheus::Family<prometheus::Counter>& restored_;
  prometheus::Counter& prompt_tokens_;
  prometheus::Counter& generation_tokens_;
  std::mutex mu_;  // guards the maps below (families are created on first use)
  std::map<std::string, prometheus::Family<prometheus::Gauge>*> gauges_;
  std::map<std::string, prometheus::Family<prometheus::Counter>*> counters_;
};

}  // namespace rsd
