#include "storage/common/reloading_key_pair.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "storage/common/file_util.h"
#include "storage/common/log.h"

namespace rsd {
namespace {

std::string Stamp(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return "missing";
  return absl::StrCat(st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec, ":", st.st_size, ":", st.st_ino);
}

}  // namespace

ReloadingKeyPair::ReloadingKeyPair(std::string cert_path, std::string key_path)
    : cert_path_(std::move(cert_path)), key_path_(std::move(key_path)) {}

ReloadingKeyPair::~ReloadingKeyPair() {
  X509_free(leaf_);
  sk_X509_pop_free(chain_, X509_free);
  EVP_PKEY_free(key_);
}

absl::Status ReloadingKeyPair::LoadLocked() {
  absl::StatusOr<std::string> cert_text = ReadFileToString(cert_path_);
  absl::StatusOr<std::string> key_text = ReadFileToString(key_path_);
  if (!cert_text.ok() || !key_text.ok()) {
    return absl::NotFoundError(absl::StrCat("cannot read ", cert_path_, " or ", key_path_));
  }
  BIO* cert_bio = BIO_new_mem_buf(cert_text->data(), static_cast<int>(cert_text->size()));
  X509* leaf = PEM_read_bio_X509(cert_bio, nullptr, nullptr, nullptr);
  STACK_OF(X509)* chain = sk_X509_new_null();
  while (X509* extra = PEM_read_bio_X509(cert_bio, nullptr, nullptr, nullptr)) {
    sk_X509_push(chain, extra);
  }
  BIO_free(cert_bio);
  BIO* key_bio = BIO_new_mem_buf(key_text->data(), static_cast<int>(key_text->size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(key_bio, nullptr, nullptr, nullptr);
  BIO_free(key_bio);
  const bool ok = leaf != nullptr && key != nullptr && X509_check_private_key(leaf, key) == 1;
  ERR_clear_error();
  if (!ok) {
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    EVP_PKEY_free(key);
    return absl::InvalidArgumentError(absl::StrCat(cert_path_, " and ", key_path_,
                                                   " are not a matching PEM certificate and key"));
  }
  X509_free(leaf_);
  sk_X509_pop_free(chain_, X509_free);
  EVP_PKEY_free(key_);
  leaf_ = leaf;
  chain_ = chain;
  key_ = key;
  return absl::OkStatus();
}

void ReloadingKeyPair::RefreshLocked() {
  const std::string stamp = Stamp(cert_path_) + "|" + Stamp(key_path_);
  if (stamp == stamp_) return;
  stamp_ = stamp;
  const bool first = leaf_ == nullptr;
  if (absl::Status s = LoadLocked(); !s.ok()) {
    log::Warn(
        first ? "no TLS certificate for HTTP" : "TLS certificate not reloaded (kept the last)",
        {{"error", std::string(s.message())}});
  } else if (!first) {
    log::Info("TLS certificate reloaded", {{"cert", cert_path_}});
  }
}

bool ReloadingKeyPair::Use(SSL* ssl) {
  std::lock_guard<std::mutex> lock(mu_);
  RefreshLocked();
  if (leaf_ == nullptr) return false;
  return SSL_use_certificate(ssl, leaf_) == 1 && SSL_use_PrivateKey(ssl, key_) == 1 &&
         SSL_set1_chain(ssl, chain_) == 1;
}

int ReloadingKeyPair::CertCallback(SSL* ssl, void* arg) {
  return static_cast<ReloadingKeyPair*>(arg)->Use(ssl) ? 1 : 0;
}

}  // namespace rsd
