#include "storage/common/http_server.h"

#include <httplib.h>

#include <sstream>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "prometheus/text_serializer.h"
#include "storage/common/reloading_key_pair.h"

namespace rsd {

std::string RenderMetrics(const std::vector<std::shared_ptr<prometheus::Collectable>>& sources) {
  std::vector<prometheus::MetricFamily> families;
  for (const auto& s : sources) {
    std::vector<prometheus::MetricFamily> f = s->Collect();
    families.insert(families.end(), std::make_move_iterator(f.begin()),
                    std::make_move_iterator(f.end()));
  }
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

HttpServer::HttpServer(const std::string& cert_path, const std::string& key_path) {
  if (cert_path.empty()) {
    server_ = std::make_unique<httplib::Server>();
    return;
  }
  key_pair_ = std::make_unique<ReloadingKeyPair>(cert_path, key_path);
  server_ = std::make_unique<httplib::SSLServer>([pair = key_pair_.get()](SSL_CTX& ctx) {
    SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
    SSL_CTX_set_cert_cb(&ctx, &ReloadingKeyPair::CertCallback, pair);
    return true;
  });
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::ServeMetrics(std::vector<std::shared_ptr<prometheus::Collectable>> sources,
                              std::function<void()> refresh) {
  server_->Get("/metrics", [sources = std::move(sources), refresh = std::move(refresh)](
                               const httplib::Request&, httplib::Response& res) {
    if (refresh) refresh();
    res.set_content(RenderMetrics(sources), "text/plain; version=0.0.4; charset=utf-8");
  });
}

void HttpServer::ServeHealth(std::function<std::string()> unhealthy_reason) {
  server_->Get("/health", [reason = std::move(unhealthy_reason)](const httplib::Request&,
                                                                 httplib::Response& res) {
    const std::string why = reason ? reason() : std::string();
    if (why.empty()) {
      res.set_content("{\"status\":\"ok\"}", "application/json");
    } else {
      res.status = 503;
      res.set_content(absl::StrCat("{\"status\":\"unavailable\",\"reason\":\"", why, "\"}"),
                      "application/json");
    }
  });
}

absl::StatusOr<int> HttpServer::Start(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTP listen address '", listen, "' needs a port (host:port)"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty()) host = "0.0.0.0";
  const int bound =
      port == 0 ? server_->bind_to_any_port(host) : (server_->bind_to_port(host, port) ? port : -1);
  if (bound <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve HTTP on ", listen, " (address in use or invalid?)"));
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return bound;
}

void HttpServer::Stop() {
  if (!thread_.joinable()) return;
  server_->stop();
  thread_.join();
}

}  // namespace rsd
