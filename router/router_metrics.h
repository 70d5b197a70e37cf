// The router's Prometheus metrics (names in README "Metrics", beside vLLM's). Recorded by the core
// (turns, moves) and the services (requests); the registry is served at /metrics by main.cc.
//
// Thread safety: every method may run concurrently (prometheus-cpp metrics are atomic).
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "storage/common/metrics.h"

namespace rsd::router {

class RouterMetrics {
 public:
  RouterMetrics();

  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

  // One client request: `api` "grpc" or "http", `method` e.g. "Chat" or "/v1/chat/completions",
  // its outcome and how long it took.
  void Request(const std::string& api, const std::string& method, absl::StatusCode code,
               double seconds);
  // A turn's first token after `seconds`, and `tokens` more tokens after a gap of `seconds`.
  void FirstToken(double seconds);
  void InterToken(double seconds, int tokens);
  // A turn ended: its end-to-end time, tokens, and outcome.
  void TurnEnded(absl::StatusCode code, double seconds, int64_t prompt_tokens,
                 int64_t completion_tokens);
  void TurnStarted();
  // A migration ("migrate", "drain") or failover ("failover") of one session.
  void Move(const std::string& kind, const std::string& route, bool ok, int64_t bytes,
            double seconds);
  // Workers by state and sessions by owner state, set at scrape time.
  // A new session placed: `prefix` "matched" (its first turn's prompt state was on the chosen
  // worker), "unmatched" (a first turn, no worker held its state) or "none" (no first turn).
  void Placed(const std::string& prefix);
  void SetWorkers(const std::string& state, double n);
  void SetSessions(const std::string& state, double n);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& request_seconds_;
  prometheus::Histogram& ttft_;
  prometheus::Histogram& itl_;
  prometheus::Histogram& e2e_;
  prometheus::Family<prometheus::Counter>& turns_;
  prometheus::Gauge& running_;
  prometheus::Counter& prompt_tokens_;
  prometheus::Counter& generation_tokens_;
  prometheus::Family<prometheus::Counter>& moves_;
  prometheus::Family<prometheus::Counter>& move_bytes_;
  prometheus::Family<prometheus::Histogram>& move_seconds_;
  prometheus::Family<prometheus::Counter>& placements_;
  prometheus::Family<prometheus::Gauge>& workers_;
  prometheus::Family<prometheus::Gauge>& sessions_;
};

}  // namespace rsd::router
