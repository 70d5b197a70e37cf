#include "router/router_metrics.h"

namespace rsd::router {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

namespace {

prometheus::Family<prometheus::Counter>& Counters(prometheus::Registry& r, const char* name,
                                                  const char* help) {
  return BuildCounter().Name(name).Help(help).Register(r);
}
prometheus::Family<prometheus::Histogram>& Histograms(prometheus::Registry& r, const char* name,
                                                      const char* help) {
  return BuildHistogram().Name(name).Help(help).Register(r);
}
prometheus::Family<prometheus::Gauge>& Gauges(prometheus::Registry& r, const char* name,
                                              const char* help) {
  return BuildGauge().Name(name).Help(help).Register(r);
}

}  // namespace

RouterMetrics::RouterMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      requests_(Counters(*registry_, "rsd_router_requests_total",
                         "Client requests by API, method and status code")),
      request_seconds_(Histograms(*registry_, "rsd_router_request_duration_seconds",
                                  "Client request duration by API and method")),
      ttft_(Histograms(*registry_, "rsd_router_time_to_first_token_seconds",
                       "Time from a turn's arrival to its first generated token")
                .Add({}, LatencyBuckets())),
      itl_(Histograms(*registry_, "rsd_router_inter_token_latency_seconds",
                      "Time between a turn's consecutive generated tokens")
               .Add({}, LatencyBuckets())),
      e2e_(Histograms(*registry_, "rsd_router_turn_duration_seconds",
                      "End-to-end time of a turn, arrival to commit")
               .Add({}, LatencyBuckets())),
      turns_(Counters(*registry_, "rsd_router_turns_total", "Turns by outcome (status code)")),
      running_(
          Gauges(*registry_, "rsd_router_turns_running", "Turns in progress through the router")
              .Add({})),
      prompt_tokens_(Counters(*registry_, "rsd_router_prompt_tokens_total",
                              "Tokens committed turns appended before generation")
                         .Add({})),
      generation_tokens_(Counters(*registry_, "rsd_router_generation_tokens_total",
                                  "Tokens committed turns generated")
                             .Add({})),
      moves_(Counters(*registry_, "rsd_router_session_moves_total",
                      "Session migrations, drains and failovers by kind, route and outcome")),
      move_bytes_(Counters(*registry_, "rsd_router_session_move_bytes_total",
                           "State bytes that moved sessions carried, by kind and route")),
      move_seconds_(Histograms(*registry_, "rsd_router_session_move_duration_seconds",
                               "Duration of a session's migration or failover, by kind")),
      placements_(Counters(*registry_, "rsd_router_placements_total",
                           "New sessions placed, by whether their first turn's prompt state was on "
                           "the chosen worker (matched, unmatched, none: no first turn)")),
      workers_(Gauges(*registry_, "rsd_router_workers", "Registered workers by state")),
      sessions_(Gauges(*registry_, "rsd_router_sessions",
                       "Sessions in the journal by their owner's state")) {}

void RouterMetrics::Request(const std::string& api, const std::string& method,
                            absl::StatusCode code, double seconds) {
  requests_.Add({{"api", api}, {"method", method}, {"code", absl::StatusCodeToString(code)}})
      .Increment();
  request_seconds_.Add({{"api", api}, {"method", method}}, LatencyBuckets()).Observe(seconds);
}

void RouterMetrics::FirstToken(double seconds) { ttft_.Observe(seconds); }

void RouterMetrics::InterToken(double seconds, int tokens) {
  for (int i = 0; i < tokens; ++i) itl_.Observe(seconds / tokens);
}

void RouterMetrics::TurnStarted() { running_.Increment(); }

void RouterMetrics::TurnEnded(absl::StatusCode code, double seconds, int64_t prompt_tokens,
                              int64_t completion_tokens) {
  running_.Decrement();
  turns_.Add({{"code", absl::StatusCodeToString(code)}}).Increment();
  if (code != absl::StatusCode::kOk) return;
  e2e_.Observe(seconds);
  prompt_tokens_.Increment(static_cast<double>(prompt_tokens));
  generation_tokens_.Increment(static_cast<double>(completion_tokens));
}

void RouterMetrics::Move(const std::string& kind, const std::string& route, bool ok, int64_t bytes,
                         double seconds) {
  moves_.Add({{"kind", kind}, {"route", route}, {"outcome", ok ? "ok" : "failed"}}).Increment();
  if (!ok) return;
  move_bytes_.Add({{"kind", kind}, {"route", route}}).Increment(static_cast<double>(bytes));
  move_seconds_.Add({{"kind", kind}}, LatencyBuckets()).Observe(seconds);
}

void RouterMetrics::Placed(const std::string& prefix) {
  placements_.Add({{"prefix", prefix}}).Increment();
}

void RouterMetrics::SetWorkers(const std::string& state, double n) {
  workers_.Add({{"state", state}}).Set(n);
}

void RouterMetrics::SetSessions(const std::string& state, double n) {
  sessions_.Add({{"state", state}}).Set(n);
}

}  // namespace rsd::router
