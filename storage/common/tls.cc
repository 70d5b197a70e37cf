#include "storage/common/tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/auth_metadata_processor.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "storage/common/file_util.h"

namespace rsd {
namespace {

using BioPtr = std::unique_ptr<BIO, decltype(&BIO_free)>;
using X509Ptr = std::unique_ptr<X509, decltype(&X509_free)>;
using KeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;

absl::Status Bad(const std::string& flag, const std::string& path, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": ", why));
}

absl::StatusOr<std::string> Read(const std::string& flag, const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return Bad(flag, path, "cannot read it");
  return text;
}

BioPtr Bio(const std::string& text) {
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())), &BIO_free);
}

absl::StatusOr<X509Ptr> FirstCert(const std::string& flag, const std::string& path) {
  absl::StatusOr<std::string> text = Read(flag, path);
  if (!text.ok()) return text.status();
  BioPtr bio = Bio(*text);
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr), &X509_free);
  ERR_clear_error();
  if (cert == nullptr) return Bad(flag, path, "holds no PEM certificate");
  return cert;
}

std::shared_ptr<grpc::experimental::FileWatcherCertificateProvider> Provider(
    const TlsFiles& files) {
  return std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      files.key, files.cert, files.ca, kTlsRefreshSeconds);
}

}  // namespace

absl::Status CheckTlsFiles(const TlsFiles& files, bool server) {
  if (files.cert.empty() != files.key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (server && !files.ca.empty() && files.cert.empty()) {
    return absl::InvalidArgumentError("--tls-ca on a server needs --tls-cert and --tls-key");
  }
  if (!files.ca.empty()) {
    absl::StatusOr<X509Ptr> ca = FirstCert("--tls-ca", files.ca);
    if (!ca.ok()) return ca.status();
  }
  if (files.cert.empty()) return absl::OkStatus();
  absl::StatusOr<X509Ptr> cert = FirstCert("--tls-cert", files.cert);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key_text = Read("--tls-key", files.key);
  if (!key_text.ok()) return key_text.status();
  BioPtr bio = Bio(*key_text);
  KeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr), &EVP_PKEY_free);
  ERR_clear_error();
  if (key == nullptr) return Bad("--tls-key", files.key, "holds no PEM private key");
  if (X509_check_private_key(cert->get(), key.get()) != 1) {
    ERR_clear_error();
    return Bad("--tls-key", files.key, absl::StrCat("does not match --tls-cert ", files.cert));
  }
  return absl::OkStatus();
}

std::shared_ptr<grpc::ServerCredentials> ServerCredentialsFor(const TlsFiles& files,
                                                              ClientCerts client_certs) {
  if (!files.server()) return grpc::InsecureServerCredentials();
  grpc::experimental::TlsServerCredentialsOptions options(Provider(files));
  options.watch_identity_key_cert_pairs();
  if (files.ca.empty()) {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    options.watch_root_certs();
    options.set_cert_request_type(client_certs == ClientCerts::kRequire
                                      ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                      : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

std::shared_ptr<grpc::ChannelCredentials> ChannelCredentialsFor(const TlsFiles& files) {
  if (!files.client()) return grpc::InsecureChannelCredentials();
  grpc::experimental::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(Provider(files));
  options.watch_root_certs();
  if (!files.cert.empty()) options.watch_identity_key_cert_pairs();
  return grpc::experimental::TlsCredentials(options);
}

namespace {

// The subject alternative names and common name of the peer certificate an auth context holds.
std::vector<std::string> CertificateNames(const grpc::AuthContext& auth) {
  std::vector<std::string> out;
  for (const char* property : {"x509_subject_alternative_name", "x509_common_name"}) {
    for (const grpc::string_ref& v : auth.FindPropertyValues(property)) {
      out.emplace_back(v.data(), v.size());
    }
  }
  return out;
}

}  // namespace

std::vector<std::string> PeerNames(const grpc::ServerContext& ctx) {
  const std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
  if (auth == nullptr || !auth->IsPeerAuthenticated()) return {};
  return CertificateNames(*auth);
}

bool CertificateNameMatches(std::string_view name_in, std::string_view pattern_in) {
  // Debian's Abseil has its own string_view.
  const absl::string_view name(name_in.data(), name_in.size());
  const absl::string_view pattern(pattern_in.data(), pattern_in.size());
  if (name.empty() || pattern.empty()) return false;
  if (absl::EqualsIgnoreCase(name, pattern)) return true;
  if (pattern.size() < 3 || pattern.substr(0, 2) != "*.") return false;
  const absl::string_view rest = pattern.substr(1);  // ".rest"
  if (name.size() <= rest.size() || !absl::EndsWithIgnoreCase(name, rest)) return false;
  const absl::string_view label = name.substr(0, name.size() - rest.size());
  return label.find('.') == absl::string_view::npos && label.find('*') == absl::string_view::npos;
}

namespace {

// Runs for every call on the port, before its handler: the peer's certificate names against the
// patterns.
class CallerLimit final : public grpc::AuthMetadataProcessor {
 public:
  CallerLimit(std::vector<std::string> patterns, std::string who)
      : patterns_(std::move(patterns)), who_(std::move(who)) {}
  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata&, grpc::AuthContext* context, OutputMetadata*,
                       OutputMetadata*) override {
    const std::vector<std::string> names = CertificateNames(*context);
    for (const std::string& name : names) {
      for (const std::string& pattern : patterns_) {
        if (CertificateNameMatches(name, pattern)) return grpc::Status::OK;
      }
    }
    std::string shown = absl::StrJoin(names, ", ");
    if (shown.size() > 256) shown = shown.substr(0, 256) + "...";
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrCat(who_, ": a certificate naming [", shown,
                                     "] is not one of the callers allowed (--tls-peers)"));
  }

 private:
  const std::vector<std::string> patterns_;
  const std::string who_;
};

}  // namespace

void LimitCallers(grpc::ServerCredentials& creds, std::vector<std::string> patterns,
                  std::string who) {
  if (patterns.empty()) return;
  creds.SetAuthMetadataProcessor(
      std::make_shared<CallerLimit>(std::move(patterns), std::move(who)));
}

}  // namespace rsd
