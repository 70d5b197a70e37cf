// Transport security (issue #13): the servers' and clients' TLS from certificate files, reloaded
// without a restart when the files change.
//
//   servers  --tls-cert F --tls-key F [--tls-ca F]: TLS on the port; with a CA, client
//            certificates signed by it are verified (the router: requested, so that clients
//            without one still connect and workers prove their id; a worker: required, so only
//            the router and peer workers reach its Worker service).
//   clients  --tls-ca F [--tls-cert F --tls-key F]: the server is verified against the CA (its
//            certificate must name the host dialled, as a DNS or IP subject alternative name);
//            the client's own certificate is presented when given.
//
// gRPC reads the files through its file-watching certificate provider (checked every
// kTlsRefreshSeconds); the HTTP server checks their modification times on each handshake
// (http_server.h). A file that fails to parse after a change keeps the last good pair in use.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace grpc {
class ChannelCredentials;
class ServerContext;
class ServerCredentials;
}  // namespace grpc

namespace rsd {

inline constexpr unsigned kTlsRefreshSeconds = 5;

struct TlsFiles {
  std::string cert;                              // PEM certificate chain (leaf first)
  std::string key;                               // PEM private key
  std::string ca;                                // PEM CA bundle
  bool server() const { return !cert.empty(); }  // a server with these files serves TLS
  bool client() const { return !ca.empty(); }    // a client with these files dials TLS
};

// How a TLS server treats client certificates when it has a CA.
enum class ClientCerts { kRequest, kRequire };

// The files as given: cert and key together or neither, a server's CA only with its cert, each
// file readable PEM of the right kind, the key matching the certificate. INVALID_ARGUMENT naming
// the flag and file otherwise. `server`: the flags of a server (a CA alone is a client's).
absl::Status CheckTlsFiles(const TlsFiles& files, bool server);

// TLS server credentials from `files` (a server() set), insecure credentials otherwise.
std::shared_ptr<grpc::ServerCredentials> ServerCredentialsFor(const TlsFiles& files,
                                                              ClientCerts client_certs);
// TLS channel credentials from `files` (a client() set), insecure credentials otherwise.
std::shared_ptr<grpc::ChannelCredentials> ChannelCredentialsFor(const TlsFiles& files);

// The names a call's verified client certificate carries: its subject alternative names and
// common name (empty without a verified certificate).
std::vector<std::string> PeerNames(const grpc::ServerContext& ctx);

// Whether a certificate name matches `pattern`: the same name (ASCII case ignored, as DNS does),
// or, for a pattern "*.rest", one leftmost label (not empty, no dot) followed by ".rest" (RFC
// 6125's wildcard). "*" alone and wildcards elsewhere match nothing.
bool CertificateNameMatches(std::string_view name, std::string_view pattern);

// Limits a mutual-TLS server's callers to certificates carrying a name that matches one of
// `patterns` (a worker: the router's and the peer workers' names): any other caller, whatever
// signed its certificate, is refused with PERMISSION_DENIED naming its certificate's names and
// `who` before any handler runs. Applies to every service on ports opened with `creds` (from
// ServerCredentialsFor with a CA). No patterns: no limit beyond the CA.
void LimitCallers(grpc::ServerCredentials& creds, std::vector<std::string> patterns,
                  std::string who);

}  // namespace rsd
