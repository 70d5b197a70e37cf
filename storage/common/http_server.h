// The small HTTP server router and worker share for /metrics and /health (and the router's
// OpenAI routes): cpp-httplib on its own threads beside the gRPC server, Prometheus text
// exposition of prometheus-cpp registries. A separate library (rsd_http) so that storage itself
// links no HTTP code.
//
// Thread safety: routes are added before Start; handlers run on the server's threads.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"

namespace httplib {
class Server;
}

namespace rsd {

// The Prometheus text format (0.0.4) of everything `sources` collect, in order.
std::string RenderMetrics(const std::vector<std::shared_ptr<prometheus::Collectable>>& sources);

class ReloadingKeyPair;

class HttpServer {
 public:
  // Plain HTTP without `cert_path`; with it, HTTPS with that certificate chain and `key_path`
  // (checked beforehand with CheckTlsFiles; read again when they change, tls.h).
  explicit HttpServer(const std::string& cert_path = "", const std::string& key_path = "");
  ~HttpServer();  // Stop()

  // Where routes are added (before Start).
  httplib::Server& routes() { return *server_; }
  // GET /metrics: RenderMetrics(sources) after `refresh` (which may update gauges; may be null).
  void ServeMetrics(std::vector<std::shared_ptr<prometheus::Collectable>> sources,
                    std::function<void()> refresh);
  // GET /health: 200 "ok" while `unhealthy_reason()` is "", else 503 with the reason.
  void ServeHealth(std::function<std::string()> unhealthy_reason);

  // Binds `listen` ("host:port"; port 0 picks one) and serves on a thread. The bound port, or
  // UNAVAILABLE naming the address if it cannot be bound, INVALID_ARGUMENT if it has no port.
  absl::StatusOr<int> Start(const std::string& listen);
  void Stop();

 private:
  std::unique_ptr<ReloadingKeyPair> key_pair_;  // HTTPS only; outlives server_
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

}  // namespace rsd
